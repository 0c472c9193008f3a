"""Where completions come from: the local engine (`LocalBackend`), or an OpenAI-compatible
`/v1/completions` server (vLLM, TGI, llama.cpp server, ...: `aigc_code.remote.OpenAIBackend`).

Both take a FIM prefix and suffix and return `GenerationResult` (candidates with token
log-probabilities and timings); both honour a `CancellationToken` set from another thread.
"""

from __future__ import annotations

from typing import Protocol

from aigc_code.budget import TokenCounter
from aigc_code.errors import BackendError
from aigc_code.generation import CancellationToken, GenerationConfig, GenerationResult
from aigc_code.remote import OpenAIBackend


class Backend(Protocol):
    kind: str
    max_context: int | None  # prompt + generation tokens the model can take, None if unknown
    tokens: TokenCounter

    def complete(
        self, prefix: str, suffix: str, request: GenerationConfig, cancel: CancellationToken | None = None
    ) -> GenerationResult: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Local engine


class LocalBackend:
    kind = "local"

    def __init__(
        self,
        model: str | None = None,
        adapter: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        quantize: str | None = None,
    ):
        from aigc_code.engine import load_engine

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.engine = load_engine(model=model, adapter=adapter, device=device, quantize=quantize)
        self.tokens: TokenCounter = self.engine
        self.max_context = getattr(self.engine, "max_context", None)

    def complete(
        self,
        prefix: str,
        suffix: str,
        request: GenerationConfig,
        cancel: CancellationToken | None = None,
        files: list[tuple[str, str]] | None = None,
        path: str = "",
    ) -> GenerationResult:
        return self.engine.complete(prefix, suffix, config=request, cancel=cancel, files=files or (), path=path)

    @property
    def repo_format(self) -> bool:
        """Whether other files go to the model in its own repository format (Qwen2.5-Coder, StarCoder2)."""
        return self.engine.repo is not None

    def score(self, prefix: str, suffix: str, texts: list[str], cancel: CancellationToken | None = None) -> list[float]:
        """Mean token log-probability of each text as the continuation of this prompt (choice rule
        `likelihood`); a remote backend has no such method."""
        from aigc_code.scoring import score_continuations

        return score_continuations(self.engine, prefix, suffix, texts, cancel)

    def describe(self) -> str:
        fim = self.engine.fim.family if getattr(self.engine, "fim", None) else "no FIM tokens (prefix only)"
        return f"local model {self.engine.name} ({fim}, {self.max_context} tokens) on {self.engine.device}"

    def close(self) -> None:
        pass


def make_backend(
    kind: str = "local",
    model: str | None = None,
    adapter: str | None = None,
    endpoint: str | None = None,
    device: str | None = None,
    fim_format: str = "starcoder",
    api_key: str | None = None,
    timeout_s: float = 30.0,
    max_context: int | None = None,
    threads: int | None = None,
    quantize: str | None = None,
) -> Backend:
    """Build a backend; raises ModelLoadError / BackendError with a message a user can act on."""
    if kind == "local":
        return LocalBackend(model=model, adapter=adapter, device=device, threads=threads, quantize=quantize)
    if kind == "openai":
        return OpenAIBackend(
            endpoint or "",
            model=model,
            fim_format=fim_format,
            api_key=api_key,
            timeout_s=timeout_s,
            max_context=max_context,
        )
    raise BackendError(f"unknown backend {kind!r}: use 'local' or 'openai'")
