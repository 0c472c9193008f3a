"""`aigc-code bench ...`: performance benchmarks. Each prints ratios against a baseline measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from aigc_code.options import BackendOpt, EndpointOpt

app = typer.Typer(
    help="Benchmarks: every figure is a ratio against a baseline measured in the same run.", no_args_is_help=True
)

ModelOpt = Annotated[
    Optional[str], typer.Option("--model", "-m", help="Checkpoint directory (default: embedded model).")
]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Also write the results as JSON here.")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        help="CPU threads for the model (also for the "
        "server processes a benchmark starts); default: torch's, all cores.",
    ),
]


def _threads(threads: int | None) -> None:
    import os

    if threads:
        os.environ["AIGC_CODE_THREADS"] = str(threads)  # read by load_model, here and in child processes


def _emit(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2, default=float)
    typer.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


@app.command()
def typing(
    model: ModelOpt = None,
    requests: int = 200,
    max_new_tokens: int = 32,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
):
    """Scripted typing session (>= 200 requests, 6 languages): KV reuse and prompt-lookup decoding vs
    transformers' model.generate per request. Prints median time to first token, latency, tokens/s."""
    _threads(threads)
    from aigc_code.bench.typing import bench_typing

    _emit(bench_typing(model, requests, max_new_tokens, device), out)


@app.command()
def quantize(model: ModelOpt = None, lines: int = 120, out: OutOpt = None, threads: ThreadsOpt = None):
    """CPU int8 dynamic quantization vs fp32: tokens/s ratio and next-line exact match on held-out code."""
    _threads(threads)
    from aigc_code.bench.typing import bench_quantize

    _emit(bench_quantize(model, lines), out)


@app.command()
def finetune(
    model: ModelOpt = None,
    steps: int = 10,
    batch: int = 4,
    context: int = 256,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
):
    """LoRA vs full finetuning of the same model: training tokens/s and peak memory (separate processes)."""
    _threads(threads)
    from aigc_code.bench.finetune_bench import bench_finetune

    _emit(bench_finetune(model, steps, batch, context, device), out)


@app.command()
def soak(
    model: ModelOpt = None,
    messages: int = 10_000,
    seed: int = 0,
    tiny: Annotated[bool, typer.Option(help="Use a random tiny model (measures only the server).")] = False,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
):
    """Send >= 10,000 mixed LSP messages (edits, requests, cancellations, junk) to the real server; report
    crashes, unanswered requests, stale suggestions and resident memory (start/peak/end). Exit 1 if not ok."""
    _threads(threads)
    from aigc_code.bench.soak import soak as run_soak

    result = run_soak(model, messages, seed, tiny=tiny)
    _emit(result, out)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def lsp(
    files: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Files to replay (default: three standard-library modules and three of this package's)."),
    ] = None,
    model: ModelOpt = None,
    runs: Annotated[
        int,
        typer.Option(help="Replays, a fresh server each; the summary pools their requests and lists each run's ratio."),
    ] = 1,
    backend: BackendOpt = "local",
    endpoint: EndpointOpt = None,
    requests_per_file: Annotated[int, typer.Option(min=1, help="Completion requests replayed per file.")] = 15,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens a suggestion may have.")] = 32,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
):
    """Replay a scripted typing session through the real server over stdio: p50/p95 inline-completion
    latency, the model's own time, and the server overhead as a ratio of the two (and the host's CPU
    steal during the run, which slows both)."""
    _threads(threads)
    from aigc_code.bench.lsp import bench_lsp

    missing = [str(f) for f in files or [] if not f.is_file()]
    if missing:
        raise typer.BadParameter(f"no such file: {', '.join(missing)}", param_hint="FILES")
    summary = bench_lsp(
        files or None,
        model=model,
        backend=backend,
        endpoint=endpoint,
        requests_per_file=requests_per_file,
        max_new_tokens=max_new_tokens,
        runs=runs,
    )
    _emit(summary, out)


@app.command()
def engine(
    model: ModelOpt = None,
    models: Annotated[
        str,
        typer.Option(help="Comma-separated: shipped (or --model), 0.5b (random weights, Qwen2.5-Coder-0.5B's shape)."),
    ] = "shipped,0.5b",
    dtypes: Annotated[
        str, typer.Option(help="Comma-separated: fp32, int8, bf16 (bf16 where the CPU has it).")
    ] = "fp32,int8,bf16",
    prompt_tokens: int = 300,
    new_tokens: int = 64,
    rounds: Annotated[int, typer.Option(help="Rounds; each runs every runner --runs times (median of medians).")] = 3,
    runs: int = 5,
    llama_cpp: Annotated[
        bool, typer.Option(help="Compare with llama.cpp (llama-cpp-python, GGUF via aigc_code.gguf).")
    ] = True,
    hf_engine: Annotated[
        bool, typer.Option(help="Also time the engine on the plain HF forward (AIGC_CODE_FAST=0).")
    ] = True,
    out: Annotated[Path, typer.Option(help="Write the results as JSON here.")] = Path("runs/bench-engine.json"),
    threads: Annotated[int, typer.Option(help="CPU threads for every runner.")] = 1,
):
    """Decode tokens/s and time to first token: aigc-code's engine vs transformers generate vs llama.cpp, same
    prompt ids, same run; ratios printed and saved as JSON."""
    _threads(threads)
    from aigc_code.bench.engine import bench_engine, format_table, save

    try:
        result = bench_engine(
            [m.strip() for m in models.split(",") if m.strip()],
            [d.strip() for d in dtypes.split(",") if d.strip()],
            model,
            prompt_tokens,
            new_tokens,
            rounds,
            runs,
            threads,
            llama_cpp,
            hf_engine,
            progress=lambda m: typer.echo(m, err=True),
        )
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    save(result, out)
    typer.echo(format_table(result))
    typer.echo(f"saved {out}")
