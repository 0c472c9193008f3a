"""The `aigc-code` command line. Each subcommand is a thin shell over a plain function.

Heavy imports (torch, transformers) happen inside the commands so that `--help` is instant.
Errors a user can act on (`AigcCodeError`) print one line and exit with status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from aigc_code.bench.cli import app as bench_app
from aigc_code.errors import AigcCodeError
from aigc_code.eval.cli import app as eval_app
from aigc_code.finetune.cli import finetune_command, merge_command
from aigc_code.server.cli import serve_command

app = typer.Typer(
    help="aigc-code: self-hosted code completion — LSP server, local model engine, LoRA finetuning, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
pretrain_app = typer.Typer(help="Build the corpus, train and export the embedded default model.", no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")

from aigc_code.options import (  # noqa: E402
    AdapterOpt,
    BackendOpt,
    DeviceOpt,
    EndpointOpt,
    FimFormatOpt,
    MaxContextOpt,
    ModelOpt,
    QuantizeOpt,
    ThreadsOpt,
    check_quantize,
)


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def complete(
    file: Annotated[Path, typer.Argument(help="Source file to complete in.")],
    line: Annotated[int, typer.Option("--line", "-l", help="Cursor line, 1-based.")],
    column: Annotated[int, typer.Option("--column", "-c", help="Cursor column, 1-based (characters).")] = 1,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quantize: QuantizeOpt = None,
    backend: BackendOpt = "local",
    endpoint: EndpointOpt = None,
    fim_format: FimFormatOpt = "starcoder",
    max_context: MaxContextOpt = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, max=5.0, help="0 = greedy (deterministic).")] = 0.0,
    n: Annotated[int, typer.Option("--n", min=1, max=16, help="Candidates to sample and rank.")] = 1,
    workspace: Annotated[
        bool,
        typer.Option(
            help="Index the file's repository (its git root) for copy "
            "candidates and cross-file context, as the server does."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output with timings.")] = False,
):
    """Print the completion at FILE:LINE:COLUMN (fill-in-the-middle with the rest of the file as suffix)."""
    from aigc_code.complete import complete_file
    from aigc_code.settings import Settings

    settings = Settings(
        model=model,
        adapter=adapter,
        device=device,
        threads=threads,
        quantize=check_quantize(quantize),
        backend=backend,
        endpoint=endpoint,
        fim_format=fim_format,
        max_context=max_context,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        n=n,
        seed=0 if temperature > 0 else None,
        workspace_index=workspace,
    )
    try:
        result = complete_file(file, line, column, settings)
    except AigcCodeError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(result["completion"])


@pretrain_app.command("corpus")
def pretrain_corpus(
    out: Annotated[Path, typer.Option(help="Corpus directory to write.")] = Path("runs/corpus"),
    scratch: Annotated[Path, typer.Option(help="Scratch folder for npm packages and JDK sources.")] = Path(
        "runs/scratch"
    ),
    max_chars: Annotated[int, typer.Option(help="Characters kept per language.")] = 8_000_000,
):
    """Collect, filter, deduplicate and split the multi-language code corpus (offline sources)."""
    from aigc_code.pretrain.corpus import build_corpus

    stats = build_corpus(out, scratch, max_chars_per_language=max_chars)
    typer.echo(json.dumps({"chars": stats["chars"], "files": stats["files"]}, indent=2))
    if stats["missing_languages"]:
        typer.echo(
            f"warning: no {', '.join(stats['missing_languages'])} sources found (see the sources in "
            "aigc_code/pretrain/corpus.py; .ci/toolchains.sh installs Go and the Rust crates): a model "
            "trained on this corpus forgets those languages, and `pretrain train` refuses to continue one on it",
            err=True,
        )


@pretrain_app.command("train")
def pretrain_train(
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `pretrain corpus`.")] = Path("runs/corpus"),
    out: Annotated[Path, typer.Option(help="Run directory (tokenizer, checkpoint).")] = Path("runs/pretrain"),
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = True,
    minutes: Annotated[Optional[float], typer.Option(help="Stop after this many minutes.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (1 leaves the machine usable).")] = 1,
    device: DeviceOpt = None,
    hidden: Annotated[int, typer.Option(help="Hidden size (new runs only).")] = 192,
    layers: Annotated[int, typer.Option(help="Layers (new runs only).")] = 4,
    heads: Annotated[int, typer.Option(help="Attention heads (new runs only).")] = 4,
    context: Annotated[int, typer.Option(help="Context length (new runs only).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 8,
    horizon_tokens: Annotated[
        Optional[int],
        typer.Option(
            help="Length of the cosine learning-rate schedule, in "
            "cumulative tokens (default 15M for a new run; given on a resumed run, it "
            "replaces the recorded one)."
        ),
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="Tokenizer vocabulary (new runs only).")] = 8192,
    checkpoint_minutes: Annotated[float, typer.Option(help="Minutes between atomic checkpoints.")] = 5.0,
    cooldown_steps: Annotated[
        int,
        typer.Option(
            help="Decay the learning rate linearly to its minimum over N "
            "steps, then stop (anneal before `pretrain export`)."
        ),
    ] = 0,
    from_model: Annotated[
        Optional[Path],
        typer.Option(
            help="When OUT has no checkpoint, continue from this "
            "exported model (e.g. aigc_code/default_model), keeping its cumulative counts."
        ),
    ] = None,
):
    """Train (or resume training) the default model; checkpoints atomically every few minutes and on Ctrl-C."""
    from aigc_code.pretrain.train import ModelShape, TrainConfig, train

    shape = ModelShape(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=int(hidden * 8 / 3 // 32 * 32),
        context=context,
        vocab_size=vocab_size,
    )
    cfg = TrainConfig(
        shape=shape,
        batch_size=batch_size,
        horizon_tokens=horizon_tokens or 15_000_000,
        checkpoint_minutes=checkpoint_minutes,
    )
    try:
        state = train(
            corpus,
            out,
            cfg,
            resume=resume,
            max_minutes=minutes,
            max_steps=steps,
            threads=threads,
            device=device,
            cooldown_steps=cooldown_steps,
            start_from=from_model,
            horizon_tokens=horizon_tokens,
        )
    except AigcCodeError as exc:
        _fail(str(exc))
    typer.echo(f"step {state['step']}, {state['tokens']:,} tokens seen in total")


@pretrain_app.command("export")
def pretrain_export(
    run: Annotated[Path, typer.Option(help="Run directory from `pretrain train`.")] = Path("runs/pretrain"),
    corpus: Annotated[Path, typer.Option(help="Corpus directory (for the model card's statistics).")] = Path(
        "runs/corpus"
    ),
    out: Annotated[Path, typer.Option(help="Where to write the shippable model.")] = Path("aigc_code/default_model"),
    gguf: Annotated[
        Optional[Path], typer.Option(help="Also convert the exported model to GGUF (llama.cpp) here.")
    ] = None,
    gguf_dtype: Annotated[str, typer.Option(help="GGUF weight type: f32, f16, bf16 or q8_0.")] = "f32",
):
    """Copy the run's checkpoint into a shippable model directory and write its MODEL_CARD.md."""
    from aigc_code.pretrain.export import export_model

    try:
        export_model(run, corpus, out)
        if gguf is not None:
            from aigc_code.gguf import export_gguf

            export_gguf(out, gguf, dtype=gguf_dtype)
    except AigcCodeError as exc:
        _fail(str(exc))
    typer.echo(f"exported to {out}" + (f" and {gguf}" if gguf is not None else ""))


