"""Server settings: defaults, overridden by `initializationOptions` and
`workspace/didChangeConfiguration`, both under the key `aigcCode` (camelCase names).

Unknown keys and values of the wrong type are reported (and ignored), never fatal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aigc_code.languages import LANGUAGES, canonical

SECTION = "aigcCode"

# Settings that need the backend (model) to be loaded again when they change.
BACKEND_KEYS = ("model", "adapter", "backend", "endpoint", "device", "fim_format", "api_key", "request_timeout_s")


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # local checkpoint dir (local) / served model name (openai)
    adapter: str | None = None
    backend: str = "local"  # local | openai
    endpoint: str | None = None  # OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1
    device: str | None = None
    fim_format: str = "starcoder"  # openai backend: FIM family name, "suffix", or a "{prefix}{suffix}" template
    api_key: str | None = None
    request_timeout_s: float = 30.0
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 0.95
    n: int = 1
    seed: int | None = None
    time_budget_ms: int | None = None
    debounce_ms: int = 0
    prefix_tokens: int = 1024
    suffix_tokens: int = 256
    context_tokens: int = 512
    enabled_languages: tuple[str, ...] = tuple(LANGUAGES)
    cache_size: int = 256
    token: str | None = field(default=None, repr=False)  # shared secret for TCP clients

    def backend_spec(self) -> tuple:
        return tuple(getattr(self, k) for k in BACKEND_KEYS)

    def public(self) -> dict[str, Any]:
        out = {_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("api_key", "token")}
        out["enabledLanguages"] = list(self.enabled_languages)
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


_BY_CAMEL = {_camel(f.name): f.name for f in dataclasses.fields(Settings)}
_INT_RANGES = {
    "max_new_tokens": (1, 4096),
    "n": (1, 16),
    "debounce_ms": (0, 5000),
    "prefix_tokens": (0, 32768),
    "suffix_tokens": (0, 32768),
    "context_tokens": (0, 32768),
    "cache_size": (0, 100000),
    "time_budget_ms": (1, 600000),
    "seed": (0, 2**31 - 1),
}


def _coerce(name: str, value: Any, current: Any) -> Any:
    """`value` converted for field `name`, or raise ValueError with a reason."""
    if name in ("model", "adapter", "endpoint", "device", "api_key", "token"):
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    if name in ("time_budget_ms", "seed") and value is None:
        return None
    if name == "backend":
        if value not in ("local", "openai"):
            raise ValueError("expected 'local' or 'openai'")
        return value
    if name == "fim_format":
        if not isinstance(value, str) or not value:
            raise ValueError("expected a FIM family name, 'suffix', or a template with {prefix} and {suffix}")
        return value
    if name == "enabled_languages":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of language ids")
        if "*" in value:
            return tuple(LANGUAGES)
        langs = []
        for v in value:
            c = canonical(v)
            if c is None:
                raise ValueError(f"unknown language {v!r} (known: {', '.join(LANGUAGES)})")
            langs.append(c)
        return tuple(dict.fromkeys(langs))
    if name in ("temperature", "top_p", "request_timeout_s"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        value = float(value)
        lo, hi = {"temperature": (0.0, 5.0), "top_p": (0.0, 1.0), "request_timeout_s": (0.1, 3600.0)}[name]
        if not lo <= value <= hi:
            raise ValueError(f"expected a number in [{lo}, {hi}]")
        return value
    if isinstance(current, int) or name in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError("expected an integer")
        lo, hi = _INT_RANGES.get(name, (0, 2**31))
        if not lo <= int(value) <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}]")
        return int(value)
    return value


def section(raw: Any) -> dict[str, Any] | None:
    """The `aigcCode` object inside a settings payload (or the payload itself if it is one)."""
    if not isinstance(raw, dict):
        return None
    if SECTION in raw:
        inner = raw[SECTION]
        return inner if isinstance(inner, dict) else None
    if any(k in _BY_CAMEL for k in raw):
        return raw
    return None


def merge(base: Settings, raw: dict[str, Any] | None) -> tuple[Settings, list[str]]:
    """`base` updated from camelCase `raw`; returns (settings, problems)."""
    if not raw:
        return base, []
    problems: list[str] = []
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        name = _BY_CAMEL.get(key)
        if name is None:
            problems.append(f"unknown setting {SECTION}.{key} (ignored)")
            continue
        try:
            changes[name] = _coerce(name, value, getattr(base, name))
        except ValueError as exc:
            problems.append(f"setting {SECTION}.{key}={value!r}: {exc} (ignored)")
    return dataclasses.replace(base, **changes), problems
