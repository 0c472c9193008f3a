"""Command-line entry points: `aigc-code finetune REPO --out DIR` and `aigc-code merge`.

`finetune_command` and `merge_command` are plain functions with typer-annotated parameters, so
the top-level CLI registers them directly (`app.command("finetune")(finetune_command)`) without
an extra sub-command level (`python -m aigc_code finetune ...` is the module form, e.g. for
`accelerate launch -m aigc_code finetune ...`).
Heavy imports happen inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aigc_code.errors import AigcCodeError


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def finetune_command(
    repo: Annotated[Path, typer.Argument(help="Repository to learn from: a folder or a git checkout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter directory to write (adapter, checkpoint, report).")],
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="Base model checkpoint directory (default: $AIGC_CODE_MODEL, else the embedded default model).",
        ),
    ] = None,
    base: Annotated[Optional[str], typer.Option("--base", hidden=True, help="Old name of --model.")] = None,
    rank: Annotated[Optional[int], typer.Option("--rank", "-r", help="LoRA rank [default: 16].")] = None,
    alpha: Annotated[
        Optional[float], typer.Option("--alpha", help="LoRA alpha (scale = alpha / rank) [default: 32].")
    ] = None,
    epochs: Annotated[
        Optional[float],
        typer.Option("--epochs", help="Passes over the training files (default 3; not with --max-steps)."),
    ] = None,
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="Optimizer steps to train (instead of --epochs).")
    ] = None,
    lr: Annotated[
        Optional[float], typer.Option("--lr", help="Peak learning rate (linear warmup, cosine decay) [default: 0.001].")
    ] = None,
    context_length: Annotated[
        Optional[int],
        typer.Option(
            "--context-length", help="Tokens per training sequence (default: the base model's, at most 1024)."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")] = False,
    max_minutes: Annotated[
        Optional[float],
        typer.Option(
            "--max-minutes",
            help="Stop training after this many minutes (then save, evaluate and report; --resume continues).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per micro-batch (per GPU).")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step.")] = 2,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout.")] = 0.05,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of files held out for the before/after measurements.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the split, the examples and their order.")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = 100,
    eval_lines: Annotated[int, typer.Option("--eval-lines", help="Held-out next-line completions to score.")] = 200,
    eval_spans: Annotated[int, typer.Option("--eval-spans", help="Held-out span completions to score.")] = 100,
    pipeline_holes: Annotated[
        int,
        typer.Option(
            "--pipeline-holes",
            min=0,
            help="Held-out lines completed through the editor's pipeline, "
            "base and adapter, repository index off and on (0: skip).",
        ),
    ] = 20,
    device: Annotated[
        Optional[str],
        typer.Option(
            "--device",
            help="cpu to force CPU; default: CUDA when present (under `accelerate launch`: the process's GPU).",
        ),
    ] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch.")] = None,
):
    """Train a LoRA adapter on REPO's code and report base vs. base + adapter on held-out files."""
    from aigc_code.finetune.report import markdown
    from aigc_code.finetune.train import FinetuneConfig, FinetuneInterrupted, run_finetune

    explicit = {"rank": rank, "alpha": alpha, "lr": lr}  # given on the command line: --resume refuses a change
    given = {k: v for k, v in explicit.items() if v is not None}
    cfg = FinetuneConfig(
        epochs=epochs,
        max_steps=max_steps,
        context_length=context_length,
        batch_size=batch_size,
        grad_accum=grad_accum,
        dropout=dropout,
        val_fraction=val_fraction,
        seed=seed,
        checkpoint_every=max(1, checkpoint_every),
        eval_lines=eval_lines,
        eval_spans=eval_spans,
        pipeline_holes=pipeline_holes,
        **given,
    )
    try:
        result = run_finetune(
            repo,
            out,
            model=model or base,
            cfg=cfg,
            resume=resume,
            max_minutes=max_minutes,
            device=device,
            threads=threads,
            echo=lambda m: typer.echo(m, err=True),
            explicit=given,
        )
    except FinetuneInterrupted as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise typer.Exit(130) from None
    except AigcCodeError as exc:
        _fail(str(exc))
    if result is not None:  # the main process of a multi-GPU run
        md = markdown(result)
        table = md[md.index("## Before / after") : md.index("## Data")].rstrip()
        typer.echo(table)
        typer.echo(f"\nadapter written to {out}; full report: {Path(out) / 'finetune_report.md'}")


def merge_command(
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter directory written by `aigc-code finetune`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (must not exist or be empty).")],
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="Base model directory (default: the one the adapter was trained on, else the embedded default model).",
        ),
    ] = None,
    base: Annotated[Optional[str], typer.Option("--base", hidden=True, help="Old name of --model.")] = None,
):
    """Merge an adapter into its base model's weights and write a standalone checkpoint (+ tokenizer)."""
    from aigc_code.finetune.merge import merge

    try:
        path = merge(adapter, out, base=model or base)
    except AigcCodeError as exc:
        _fail(str(exc))
    typer.echo(f"merged model written to {path}; use it with --model {path}")
