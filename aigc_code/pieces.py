"""Token ids and counts piece by piece: what the prompt builder and the engine pay on every keystroke.

A byte-level BPE tokenizer first splits text with one regular expression (GPT-2's, or the `Split`
pattern Qwen2 and Llama-3 put before a regex-free ByteLevel) and runs BPE on each piece alone, so a
text's ids are its pieces' ids one after another. The prompt builder counts the cursor's line after
each keystroke and the engine encodes the prompt's windows: only the piece being typed is new, the
others are remembered. A fresh call into the Rust tokenizer costs ~0.25 ms for one short line after
the model has run (its regex and vocabulary are out of the CPU caches; ~0.05 ms warm), ~0.9 ms for
a request's prompt; the split here and the lookups ~0.07 ms for the line (docs/benchmarks.md, 6g).

`PieceCache` answers only when the split is provably the tokenizer's own: printable ASCII (plus tab
and line breaks, where every regex engine's classes agree), no added token's text in it, at most
MAX_CHARS long (a long text is encoded once, not per keystroke); otherwise it returns None and the
caller encodes as before. Tokenizers of any other shape (another normalizer, several splits, BPE
dropout, not BPE) get no cache at all.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import regex

# GPT-2's split, as tokenizers' ByteLevel pre-tokenizer writes it with use_regex=True
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]*")  # where \s, \p{L}, \p{N} mean the same to every engine
_IDENTITY_ON_ASCII = {None, "NFC", "NFKC", "NFD", "NFKD"}
MAX_PIECES = 1 << 16  # remembered pieces; the memo starts over beyond this
MAX_CHARS = 1 << 14


@lru_cache(maxsize=1)
def _ascii_to_byte_level() -> dict[int, str]:
    """str.translate table: an ASCII character -> its byte-level BPE character (space -> 'Ġ')."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {b: ch for b, ch in bytes_to_unicode().items() if b < 128}


def _state(component) -> dict | None:
    return json.loads(component.__getstate__()) if component is not None else None


def split_pattern(backend) -> str | None:
    """The one regular expression `backend` (a `tokenizers.Tokenizer`) splits text with before BPE,
    or None when its pre-tokenization is anything else."""
    pre = _state(backend.pre_tokenizer)
    if pre is None:
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_SPLIT if pre.get("use_regex") and not pre.get("add_prefix_space") else None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) != 2:
        return None
    split, level = steps
    pattern = split.get("pattern", {}).get("Regex") if split.get("type") == "Split" else None
    if split.get("behavior") != "Isolated" or split.get("invert") or not isinstance(pattern, str):
        return None
    if level.get("type") != "ByteLevel" or level.get("use_regex") or level.get("add_prefix_space"):
        return None
    return pattern


def _plain_bpe(backend) -> bool:
    normalizer = _state(backend.normalizer)
    if (normalizer or {}).get("type") not in _IDENTITY_ON_ASCII:
        return False
    return type(backend.model).__name__ == "BPE" and not backend.model.dropout


class PieceCache:
    """`backend`'s encoding without special tokens, assembled from remembered pieces."""

    def __init__(self, backend, pattern: str, added: list[str]):
        self._model = backend.model
        self._split = regex.compile(pattern)
        self._table = _ascii_to_byte_level()
        self._added: dict[str, list[str]] = {}  # first character -> added tokens' texts
        for text in added:
            if text:
                self._added.setdefault(text[0], []).append(text)
        self._pieces: dict[str, tuple[int, ...]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer) -> PieceCache | None:
        """A cache for a transformers fast tokenizer whose encoding it reproduces, else None."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        try:
            pattern = split_pattern(backend)
            if pattern is None or not _plain_bpe(backend):
                return None
            added = [getattr(t, "content", str(t)) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
            return cls(backend, pattern, added)
        except (AttributeError, TypeError, ValueError, regex.error):  # an unusual tokenizer: encode instead
            return None

    def _has_added(self, text: str) -> bool:
        for ch in self._added.keys() & set(text):
            if any(t in text for t in self._added[ch]):
                return True
        return False

    def _ids(self, piece: str) -> tuple[int, ...]:
        ids = self._pieces.get(piece)
        if ids is None:
            if len(self._pieces) >= MAX_PIECES:
                self._pieces.clear()
            ids = self._pieces[piece] = tuple(t.id for t in self._model.tokenize(piece.translate(self._table)))
        return ids

    def _split_text(self, text: str) -> list[str] | None:
        if len(text) > MAX_CHARS or not _PLAIN.fullmatch(text) or self._has_added(text):
            return None
        return self._split.findall(text)

    def encode(self, text: str) -> list[int] | None:
        """Token ids of `text` (encoded without special tokens), or None: encode it instead."""
        pieces = self._split_text(text)
        if pieces is None:
            return None
        out: list[int] = []
        for piece in pieces:
            out += self._ids(piece)
        return out

    def count(self, text: str) -> int | None:
        """Tokens in `text` (encoded without special tokens), or None: encode it instead."""
        pieces = self._split_text(text)
        return None if pieces is None else sum(len(self._ids(piece)) for piece in pieces)
