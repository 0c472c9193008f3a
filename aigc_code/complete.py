"""`aigc-code complete`: one completion at a position in a file, outside any editor."""

from __future__ import annotations

from pathlib import Path

from aigc_code.errors import AigcCodeError
from aigc_code.languages import language_for_path

MAX_FILE_BYTES = 5 * 1024 * 1024


def read_source(file: Path) -> str:
    if not file.is_file():
        raise AigcCodeError(f"{file} is not a file")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise AigcCodeError(f"{file} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    data = file.read_bytes()
    if b"\0" in data[:8192]:
        raise AigcCodeError(f"{file} looks binary")
    return data.decode("utf-8", errors="replace")


def split_at(text: str, line: int, column: int) -> tuple[str, str]:
    """(prefix, suffix) around a 1-based line/column position."""
    lines = text.splitlines(keepends=True) or [""]
    if text.endswith("\n"):
        lines.append("")
    if not 1 <= line <= len(lines):
        raise AigcCodeError(f"line {line} is out of range (the file has {len(lines)} lines)")
    content = lines[line - 1].rstrip("\r\n")
    if not 1 <= column <= len(content) + 1:
        raise AigcCodeError(f"column {column} is out of range (line {line} has {len(content)} characters)")
    offset = sum(len(x) for x in lines[: line - 1]) + column - 1
    return text[:offset], text[offset:]


def complete_file(file: Path, line: int, column: int, model=None, adapter=None, device=None,
                  max_new_tokens: int = 64, temperature: float = 0.0, n: int = 1) -> dict:
    """Run the LSP server's own pipeline (context -> prompt -> model -> post-process) once, offline."""
    from aigc_code.server.backend import backend_from_settings
    from aigc_code.server.completion import CompletionPipeline, CompletionRequest
    from aigc_code.server.documents import Document
    from aigc_code.server.settings import Settings

    text = read_source(file)
    prefix, _ = split_at(text, line, column)
    settings = Settings(model=model, adapter=adapter, device=device, max_new_tokens=max_new_tokens,
                        temperature=temperature, n=n, seed=0 if temperature > 0 else None)
    backend = backend_from_settings(settings)
    doc = Document(file.resolve().as_uri(), language_for_path(file) or "", 1, text)
    outcome = CompletionPipeline(lambda _settings: backend).run(
        CompletionRequest(doc.snapshot(), str(file), len(prefix), settings, invoked=True))
    timing = outcome.timing
    return {
        "file": str(file),
        "line": line,
        "column": column,
        "language": doc.language,
        "mode": timing.mode,
        "backend": backend.describe(),
        "completion": outcome.suggestions[0].text if outcome.suggestions else "",
        "candidates": [{"text": s.text, "mean_logprob": round(s.score, 4), "finish_reason": s.finish_reason}
                       for s in outcome.suggestions],
        "timings": {"prompt_tokens": timing.prompt_tokens, "generated_tokens": timing.generated_tokens,
                    "context_ms": round(timing.context_ms, 1), "model_prompt_ms": round(timing.model_prompt_ms, 1),
                    "model_ms": round(timing.model_ms, 1), "postprocess_ms": round(timing.postprocess_ms, 1)},
    }
