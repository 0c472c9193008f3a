"""``aigc-code eval run``: generate completions, execute them in the sandbox, score, report.

Generation (the model, in this process) and execution (the sandbox worker pool) overlap: each
sample is submitted to the pool as soon as it is generated. Every result is appended to
``DIR/samples.jsonl`` when known (store.py), and a re-run with the same ``--out`` only does
what is missing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aigc_code.errors import AigcCodeError
from aigc_code.eval import report as report_mod
from aigc_code.eval.executors import Executor, Outcome, make_executor
from aigc_code.eval.generation import BATCH, generate, syntax_ok
from aigc_code.eval.problems import LANGUAGES, Problem, load_benchmark, normalize_language
from aigc_code.eval.store import RETRYABLE, SampleStore
from aigc_code.eval.pool import WorkerError, WorkerPool
from aigc_code.eval.toolchains import default_cache_dir


_ENGINES: dict = {}


class EvalError(AigcCodeError):
    """A user-correctable problem with an evaluation run (bad option, mismatched --out, ...)."""


@dataclass
class RunConfig:
    benchmark: str = "humaneval-x"
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    model: str | None = None
    adapter: str | None = None
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    workers: int = 2
    limit: int | None = None
    reference: bool = False
    timeout: float | None = None  # per-run timeout override (seconds)

    # Settings that change what a sample *is*: a resumed run must agree on them.
    IDENTITY = ("benchmark", "model", "adapter", "temperature", "top_p", "max_new_tokens", "seed", "reference")

    def validate(self) -> None:
        if self.samples < 1:
            raise EvalError("--samples must be at least 1")
        if self.workers < 1:
            raise EvalError("--workers must be at least 1")
        if self.temperature < 0:
            raise EvalError("--temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise EvalError("--top-p must be in (0, 1]")
        if self.limit is not None and self.limit < 1:
            raise EvalError("--limit must be at least 1")
        if self.max_new_tokens < 1:
            raise EvalError("--max-new-tokens must be at least 1")
        if self.timeout is not None and self.timeout <= 0:
            raise EvalError("--timeout must be positive")
        if not self.languages:
            raise EvalError("no languages given")
        try:
            self.languages = list(dict.fromkeys(normalize_language(x) for x in self.languages))
        except ValueError as e:
            raise EvalError(str(e)) from None
        if self.model is not None:
            self.model = str(Path(self.model).expanduser().resolve()) if Path(self.model).expanduser().exists() \
                else self.model
        if self.adapter is not None:
            self.adapter = str(Path(self.adapter).expanduser().resolve()) if Path(self.adapter).expanduser().exists() \
                else self.adapter
        if self.benchmark.lower() not in ("humaneval-x", "humanevalx", "humaneval_x"):
            path = Path(self.benchmark).expanduser()
            if not path.is_file():
                raise EvalError(f"--benchmark: no such file {self.benchmark!r} (use 'humaneval-x' or a JSONL path)")
            self.benchmark = str(path.resolve())


def _check_resume(out: Path, cfg: RunConfig) -> None:
    path = out / "run.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as e:
        raise EvalError(f"{path} is unreadable ({e}); choose another --out") from None
    diffs = [f"{k}: {old.get(k)!r} before, {getattr(cfg, k)!r} now" for k in RunConfig.IDENTITY
             if old.get(k) != getattr(cfg, k)]
    if diffs:
        raise EvalError(f"{out} already holds a run with different settings ({'; '.join(diffs)}). "
                        "Use another --out, or the same settings to resume it.")


def _write_run_json(out: Path, cfg: RunConfig, isolation: dict | None, elapsed_s: float | None = None) -> None:
    path = out / "run.json"
    data = {"config": {k: v for k, v in asdict(cfg).items()}, "sandbox": isolation,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "last_run_elapsed_s": elapsed_s}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class _Progress:
    """rich progress bars (plain log lines when quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
        self.tasks = {}
        self.lock = threading.Lock()

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def add(self, name: str, total: int) -> None:
        if self.progress:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")

    def advance(self, name: str, info: str = "") -> None:
        if self.progress and name in self.tasks:
            self.progress.update(self.tasks[name], advance=1, info=info)

    def log(self, msg: str) -> None:
        if self.progress:
            self.progress.console.print(msg)
        else:
            print(msg, flush=True)


def run_eval(cfg: RunConfig, out: str | Path, *, progress: bool = True, cache_dir: Path | None = None,
             log=None) -> dict:
    """Run (or resume) an evaluation into ``out``; returns the report dict."""
    cfg.validate()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, cfg)
    try:
        by_lang = load_benchmark(cfg.benchmark, cfg.languages)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if cfg.limit:
        by_lang = {lang: probs[: cfg.limit] for lang, probs in by_lang.items()}
    if not any(by_lang.values()):
        raise EvalError(f"the benchmark has no problems in {', '.join(cfg.languages)}")
    if cfg.reference:
        for lang, probs in by_lang.items():
            lacking = [p.task_id for p in probs if p.canonical_solution is None]
            if lacking:
                raise EvalError(f"--reference needs canonical_solution; missing for {lang} {lacking[:3]}")

    started = time.monotonic()
    store = SampleStore(out / "samples.jsonl")
    ui = _Progress(progress)
    say = log or ui.log
    if store.repaired:
        say(f"resume: cut a torn last line off {store.path}")
    cache_dir = Path(cache_dir or default_cache_dir())
    executors: dict[str, Executor] = {}
    for lang in by_lang:
        ex = make_executor(lang, cache_dir, cfg.timeout, log=say)
        executors[lang] = ex
        if ex.tc.missing:
            say(f"[yellow]{lang}: skipped: toolchain missing: {ex.tc.missing}[/yellow]" if progress
                else f"{lang}: skipped: toolchain missing: {ex.tc.missing}")

    n = 1 if cfg.reference else cfg.samples
    todo_gen: list[tuple[Problem, list[int]]] = []
    todo_exec: list[tuple[Problem, int]] = []
    for lang, probs in by_lang.items():
        for p in probs:
            missing = [i for i in range(n) if (lang, p.task_id, i) not in store.generations]
            if missing:
                todo_gen.append((p, missing))
            for i in range(n):
                key = (lang, p.task_id, i)
                if key in store.generations and (key not in store.executions or (
                        store.executions[key]["status"] in RETRYABLE and not executors[lang].tc.missing)):
                    todo_exec.append((p, i))
    n_gen = sum(len(m) for _, m in todo_gen)
    n_exec = len(todo_exec) + n_gen
    done = sum(len(probs) for probs in by_lang.values()) * n - n_exec
    if done:
        say(f"resume: {done} samples already done in {out}, {n_exec} to go")

    engine = None
    if n_gen and not cfg.reference:
        engine = _ENGINES.get((cfg.model, cfg.adapter))
        if engine is None:
            from aigc_code.engine import load_engine

            say(f"loading model {cfg.model or '(embedded default)'}"
                + (f" + adapter {cfg.adapter}" if cfg.adapter else ""))
            engine = load_engine(model=cfg.model, adapter=cfg.adapter)  # ModelLoadError explains itself
            _ENGINES.clear()  # keep one: a later run in this process (a resume, a test) reuses it
            _ENGINES[(cfg.model, cfg.adapter)] = engine
        if cfg.samples > 1 and cfg.temperature == 0:
            say("warning: --samples > 1 at --temperature 0 gives identical samples; pass@k is pass@1")

    pool = None
    futures = []
    errors: list[BaseException] = []
    outstanding, outstanding_lock = [0], threading.Lock()  # submitted jobs whose record is not written yet
    try:
        try:
            pool = WorkerPool(cfg.workers, cache_dir) if n_exec else None
        except (WorkerError, OSError) as e:
            raise EvalError(f"the sandbox worker does not start: {e}") from None
        _write_run_json(out, cfg, pool.isolation if pool else _previous_sandbox(out))
        with ui:
            ui.add("generate", n_gen)
            ui.add("execute", n_exec)

            def execute(p: Problem, i: int) -> None:
                gen = store.generations[(p.language, p.task_id, i)]
                ex = executors[p.language]
                program = ex.assemble(p, gen["completion"])
                skip = ex.skip_reason(program)
                if skip:
                    old = store.executions.get((p.language, p.task_id, i))
                    if old is None or old["status"] != "skipped":
                        _record(p, i, Outcome("skipped", False, skip))
                    else:
                        ui.advance("execute", f"{p.task_id} skipped")
                    return
                with outstanding_lock:
                    outstanding[0] += 1
                fut = pool.submit(ex.job(program))
                fut.add_done_callback(lambda f, p=p, i=i, ex=ex: _finish(f, p, i, ex))
                futures.append(fut)

            def _finish(fut, p: Problem, i: int, ex: Executor) -> None:
                try:
                    outcome = ex.judge(fut.result())
                except Exception as e:  # noqa: BLE001 - a worker crash is an error result, not a crash
                    outcome = Outcome("error", False, f"sandbox error: {e}")
                try:
                    _record(p, i, outcome)
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                finally:
                    with outstanding_lock:
                        outstanding[0] -= 1

            def _record(p: Problem, i: int, o: Outcome) -> None:
                store.append({"kind": "execution", "language": p.language, "task_id": p.task_id, "sample": i,
                              **o.to_dict()})
                ui.advance("execute", f"{p.task_id} {o.status}")

            for p, i in todo_exec:
                execute(p, i)
            for p, missing in todo_gen:
                # Aligned batches: a batch is regenerated whole (same seed) and only missing samples kept,
                # so a resumed run produces the very samples an uninterrupted one would have.
                for start in range(0, n, BATCH):
                    want = [i for i in missing if start <= i < start + BATCH]
                    if not want:
                        continue
                    size = min(BATCH, n - start)
                    if cfg.reference:
                        gens = [None] * size
                    else:
                        gens = generate(engine, p, size, temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, first_index=start)
                    for i in want:
                        g = gens[i - start]
                        completion = p.canonical_solution if g is None else g.completion
                        rec = {"kind": "generation", "language": p.language, "task_id": p.task_id, "sample": i,
                               "completion": completion,
                               "syntax_ok": syntax_ok(p.language, p.setup + p.prompt + completion)}
                        if g is None:
                            rec.update(reference=True, generated_tokens=0, gen_ms=0.0)
                        else:
                            rec.update(raw=g.raw, finish_reason=g.finish_reason, generated_tokens=g.generated_tokens,
                                       prompt_tokens=g.prompt_tokens, gen_ms=g.gen_ms,
                                       max_new_tokens=g.max_new_tokens)
                        store.append(rec)
                        ui.advance("generate", p.task_id)
                        execute(p, i)
            for fut in list(futures):
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - already recorded by _finish
                    pass
            # a future's callbacks run (in the pool thread) after result() returns here: wait for the records
            deadline = time.monotonic() + 60
            while outstanding[0] and time.monotonic() < deadline and not errors:
                time.sleep(0.01)
    except BaseException:
        if pool is not None:
            pool.close(abort=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.close()
        store.close()
    if errors:
        raise errors[0]
    _write_run_json(out, cfg, _previous_sandbox(out), elapsed_s=round(time.monotonic() - started, 1))
    return report_mod.write_report(out)


def _previous_sandbox(out: Path) -> dict | None:
    try:
        return json.loads((out / "run.json").read_text()).get("sandbox")
    except (OSError, ValueError):
        return None