@pretrain_app.command("evaluate")
def pretrain_evaluate(
    model: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="Exported model directory; repeat to compare (the first is the baseline)."),
    ],
    corpus: Annotated[Path, typer.Option(help="Corpus directory (its validation split is used).")] = Path(
        "runs/corpus"
    ),
    windows: Annotated[int, typer.Option(min=1, help="Validation windows per language.")] = 32,
    lines: Annotated[int, typer.Option(min=0, help="Held-out next-line completions per language.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed for windows and lines.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON report here.")] = None,
):
    """Validation loss and next-line exact match / edit similarity per language, models side by side."""
    from aigc_code.pretrain.evaluate import compare, markdown, write

    try:
        report = compare(model, corpus, windows, lines, seed)
    except AigcCodeError as exc:
        _fail(str(exc))
    write(report, out)
    typer.echo(markdown(report))
    if "last_beats_first_everywhere" in report:
        typer.echo(f"lower validation loss in every language: {report['last_beats_first_everywhere']}")


# Commands whose code lives with their feature (server/, eval/, finetune/, bench/).
app.command("serve")(serve_command)
app.add_typer(eval_app, name="eval")
app.command("finetune")(finetune_command)
app.command("merge")(merge_command)
app.add_typer(bench_app, name="bench")


def main() -> None:
    """One error path for every command: `error: ...` on one line; exit 1 for errors, 2 for usage
    errors (with the command's `--help` to read), 130 for Ctrl-C."""
    try:
        code = app(standalone_mode=False)
    except AigcCodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click's usage errors (typer vendors click): one line, exit 2
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {exc.format_message()}{where}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
