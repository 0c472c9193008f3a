"""``aigc-code eval run`` / ``eval score``: generate completions, execute them in the sandbox, score, report.

A run is a sequence of named steps (``run_eval``): validate the settings and resolve the model,
refuse a resume that would mix models or settings, load the problems, plan what is missing,
execute what was generated but not executed, generate the rest (each sample is submitted to
the sandbox pool as soon as it is generated, so generation and execution overlap), wait for
the last verdicts, write the report. Every result is appended to ``DIR/samples.jsonl`` when
known (store.py), and a re-run with the same ``--out`` only does what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aigc_code.eval import report as report_mod
from aigc_code.eval.executors import Executor, Outcome, make_executor
from aigc_code.eval.generation import syntax_ok
from aigc_code.eval.pool import WorkerError, WorkerPool
from aigc_code.eval.problems import (
    HUMANEVAL,
    LANGUAGES,
    Problem,
    is_humaneval_x,
    is_infill,
    load_benchmark,
    normalize_language,
)
from aigc_code.eval.store import RETRYABLE, SampleStore
from aigc_code.eval.toolchains import default_cache_dir

from aigc_code.errors import AigcCodeError

_ENGINES: dict = {}
BACKENDS = ("local", "openai")
PROMPT_FORMATS = ("plain", "fim")


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
    backend: str = "local"  # local | openai
    endpoint: str | None = None  # openai: the server (recorded as its /v1/completions URL)
    concurrency: int = 8  # openai: requests in flight
    request_timeout: float = 300.0  # openai: seconds a request may take
    prompt_format: str = "plain"  # left-to-right benchmarks: plain prompt (published convention) or fim
    fim_format: str = "starcoder"  # openai + FIM prompts: the server model's FIM family
    infill_per_type: int = 1  # humaneval-x-infill: tasks of each type per problem (0 = all)
    allow_skip: bool = False  # --reference: a skipped language is not a failure
    language: str | None = None  # custom benchmarks: the language of rows without one (human-eval format)
    model_fingerprint: str | None = None  # resolved: content fingerprint of a local model (+ adapter)
    samples_file: str | None = None  # eval score: the scored file
    samples_sha1: str | None = None  # eval score: its content hash

    # Settings that change what a sample *is*: a resumed run must agree on them.
    IDENTITY = (
        "benchmark",
        "backend",
        "endpoint",
        "model",
        "model_fingerprint",
        "adapter",
        "temperature",
        "top_p",
        "max_new_tokens",
        "seed",
        "reference",
        "prompt_format",
        "fim_format",
        "infill_per_type",
        "samples_sha1",
    )

    def validate(self) -> None:
        self._check_numbers()
        self._check_choices()
        self._resolve_benchmark()
        if self.reference or self.samples_file:
            self.backend, self.model, self.adapter, self.endpoint = "none", None, None, None
        elif self.backend == "local":
            self._resolve_local_model()
        else:
            self._resolve_server()

    def _check_numbers(self) -> None:
        checks = [
            (self.samples < 1, "--samples must be at least 1"),
            (self.workers < 1, "--workers must be at least 1"),
            (self.temperature < 0, "--temperature must be >= 0"),
            (not 0 < self.top_p <= 1, "--top-p must be in (0, 1]"),
            (self.limit is not None and self.limit < 1, "--limit must be at least 1"),
            (self.max_new_tokens < 1, "--max-new-tokens must be at least 1"),
            (self.timeout is not None and self.timeout <= 0, "--timeout must be positive"),
            (self.concurrency < 1, "--concurrency must be at least 1"),
            (self.request_timeout <= 0, "--request-timeout must be positive"),
            (self.infill_per_type < 0, "--infill-per-type must be >= 0"),
            (not self.languages, "no languages given"),
        ]
        for bad, message in checks:
            if bad:
                raise EvalError(message)

    def _check_choices(self) -> None:
        if self.backend not in BACKENDS:
            raise EvalError(f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise EvalError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}, not {self.prompt_format!r}")
        try:
            self.languages = list(dict.fromkeys(normalize_language(x) for x in self.languages))
            self.language = normalize_language(self.language) if self.language else None
        except ValueError as e:
            raise EvalError(str(e)) from None
        if self.backend == "openai" and not (self.reference or self.samples_file) and not self.endpoint:
            raise EvalError("--backend openai needs --endpoint URL (e.g. http://127.0.0.1:8000/v1)")

    def _resolve_benchmark(self) -> None:
        if is_humaneval_x(self.benchmark) or is_infill(self.benchmark) or self.benchmark.lower() in HUMANEVAL:
            self.benchmark = self.benchmark.lower()
            return
        path = Path(self.benchmark).expanduser()
        if not path.is_file():
            raise EvalError(
                f"--benchmark: no such file {self.benchmark!r} (use 'humaneval-x', 'humaneval-x-infill', "
                "'humaneval' or a JSONL path)"
            )
        self.benchmark = str(path.resolve())

    def _resolve_local_model(self) -> None:
        from aigc_code.loading import resolve_model_path

        path = resolve_model_path(self.model)  # --model, else $AIGC_CODE_MODEL, else the embedded default
        if path.exists():
            self.model = str(path.resolve())
            self.model_fingerprint = content_fingerprint(path)
        else:
            self.model = str(path)  # load_engine explains what is wrong with it
        if self.adapter is not None and Path(self.adapter).expanduser().exists():
            self.adapter = str(Path(self.adapter).expanduser().resolve())
            self.model_fingerprint = f"{self.model_fingerprint}+{content_fingerprint(Path(self.adapter))}"

    def _resolve_server(self) -> None:
        from aigc_code.remote import completions_url

        self.endpoint = completions_url(self.endpoint)
        if not self.model:
            self.model = served_model(self.endpoint, self.request_timeout)


def content_fingerprint(path: Path, edge: int = 1 << 20) -> str:
    """sha1 over a checkpoint's small files and, for each large file, its size and first and last MiB
    (cheap for a 7B model; changes when the weights, the config or the tokenizer change)."""
    h = hashlib.sha1()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if f != path else f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            if size <= 2 * edge:
                h.update(fh.read())
            else:
                h.update(fh.read(edge))
                fh.seek(size - edge)
                h.update(fh.read(edge))
    return h.hexdigest()[:16]


def served_model(endpoint: str, timeout: float) -> str:
    """The first model a server lists at /v1/models (recorded in run.json)."""
    import httpx

    url = endpoint.rsplit("/", 1)[0] + "/models"
    try:
        data = httpx.get(url, timeout=min(10.0, timeout)).json().get("data") or []
        return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise EvalError(
            f"cannot learn the served model from {url} ({type(e).__name__}: {e}); pass --model NAME"
        ) from None


def _check_resume(out: Path, cfg: RunConfig) -> None:
    path = out / "run.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (ValueError, KeyError) as e:
        raise EvalError(f"{path} is unreadable ({e}); choose another --out") from None
    diffs = [
        f"{k}: {old.get(k)!r} before, {getattr(cfg, k)!r} now"
        for k in RunConfig.IDENTITY
        if old.get(k) != getattr(cfg, k)
    ]
    if diffs:
        raise EvalError(
            f"{out} already holds a run with different settings ({'; '.join(diffs)}); "
            "use another --out, or the same settings to resume it"
        )


def _write_run_json(
    out: Path, cfg: RunConfig, isolation: dict | None, elapsed_s: float | None = None, requests: dict | None = None
) -> None:
    path = out / "run.json"
    data = {
        "config": {k: v for k, v in asdict(cfg).items()},
        "sandbox": isolation,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "last_run_elapsed_s": elapsed_s,
        "requests": requests,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _previous(out: Path, key: str):
    try:
        return json.loads((out / "run.json").read_text()).get(key)
    except (OSError, ValueError):
        return None


class Progress:
    """rich progress bars on a terminal; plain progress lines (every ``every_s`` seconds and at the
    end) when the output is redirected; nothing when quiet (``mode`` None)."""

    def __init__(self, mode: str | None, every_s: float = 10.0):
        self.mode, self.every_s = mode, every_s
        self.progress = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.progress = RichProgress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
            )
        self.tasks: dict = {}
        self.counts: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.t0 = self.last_line = time.monotonic()

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def add(self, name: str, total: int) -> None:
        self.counts[name] = [0, total]
        if self.progress:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")

    def advance(self, name: str, info: str = "") -> None:
        with self.lock:
            done = self.counts.setdefault(name, [0, 0])
            done[0] += 1
            if self.progress and name in self.tasks:
                self.progress.update(self.tasks[name], advance=1, info=info)
            elif self.mode == "lines":
                self._maybe_line(final=all(d >= t for d, t in self.counts.values()))

    def _maybe_line(self, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self.last_line < self.every_s:
            return
        self.last_line = now
        parts = [f"{name} {d}/{t}" for name, (d, t) in self.counts.items() if t]
        print(f"[{now - self.t0:6.1f} s] " + ", ".join(parts), flush=True)

    def log(self, msg: str) -> None:
        if self.progress:
            self.progress.console.print(msg)
        else:
            print(msg, flush=True)


def load_problems(cfg: RunConfig) -> dict[str, list[Problem]]:
    try:
        by_lang = load_benchmark(cfg.benchmark, cfg.languages, cfg.language)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if cfg.limit:
        by_lang = {lang: probs[: cfg.limit] for lang, probs in by_lang.items()}
    if is_infill(cfg.benchmark):
        from aigc_code.eval.infill import build_infill

        by_lang = build_infill(by_lang, cfg.infill_per_type)
        if not cfg.reference:
            from aigc_code.eval.generators import raw_twin

            by_lang = {lang: [q for p in probs for q in (p, raw_twin(p))] for lang, probs in by_lang.items()}
    if not any(by_lang.values()):
        raise EvalError(f"the benchmark has no problems in {', '.join(cfg.languages)}")
    if cfg.reference:
        for lang, probs in by_lang.items():
            lacking = [p.task_id for p in probs if p.canonical_solution is None]
            if lacking:
                raise EvalError(f"--reference needs canonical_solution; missing for {lang} {lacking[:3]}")
    return by_lang


def make_generator(cfg: RunConfig, say, provided=None):
    """The generator of this run (generators.py); loads the model at most once per process."""
    from aigc_code.eval import generators as g

    if provided is not None:
        return provided
    if cfg.reference:
        return g.ReferenceGenerator(1)
    if is_infill(cfg.benchmark):
        backend = g.openai_backend(cfg, plain=False) if cfg.backend == "openai" else _local_backend(cfg, say)
        g.warm_up(backend)
        return g.InfillGenerator(cfg, backend, cfg.concurrency if cfg.backend == "openai" else 1)
    if cfg.backend == "openai":
        say(f"generating through {cfg.endpoint} (model {cfg.model}, {cfg.concurrency} requests in flight)")
        return g.OpenAIGenerator(cfg)
    if cfg.samples > 1 and cfg.temperature == 0:
        say("warning: --samples > 1 at --temperature 0 gives identical samples; pass@k is pass@1")
    return g.LocalGenerator(_engine(cfg, say), cfg)


def _engine(cfg: RunConfig, say):
    engine = _ENGINES.get((cfg.model, cfg.adapter))
    if engine is None:
        from aigc_code.engine import load_engine

        say(f"loading model {cfg.model}" + (f" + adapter {cfg.adapter}" if cfg.adapter else ""))
        engine = load_engine(model=cfg.model, adapter=cfg.adapter)  # ModelLoadError explains itself
        _ENGINES.clear()  # keep one: a later run in this process (a resume, a test) reuses it
        _ENGINES[(cfg.model, cfg.adapter)] = engine
    return engine


def _local_backend(cfg: RunConfig, say):
    from aigc_code.backends import make_backend

    say(f"loading model {cfg.model}" + (f" + adapter {cfg.adapter}" if cfg.adapter else ""))
    return make_backend("local", model=cfg.model, adapter=cfg.adapter)  # ModelLoadError explains itself


class EvalRun:
    """One invocation of a run: the store, the executors, the sandbox pool, the generator."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path,
        by_lang: dict[str, list[Problem]],
        *,
        progress: str | None,
        cache_dir: Path | None,
        log,
        provided=None,
    ):
        self.cfg, self.out, self.by_lang, self.provided = cfg, out, by_lang, provided
        self.store = SampleStore(out / "samples.jsonl")
        self.ui = Progress(progress)
        self.say = log or self.ui.log
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.executors: dict[str, Executor] = {}
        self.pool: WorkerPool | None = None
        self.errors: list[BaseException] = []
        self.outstanding = 0  # submitted jobs whose record is not written yet
        self.lock = threading.Lock()
        self.futures: list = []
        self.scheduler = None
        if self.store.repaired:
            self.say(f"resume: cut a torn last line off {self.store.path}")

    # -- steps
    def open_executors(self) -> None:
        for lang in self.by_lang:
            ex = make_executor(lang, self.cache_dir, self.cfg.timeout, log=self.say)
            self.executors[lang] = ex
            if ex.tc.missing:
                self.say(f"{lang}: skipped: toolchain missing: {ex.tc.missing}")

    def samples_for(self, p: Problem) -> int:
        if self.provided is not None:
            return self.provided.samples_for(p)
        return 1 if self.cfg.reference else self.cfg.samples

    def plan(self) -> tuple[list[tuple[Problem, list[int]]], list[tuple[Problem, int]]]:
        """(problems with their missing sample indices, generated samples still to execute)."""
        todo_gen, todo_exec = [], []
        for probs in self.by_lang.values():
            for p in probs:
                n = self.samples_for(p)
                missing = [i for i in range(n) if (p.language, p.task_id, i) not in self.store.generations]
                if missing:
                    todo_gen.append((p, missing))
                todo_exec += [(p, i) for i in range(n) if self._needs_execution(p, i)]
        return todo_gen, todo_exec

    def _needs_execution(self, p: Problem, i: int) -> bool:
        key = (p.language, p.task_id, i)
        if key not in self.store.generations:
            return False
        old = self.store.executions.get(key)
        return old is None or (old["status"] in RETRYABLE and not self.executors[p.language].tc.missing)

    def start_pool(self, needed: bool) -> None:
        try:
            self.pool = WorkerPool(self.cfg.workers, self.cache_dir) if needed else None
        except (WorkerError, OSError) as e:
            raise EvalError(f"the sandbox worker does not start: {e}") from None
        _write_run_json(self.out, self.cfg, self.pool.isolation if self.pool else _previous(self.out, "sandbox"))

    def execute(self, p: Problem, i: int) -> None:
        gen = self.store.generations[(p.language, p.task_id, i)]
        ex = self.executors[p.language]
        target = dataclasses.replace(p, prompt="") if gen.get("full_program") else p  # eval score: whole programs
        program = ex.assemble(target, (gen["completion"] or "") + p.suffix)
        skip = ex.skip_reason(program)
        if skip:
            old = self.store.executions.get((p.language, p.task_id, i))
            if old is None or old["status"] != "skipped":
                self._record(p, i, Outcome("skipped", False, skip))
            else:
                self.ui.advance("execute", f"{p.task_id} skipped")
            return
        with self.lock:
            self.outstanding += 1
        fut = self.pool.submit(ex.job(program))
        fut.add_done_callback(lambda f, p=p, i=i, ex=ex: self._finish(f, p, i, ex))
        self.futures.append(fut)

    def _finish(self, fut, p: Problem, i: int, ex: Executor) -> None:
        try:
            outcome = ex.judge(fut.result())
        except Exception as e:  # noqa: BLE001 - a worker crash is an error result, not a crash
            outcome = Outcome("error", False, f"sandbox error: {e}")
        try:
            self._record(p, i, outcome)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)
        finally:
            with self.lock:
                self.outstanding -= 1

    def _record(self, p: Problem, i: int, o: Outcome) -> None:
        self.store.append(
            {"kind": "execution", "language": p.language, "task_id": p.task_id, "sample": i, **o.to_dict()}
        )
        self.ui.advance("execute", f"{p.task_id} {o.status}")

    def on_generated(self, results: list[tuple[Problem, int, dict]]) -> None:
        for p, i, fields in results:
            completion = fields.get("completion") or ""
            rec = {
                "kind": "generation",
                "language": p.language,
                "task_id": p.task_id,
                "sample": i,
                **fields,
                "syntax_ok": syntax_ok(
                    p.language, p.setup + ("" if fields.get("full_program") else p.prompt) + completion + p.suffix
                ),
            }
            if p.kind:
                rec["infill_kind"] = p.kind
            self.store.append(rec)
            self.ui.advance("generate", p.task_id)
            self.execute(p, i)

    def generate(self, todo_gen: list[tuple[Problem, list[int]]]) -> None:
        from aigc_code.eval.generators import Scheduler

        gen = make_generator(self.cfg, self.say, self.provided)
        try:
            units = [u for p, missing in todo_gen for u in gen.units(p, missing)]
            self.scheduler = Scheduler(gen.concurrency)
            self.scheduler.run(units, gen.generate, self.on_generated)
        finally:
            gen.close()

    def wait(self) -> None:
        for fut in list(self.futures):
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - already recorded by _finish
                pass
        # a future's callbacks run (in the pool thread) after result() returns here: wait for the records
        deadline = time.monotonic() + 60
        while self.outstanding and time.monotonic() < deadline and not self.errors:
            time.sleep(0.01)
        if self.errors:
            raise self.errors[0]

    def go(self) -> dict | None:
        """Run every step; returns the generation scheduler's statistics (None if nothing was generated)."""
        self.open_executors()
        todo_gen, todo_exec = self.plan()
        if self.provided is not None:
            todo_gen = [(p, m) for p, m in todo_gen if m]
        n_gen = sum(len(m) for _, m in todo_gen)
        n_exec = len(todo_exec) + n_gen
        done = sum(self.samples_for(p) for probs in self.by_lang.values() for p in probs) - n_exec
        if done:
            self.say(f"resume: {done} samples already done in {self.out}, {n_exec} to go")
        self.start_pool(bool(n_exec))
        with self.ui:
            self.ui.add("generate", n_gen)
            self.ui.add("execute", n_exec)
            for p, i in todo_exec:
                self.execute(p, i)
            if todo_gen:
                self.generate(todo_gen)
            self.wait()
        return self.scheduler.stats() if self.scheduler else None

    def close(self, abort: bool) -> None:
        if self.pool is not None:
            self.pool.close(abort=abort)
            self.pool = None
        self.store.close()


def _prepare_out(out: str | Path, cfg: RunConfig) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, cfg)
    return out


def run_eval(
    cfg: RunConfig,
    out: str | Path,
    *,
    progress: bool | str | None = True,
    cache_dir: Path | None = None,
    log=None,
    provided=None,
) -> dict:
    """Run (or resume) an evaluation into ``out``; returns the report dict.
    ``progress``: "bar", "lines" or None (True: bars on a terminal, lines otherwise);
    ``provided``: a generator of completions made elsewhere (``eval score``)."""
    cfg.validate()
    out = _prepare_out(out, cfg)
    by_lang = load_problems(cfg)
    if provided is not None:
        provided.bind(by_lang)
    if progress is True:
        progress = "bar" if sys.stdout.isatty() else "lines"
    started = time.monotonic()
    run = EvalRun(cfg, out, by_lang, progress=progress or None, cache_dir=cache_dir, log=log, provided=provided)
    try:
        stats = run.go()
    except BaseException:
        run.close(abort=True)
        raise
    run.close(abort=False)
    _write_run_json(
        out,
        cfg,
        _previous(out, "sandbox"),
        elapsed_s=round(time.monotonic() - started, 1),
        requests=stats or _previous(out, "requests"),
    )
    return report_mod.write_report(out)
