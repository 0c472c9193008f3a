"""The two messages of every keystroke — `textDocument/didChange` and the completion request that
follows it — read without cattrs.

pygls structures every message into lsprotocol's attrs classes through cattrs' generated
converters (~0.1 ms a message on this machine when the process has been idle between
keystrokes). For these two the shape is small and fixed: when it is exactly what the spec says,
the message is built here as plain attribute objects; anything else (a missing field, a wrong
type, a negative position) returns None and goes through cattrs, which gives the precise
-32602 error.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lsprotocol import types

_UINT_MAX = 2**31 - 1


def _uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _UINT_MAX


def _position(raw: Any) -> SimpleNamespace | None:
    if type(raw) is not dict or not (_uint(raw.get("line")) and _uint(raw.get("character"))):
        return None
    return SimpleNamespace(line=raw["line"], character=raw["character"])


def _range(raw: Any) -> SimpleNamespace | None:
    if type(raw) is not dict:
        return None
    start, end = _position(raw.get("start")), _position(raw.get("end"))
    return None if start is None or end is None else SimpleNamespace(start=start, end=end)


def _change(raw: Any) -> SimpleNamespace | None:
    if type(raw) is not dict or type(raw.get("text")) is not str:
        return None
    if "range" not in raw:
        return SimpleNamespace(text=raw["text"])  # the whole document
    rng = _range(raw["range"])
    if rng is None or ("rangeLength" in raw and not _uint(raw["rangeLength"])):
        return None
    return SimpleNamespace(range=rng, text=raw["text"], range_length=raw.get("rangeLength"))


def _did_change(params: Any) -> SimpleNamespace | None:
    doc, changes = params.get("textDocument"), params.get("contentChanges")
    if type(doc) is not dict or type(doc.get("uri")) is not str or type(doc.get("version")) is not int:
        return None
    if type(changes) is not list:
        return None
    parsed = [_change(c) for c in changes]
    if any(c is None for c in parsed):
        return None
    return SimpleNamespace(
        text_document=SimpleNamespace(uri=doc["uri"], version=doc["version"]), content_changes=parsed
    )


def _request(params: Any, kinds: tuple[int, ...], context_keys: frozenset[str]) -> SimpleNamespace | None:
    doc, position, context = params.get("textDocument"), _position(params.get("position")), params.get("context")
    if type(doc) is not dict or type(doc.get("uri")) is not str or position is None:
        return None
    if context is not None:
        kind = context.get("triggerKind") if type(context) is dict else None
        if type(kind) is not int or kind not in kinds or not context_keys.issuperset(context):
            return None  # selectedCompletionInfo and the like: cattrs reads those
        trigger = context.get("triggerCharacter")
        if trigger is not None and type(trigger) is not str:
            return None
        context = SimpleNamespace(trigger_kind=kind, trigger_character=trigger)
    return SimpleNamespace(text_document=SimpleNamespace(uri=doc["uri"]), position=position, context=context)


def _inline_completion(params: Any) -> SimpleNamespace | None:
    if "context" not in params:
        return None  # required by the spec: cattrs says so
    return _request(params, (1, 2), frozenset({"triggerKind"}))


def _completion(params: Any) -> SimpleNamespace | None:
    return _request(params, (1, 2, 3), frozenset({"triggerKind", "triggerCharacter"}))


_READERS = {
    types.TEXT_DOCUMENT_DID_CHANGE: _did_change,
    types.TEXT_DOCUMENT_INLINE_COMPLETION: _inline_completion,
    types.TEXT_DOCUMENT_COMPLETION: _completion,
}


def read_keystroke_message(data: dict) -> SimpleNamespace | None:
    """The message as an object with `jsonrpc`, `method`, `params` (and `id` for a request), or
    None when it is not one of these messages in exactly the expected shape."""
    method, params = data.get("method"), data.get("params")
    reader = _READERS.get(method)
    if reader is None or type(params) is not dict or data.get("jsonrpc") != "2.0":
        return None
    is_request = method != types.TEXT_DOCUMENT_DID_CHANGE
    if is_request != ("id" in data):
        return None
    structured = reader(params)
    if structured is None:
        return None
    message = SimpleNamespace(jsonrpc="2.0", method=method, params=structured)
    if is_request:
        message.id = data["id"]
    return message
