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
    from aigc_code.engine import GenerationConfig, load_engine

    text = read_source(file)
    prefix, suffix = split_at(text, line, column)
    engine = load_engine(model, adapter, device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                              seed=0 if temperature > 0 else None)
    result = engine.complete(prefix, suffix, config)
    language = language_for_path(file)
    ranked = sorted({c.text: c for c in result.candidates if c.text.strip()}.values(), key=lambda c: -c.mean_logprob)
    return {
        "file": str(file),
        "line": line,
        "column": column,
        "language": language,
        "model": engine.name,
        "completion": ranked[0].text if ranked else "",
        "candidates": [{"text": c.text, "mean_logprob": round(c.mean_logprob, 4), "finish_reason": c.finish_reason}
                       for c in ranked],
        "timings": {"prompt_tokens": result.prompt_tokens, "generated_tokens": result.generated_tokens,
                    "prompt_ms": round(result.prompt_ms, 1), "total_ms": round(result.total_ms, 1),
                    "device": str(engine.device)},
    }
