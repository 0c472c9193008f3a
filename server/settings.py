"""LSP side of the settings: find the `aigcCode` object in `initializationOptions` or a
`workspace/didChangeConfiguration` payload. The settings themselves are declared once in
`aigc_code.settings`."""

from __future__ import annotations

from typing import Any

from aigc_code.settings import BACKEND_KEYS, BY_CAMEL, SECTION, Settings, merge

__all__ = ["BACKEND_KEYS", "SECTION", "Settings", "merge", "section"]


def section(raw: Any) -> dict[str, Any] | None:
    """The `aigcCode` object inside a settings payload (or the payload itself if it is one)."""
    if not isinstance(raw, dict):
        return None
    if SECTION in raw:
        inner = raw[SECTION]
        return inner if isinstance(inner, dict) else None
    if any(k in BY_CAMEL for k in raw):
        return raw
    return None
