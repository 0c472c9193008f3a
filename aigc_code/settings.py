"""Completion settings, declared once.

Each field of `Settings` carries its schema in its metadata (description, range or choices,
editor scope). From that one declaration come: validation of camelCase payloads (`merge`, used by
the LSP server for `initializationOptions` and `workspace/didChangeConfiguration`), the VS Code
`contributes.configuration` block (`vscode_configuration`, checked against
`editors/vscode/package.json` in the tests), the Neovim defaults and the settings table in the
docs (`markdown_table`). Run `python -m aigc_code.settings --vscode` / `--markdown` to print them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from aigc_code.languages import LANGUAGES, canonical

SECTION = "aigcCode"


def _meta(
    doc: str,
    kind: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple = (),
    scope: str = "window",
    backend: bool = False,
    secret: bool = False,
) -> dict[str, Any]:
    """Schema of one setting. `kind`: str, int, float, bool, languages. `scope` is VS Code's: never
    `machine` / `machine-overridable`, which remote windows (code-server, Remote-SSH, WSL) ignore in
    User settings."""
    return {
        "doc": doc,
        "kind": kind,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "scope": scope,
        "backend": backend,
        "secret": secret,
    }


def _f(default: Any, doc: str, kind: str, **kw: Any) -> Any:
    return field(default=default, metadata=_meta(doc, kind, **kw))


@dataclass(frozen=True)
class Settings:
    model: str | None = _f(
        None,
        "Local checkpoint directory (local backend) or the served model name (openai).",
        "str",
        backend=True,
    )
    adapter: str | None = _f(None, "LoRA adapter directory from `aigc-code finetune`.", "str", backend=True)
    backend: str = _f(
        "local",
        "Where completions come from: the local engine or an OpenAI-compatible server.",
        "str",
        choices=("local", "openai"),
        backend=True,
    )
    endpoint: str | None = _f(
        None, "OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1 (openai backend).", "str", backend=True
    )
    device: str | None = _f(None, "auto (default: CUDA if present), cpu, cuda, cuda:1.", "str", backend=True)
    fim_format: str = _f(
        "starcoder",
        "openai backend: FIM family name, 'suffix', or a template with {prefix} and {suffix}.",
        "str",
        backend=True,
    )
    api_key: str | None = _f(None, "Bearer token for the openai backend.", "str", backend=True, secret=True)
    request_timeout_s: float = _f(
        30.0, "Seconds before a remote request is abandoned.", "float", lo=0.1, hi=3600.0, backend=True
    )
    max_context: int | None = _f(
        None,
        "openai backend: prompt + generation tokens the served model takes, when the "
        "server cannot be asked (llama.cpp /props, vLLM /v1/models).",
        "int",
        lo=16,
        hi=1_048_576,
        backend=True,
    )
    threads: int | None = _f(
        None,
        "CPU threads for the local engine (default: torch's, all cores; or $AIGC_CODE_THREADS).",
        "int",
        lo=1,
        hi=1024,
        backend=True,
    )
    quantize: str | None = _f(
        None,
        "Local engine on CPU: int8 (dynamic quantization of the linear layers).",
        "str",
        choices=("int8",),
        backend=True,
    )
    max_new_tokens: int = _f(
        64, "Most tokens generated for a multi-line suggestion (one line: at most 48).", "int", lo=1, hi=4096
    )
    temperature: float = _f(0.0, "Sampling temperature; 0 is greedy.", "float", lo=0.0, hi=5.0)
    top_p: float = _f(0.95, "Nucleus sampling mass.", "float", lo=0.0, hi=1.0)
    n: int = _f(1, "Candidates generated per request.", "int", lo=1, hi=16)
    seed: int | None = _f(None, "Random seed for sampling (unset: random).", "int", lo=0, hi=2_147_483_647)
    time_budget_ms: int | None = _f(
        None, "Stop generating after this many milliseconds (unset: no limit).", "int", lo=1, hi=600000
    )
    debounce_ms: int = _f(0, "Server-side wait before generating, in milliseconds.", "int", lo=0, hi=5000)
    prefix_tokens: int = _f(1024, "Tokens of text before the cursor in the prompt.", "int", lo=0, hi=32768)
    suffix_tokens: int = _f(256, "Tokens of text after the cursor in the prompt.", "int", lo=0, hi=32768)
    context_tokens: int = _f(
        512, "Tokens of extra context: imports, signatures, snippets of other files.", "int", lo=0, hi=32768
    )
    enabled_languages: tuple[str, ...] = _f(tuple(LANGUAGES), "Languages to complete ('*': all).", "languages")
    cache_size: int = _f(256, "Suggestions remembered for repeated or typed-through positions.", "int", lo=0, hi=100000)
    workspace_index: bool = _f(
        True,
        "Index the workspace folders (git ls-files, else a .gitignore-aware walk) "
        "for copy candidates and cross-file context.",
        "bool",
    )
    index_context: bool = _f(
        True,
        "Put chunks of other workspace files, retrieved by similarity to the code around the cursor, into the prompt.",
        "bool",
    )
    copy_candidates: bool = _f(True, "Offer continuations found elsewhere in the workspace as candidates.", "bool")
    choice_rule: str = _f(
        "confident",
        "How a copy candidate competes with the model's: copy-first, confident (a copy whose occurrences agree "
        "goes first), likelihood (the model scores both; with --backend openai, which cannot score, copy-first "
        "applies) or model-first.",
        "str",
        choices=("copy-first", "confident", "likelihood", "model-first"),
    )
    index_max_files: int = _f(20000, "Most files the workspace index holds.", "int", lo=0, hi=1_000_000)
    index_max_file_kb: int = _f(1000, "Files larger than this (KiB) are not indexed.", "int", lo=1, hi=100_000)
    index_max_total_mb: int = _f(
        60,
        "Most source text (MiB) the workspace index holds (it takes about 3x that in memory).",
        "int",
        lo=1,
        hi=10_000,
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "Shared secret a TCP client must send in initializationOptions.",
            "str",
            secret=True,
        ),
    )

    def backend_spec(self) -> tuple:
        return tuple(getattr(self, k) for k in BACKEND_KEYS)

    def public(self) -> dict[str, Any]:
        out = {camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata["secret"]}
        out["enabledLanguages"] = list(self.enabled_languages)
        return out


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Settings that need the backend (model) to be loaded again when they change.
BACKEND_KEYS = tuple(name for name, f in FIELDS.items() if f.metadata["backend"])


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


BY_CAMEL = {camel(name): name for name in FIELDS}


def _languages(value: Any) -> tuple[str, ...]:
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


def _number(value: Any, kind: str, lo: float | None, hi: float | None) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number" if kind == "float" else "expected an integer")
    if kind == "int":
        if int(value) != value:
            raise ValueError("expected an integer")
        value = int(value)
        lo, hi = (None if lo is None else int(lo)), (None if hi is None else int(hi))
    else:
        value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        what = "an integer" if kind == "int" else "a number"
        raise ValueError(f"expected {what} in [{lo}, {hi}]")
    return value


def coerce(name: str, value: Any) -> Any:
    """`value` converted for setting `name` by its schema, or ValueError with a reason."""
    meta = FIELDS[name].metadata
    kind = meta["kind"]
    optional = FIELDS[name].default is None
    if optional and (value is None or value == ""):
        return None
    if kind == "languages":
        return _languages(value)
    if kind in ("int", "float"):
        return _number(value, kind, meta["lo"], meta["hi"])
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string" if not optional else "expected a string")
    if meta["choices"] and value not in meta["choices"]:
        raise ValueError("expected " + " or ".join(repr(c) for c in meta["choices"]))
    return value


def merge(base: Settings, raw: dict[str, Any] | None) -> tuple[Settings, list[str]]:
    """`base` updated from camelCase `raw`; returns (settings, problems). Bad keys and values are
    reported and ignored, never fatal."""
    if not raw:
        return base, []
    problems: list[str] = []
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        name = BY_CAMEL.get(key)
        if name is None:
            problems.append(f"unknown setting {SECTION}.{key} (ignored)")
            continue
        try:
            changes[name] = coerce(name, value)
        except ValueError as exc:
            problems.append(f"setting {SECTION}.{key}={value!r}: {exc} (ignored)")
    return dataclasses.replace(base, **changes), problems


# --------------------------------------------------------------------------------------------
# Generated views of the schema


_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "languages": "array"}


def json_property(name: str) -> dict[str, Any]:
    """The VS Code `contributes.configuration` property of one setting."""
    f = FIELDS[name]
    meta = f.metadata
    default = list(f.default) if isinstance(f.default, tuple) else f.default
    kind = _JSON_TYPES[meta["kind"]]
    prop: dict[str, Any] = {
        "type": [kind, "null"] if f.default is None else kind,
        "default": default,
        "description": meta["doc"],
        "scope": meta["scope"],
    }
    if meta["choices"]:
        prop["enum"] = list(meta["choices"])
    if meta["lo"] is not None:
        prop["minimum"] = meta["lo"]
    if meta["hi"] is not None:
        prop["maximum"] = meta["hi"]
    if meta["kind"] == "languages":
        prop["items"] = {"type": "string"}
    return prop


def vscode_configuration() -> dict[str, dict[str, Any]]:
    """`aigcCode.*` properties for package.json (the server's settings; the token stays out)."""
    return {f"{SECTION}.{camel(name)}": json_property(name) for name in FIELDS if name != "token"}


def markdown_table() -> str:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for name, f in FIELDS.items():
        if name == "token":
            continue
        default = "all" if name == "enabled_languages" else json.dumps(f.default)
        rows.append(f"| `{SECTION}.{camel(name)}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    if "--markdown" in sys.argv:
        print(markdown_table())
    else:
        print(json.dumps(vscode_configuration(), indent=2))
