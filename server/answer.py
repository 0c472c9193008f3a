"""Completion requests answered by the generation worker itself.

The pipeline runs in the server's one worker thread. Handing its outcome back to the event loop
to render and send would cost a loop wake-up and pygls' response machinery (a Task, a done
callback, cattrs unstructuring the lsprotocol result): ~0.6 ms of the ~4 ms the server adds to a
~35 ms completion (docs/benchmarks.md, LSP overhead). So the worker renders the result as plain
JSON values and writes the response itself: a stdio frame is one write under `FrameWriter`'s
lock; any other transport is written on the loop. `$/cancelRequest` reaches the request through
`Pending` (the server's table of them, not pygls', which its shutdown iterates on the loop while
the worker would be removing entries), and the reply to a cancelled request is the
RequestCancelled error pygls would send.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.io_ import StdoutWriter

from aigc_code.backends import CancellationToken
from aigc_code.brackets import replaced_after_cursor

from .transport import REQUEST_CANCELLED, error_message

if TYPE_CHECKING:  # pragma: no cover
    from aigc_code.pipeline import CompletionOutcome, CompletionRequest


class FrameWriter(StdoutWriter):
    """pygls' stdout writer, safe to call from any thread: a frame is written and flushed whole."""

    def __init__(self, stdout):
        super().__init__(stdout)
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            super().write(data)

    def write_message(self, payload: dict, on_write: Callable[[float], None] | None = None) -> bool:
        """Write one message of plain JSON data at once; False when it is not plain data (pygls'
        own path serializes lsprotocol objects). `on_write` gets time.perf_counter() as the frame
        goes to the pipe (before the write: whoever reads the answer then sees what it set)."""
        try:
            body = json.dumps(payload).encode()
        except (TypeError, ValueError):
            return False
        data = b"Content-Length: %d\r\n\r\n" % len(body) + body
        if on_write is not None:
            on_write(time.perf_counter())
        self.write(data)
        return True


class Pending:
    """A completion request on its way to the worker's answer; what `$/cancelRequest` cancels."""

    def __init__(self, msg_id: Any, method: str, params, token: CancellationToken, received: float):
        self.msg_id, self.method, self.params = msg_id, method, params
        self.uri: str = params.text_document.uri
        self.token = token
        self.received = received  # perf_counter when the request was read
        self.cancelled = False  # by the client, not superseded: the answer is RequestCancelled
        self._answered = False
        self._lock = threading.Lock()

    def cancel(self) -> bool:
        self.cancelled = True
        self.token.cancel()
        return True

    def claim(self) -> bool:
        """True once: the caller sends the one answer (the worker's, or a cancellation's at once)."""
        with self._lock:
            if self._answered:
                return False
            self._answered = True
            return True


def response(msg_id: Any, result: Any) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def cancelled_response(msg_id: Any) -> dict:
    return error_message(msg_id, REQUEST_CANCELLED, f'Request with id "{msg_id}" is canceled')


def line_after_cursor(text: str, index: int) -> str:
    end = text.find("\n", index)
    return text[index : end if end >= 0 else len(text)].rstrip("\r")


def replace_range(line: int, character: int, after_cursor: str, text: str) -> dict:
    """The cursor, extended over the auto-closed brackets/quotes the suggestion closes itself
    (ASCII: one unit each), as an LSP Range."""
    end = character + replaced_after_cursor(after_cursor, text)
    return {"start": {"line": line, "character": character}, "end": {"line": line, "character": end}}


def inline_result(request: CompletionRequest | None, outcome: CompletionOutcome | None, position) -> dict:
    """`textDocument/inlineCompletion`'s InlineCompletionList, as JSON values."""
    if request is None or outcome is None or not outcome.suggestions:
        return {"items": []}
    after = line_after_cursor(request.doc.text, request.cursor)
    line, character = position.line, position.character
    return {
        "items": [
            {"insertText": s.text, "range": replace_range(line, character, after, s.text)} for s in outcome.suggestions
        ]
    }


def _label(text: str) -> str:
    line = next((ln.strip() for ln in text.split("\n") if ln.strip()), text.strip())
    return line if len(line) <= 60 else line[:59] + "…"


def _documentation(capabilities: types.ClientCapabilities, language: str, text: str) -> types.MarkupContent | str:
    caps = capabilities.text_document
    item = caps.completion.completion_item if caps is not None and caps.completion is not None else None
    formats = (item.documentation_format if item is not None else None) or []
    if types.MarkupKind.Markdown in formats:
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```{language}\n{text}\n```")
    return text


def completion_list(
    request: CompletionRequest | None,
    outcome: CompletionOutcome | None,
    position,
    capabilities: types.ClientCapabilities,
    section: str,
) -> types.CompletionList:
    """The `textDocument/completion` fallback: one item carrying the best suggestion as a textEdit."""
    if request is None or outcome is None or not outcome.suggestions:
        return types.CompletionList(is_incomplete=True, items=[])
    best = outcome.suggestions[0]
    after = line_after_cursor(request.doc.text, request.cursor)
    start = types.Position(line=position.line, character=position.character)
    end = types.Position(line=position.line, character=position.character + replaced_after_cursor(after, best.text))
    item = types.CompletionItem(
        label=_label(best.text),
        kind=types.CompletionItemKind.Snippet,
        detail="aigc-code",
        documentation=_documentation(capabilities, request.doc.language or "", best.text),
        sort_text="\u0000",
        filter_text=None,
        preselect=True,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start=start, end=end), new_text=best.text),
        data={section: outcome.timing.as_dict()},
    )
    return types.CompletionList(is_incomplete=True, items=[item])
