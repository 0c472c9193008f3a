"""Library entry point of the completion pipeline (being moved here from server/completion.py)."""

from __future__ import annotations

from aigc_code.server.completion import CompletionOutcome, CompletionPipeline, CompletionRequest, Timing  # noqa: F401
from aigc_code.server.documents import Document


def complete_once(text: str, cursor: int, path: str, language: str, settings, backend, workspace=None,
                  invoked: bool = True) -> CompletionOutcome:
    """One completion at str index `cursor` of `text` through the very pipeline the LSP server runs."""
    from pathlib import Path

    doc = Document(Path(path).resolve().as_uri(), language, 1, text)
    return CompletionPipeline(lambda _s: backend).run(CompletionRequest(doc.snapshot(), path, cursor, settings,
                                                                        invoked=invoked))
