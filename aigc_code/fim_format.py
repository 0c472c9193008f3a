"""How a FIM prompt is laid out for a remote model: a FIM token family in prefix-suffix-middle or
suffix-first order, the server's own `suffix` field, or a template; and the layout a local
checkpoint (or a GGUF exported from one) declares, for `--fim-format auto`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from aigc_code.errors import BackendError
from aigc_code.fim import KNOWN_FIM, FimTokens, detect_fim


@dataclass(frozen=True)
class FimFormat:
    """How a FIM prompt is laid out for a remote model, and which strings end a completion.

    `spec`: a FIM family name (prefix-suffix-middle), `<family>-spm` (suffix first, the layout
    aigc-code's own models are asked in), `suffix` (the server's `suffix` field), or a custom
    template with `{prefix}` and `{suffix}` (its literal markers become stop strings).
    """

    spec: str
    tokens: FimTokens | None = None
    layout: str = "psm"  # psm | spm | suffix | template

    def prompt(self, prefix: str, suffix: str) -> tuple[str, str | None]:
        if self.layout == "suffix":
            return prefix, suffix
        if self.layout == "template":
            return self.spec.replace("{prefix}", prefix).replace("{suffix}", suffix), None
        assert self.tokens is not None
        layout = self.tokens.spm if self.layout == "spm" else self.tokens.psm
        return layout(prefix, suffix), None

    @property
    def stops(self) -> list[str]:
        if self.tokens is not None:
            return [self.tokens.prefix, self.tokens.suffix, self.tokens.middle, *self.tokens.eot]
        if self.layout == "template":
            parts = re.split(r"\{prefix\}|\{suffix\}", self.spec)
            return [p.strip() for p in parts if p.strip()]
        return []


def _family(name: str) -> FimTokens | None:
    return next((fim for fim in KNOWN_FIM if fim.family == name), None)


def parse_fim_format(spec: str) -> FimFormat:
    """`starcoder`, `starcoder-spm`, `qwen-psm`, `suffix`, or a `{prefix}`/`{suffix}` template."""
    if spec == "suffix":
        return FimFormat(spec, None, "suffix")
    if "{prefix}" in spec:
        return FimFormat(spec, None, "template")
    name, _, layout = spec.rpartition("-") if spec.endswith(("-spm", "-psm")) else (spec, "", "psm")
    tokens = _family(name)
    if tokens is None:
        known = sorted({f.family for f in KNOWN_FIM})
        raise BackendError(
            f"unknown FIM format {spec!r}: use one of {', '.join(known)} (add -spm for suffix-first), "
            "'auto', 'suffix', or a template with {prefix} and {suffix}"
        )
    return FimFormat(spec, tokens, layout)


def fim_prompt(fim_format: str, prefix: str, suffix: str) -> tuple[str, str | None]:
    """(prompt, suffix field or None) for a FIM format (see `parse_fim_format`)."""
    return parse_fim_format(fim_format).prompt(prefix, suffix)


def checkpoint_fim_format(path: str | None) -> str | None:
    """The FIM format a local checkpoint declares: its tokenizer's FIM family plus the layout in
    its `aigc_code.json` (a GGUF from `export_gguf` carries both in `<file>.aigc_code.json`)."""
    if not path:
        return None
    p = Path(path)
    try:
        if p.is_file():
            sidecar = json.loads(Path(str(p) + ".aigc_code.json").read_text(encoding="utf-8"))
            family, layout = sidecar.get("fim_family"), sidecar.get("fim_layout", "psm")
        elif (p / "tokenizer.json").is_file():
            tok = json.loads((p / "tokenizer.json").read_text(encoding="utf-8"))
            vocab = set((tok.get("model") or {}).get("vocab") or {}) | {
                t.get("content") for t in tok.get("added_tokens", [])
            }
            fim = detect_fim(vocab)
            family = fim.family if fim else None
            options = (
                json.loads((p / "aigc_code.json").read_text(encoding="utf-8"))
                if (p / "aigc_code.json").is_file()
                else {}
            )
            layout = options.get("fim_layout", "psm")
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return f"{family}-{layout}" if family and layout in ("psm", "spm") else None
