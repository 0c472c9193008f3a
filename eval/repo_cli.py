"""`aigc-code eval repo`: the shell over `aigc_code.eval.repo` (parse, call, one error line)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from aigc_code.eval.repo import DEFAULT_CONFIGS

from aigc_code.errors import AigcCodeError
from aigc_code.options import AdapterOpt, BackendOpt, DeviceOpt, EndpointOpt, FimFormatOpt, ModelOpt, ThreadsOpt


def repo_command(
    repos: Annotated[list[Path], typer.Argument(help="Repository folders to punch holes in (copied first).")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: results.jsonl (resumable), report.json/.md, plot.png.")
    ],
    holes: Annotated[int, typer.Option(min=1, help="Holes per repository (one line each, one per file).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed for choosing files and lines.")] = 0,
    configs: Annotated[
        str,
        typer.Option(
            help="Comma-separated configurations: none, context, copy, both, both-confident, both-likelihood, "
            "both-model-first."
        ),
    ] = ",".join(DEFAULT_CONFIGS),
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = "local",
    endpoint: EndpointOpt = None,
    fim_format: FimFormatOpt = "starcoder",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Most tokens per suggestion.")] = 64,
):
    """Repository completion benchmark: next-line exact match with and without the workspace index."""
    from aigc_code.eval.repo import CONFIGS, RepoRun, run_repo_benchmark

    from aigc_code.settings import Settings

    chosen = tuple(c.strip() for c in configs.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CONFIGS]
    if unknown or not chosen:
        typer.echo(
            f"error: unknown configuration {', '.join(unknown) or '(none)'}; known: {', '.join(CONFIGS)}", err=True
        )
        raise typer.Exit(2)
    settings = Settings(
        model=model,
        adapter=adapter,
        device=device,
        threads=threads,
        backend=backend,
        endpoint=endpoint,
        fim_format=fim_format,
        max_new_tokens=max_new_tokens,
    )
    try:
        report = run_repo_benchmark(RepoRun(out, list(repos), holes, seed, chosen, settings))
    except AigcCodeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; run the same command again to resume from {out}/results.jsonl", err=True)
        raise typer.Exit(130) from None
    sys.stdout.write((out / "report.md").read_text())
    typer.echo(f"mean next-line exact match over repositories: {report['mean_over_repos_em_line']}")
