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


def repository_root(file: Path) -> Path | None:
    """The git work tree that holds `file`, if any (read-only: `git rev-parse`)."""
    import os
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(file.parent), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def workspace_for(file: Path, settings, root: Path | None = None):
    """A workspace index over the file's repository (`root`, default its git root), built now; None
    outside a repository or when the setting is off."""
    if not settings.workspace_index:
        return None
    root = root or repository_root(file.resolve())
    if root is None:
        return None
    from aigc_code.workspace import build_index

    return build_index([root], settings)


def _shown_path(file: Path, root: Path | None) -> str:
    """The path the model sees: relative to the repository, as the server shows a workspace file."""
    from aigc_code.workspace.files import path_in_roots

    shown = path_in_roots(file.resolve(), [root]) if root is not None else None
    return shown or str(file)


def complete_file(file: Path, line: int, column: int, settings=None, workspace: bool = True) -> dict:
    """Run the LSP server's own pipeline (context -> prompt -> model -> post-process) once, offline,
    with the file's repository indexed as the server would index its workspace."""
    from aigc_code.pipeline import complete_once
    from aigc_code.server.backend import backend_from_settings
    from aigc_code.settings import Settings

    settings = settings or Settings(temperature=0.0)
    language = language_for_path(file)
    if language is None:
        raise AigcCodeError(f"{file}: not a language aigc-code completes (by its extension)")
    text = read_source(file)
    prefix, _ = split_at(text, line, column)
    backend = backend_from_settings(settings)
    root = repository_root(file.resolve())
    index = workspace_for(file, settings, root) if workspace else None
    shown = _shown_path(file, root)
    outcome = complete_once(
        text, len(prefix), str(file), language, settings, backend, workspace=index, shown_path=shown
    )
    timing = outcome.timing
    return {
        "file": str(file),
        "line": line,
        "column": column,
        "language": language,
        "mode": timing.mode,
        "backend": backend.describe(),
        "completion": outcome.suggestions[0].text if outcome.suggestions else "",
        "chosen": timing.chosen,
        "candidates": [
            {"text": s.text, "mean_logprob": round(s.score, 4), "finish_reason": s.finish_reason}
            for s in outcome.suggestions
        ],
        "timings": {
            "prompt_tokens": timing.prompt_tokens,
            "generated_tokens": timing.generated_tokens,
            "context_ms": round(timing.context_ms, 1),
            "retrieval_ms": round(timing.retrieval_ms, 1),
            "model_prompt_ms": round(timing.model_prompt_ms, 1),
            "model_ms": round(timing.model_ms, 1),
            "postprocess_ms": round(timing.postprocess_ms, 1),
        },
    }
