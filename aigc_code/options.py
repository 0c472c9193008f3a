"""Command-line options shared by every command that loads a model or talks to a backend, declared
once so that names, help texts and checks are the same everywhere (`complete`, `serve`, `eval`,
`finetune`, `bench`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Local Hugging Face checkpoint directory (default: $AIGC_CODE_MODEL, else the embedded "
        "default model); with --backend openai, the served model name.",
    ),
]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="peft LoRA adapter directory to apply on top.")]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto (default: CUDA if present), cpu, cuda, cuda:1.")
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1, help="CPU threads for the model (default: torch's, all cores; or $AIGC_CODE_THREADS)."
    ),
]
QuantizeOpt = Annotated[
    Optional[str], typer.Option("--quantize", help="int8: dynamic int8 quantization of the linear layers (CPU only).")
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="local (in-process engine) or openai (an OpenAI-compatible /v1/completions server: vLLM, TGI, llama.cpp).",
    ),
]
EndpointOpt = Annotated[
    Optional[str],
    typer.Option("--endpoint", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1 (--backend openai)."),
]
FimFormatOpt = Annotated[
    str,
    typer.Option(
        "--fim-format",
        help="--backend openai: 'auto' (the layout the served checkpoint declares), a FIM token family "
        "(starcoder, qwen, deepseek, codellama, codegemma; '<family>-spm' for suffix-first), 'suffix' (the server's "
        "prompt+suffix fields) or a template with {prefix} and {suffix}.",
    ),
]
MaxContextOpt = Annotated[
    Optional[int],
    typer.Option(
        "--max-context",
        min=16,
        help="--backend openai: prompt + generation tokens the served model takes, when the server cannot be "
        "asked (or $AIGC_CODE_MAX_CONTEXT).",
    ),
]


def check_quantize(value: str | None) -> str | None:
    if value not in (None, "int8"):
        raise typer.BadParameter(
            f"unknown quantization {value!r}: the supported value is int8", param_hint="--quantize"
        )
    return value
