"""Tokenizer facts the engine and finetuning share: control tokens, BOS, plain-text encoding, heal index.

- Control tokens: added tokens that steer a model (`<|endoftext|>`, FIM markers, `<think>`, `<tool_call>`),
  special-flagged or not. They are never produced by encoding the user's text: a FIM marker written in a
  source file (a tokenizer's own code, say) is encoded as the characters it is made of.
- BOS: whether the tokenizer puts a BOS token in front of a sequence is read from what it does (its
  post-processor, e.g. Llama-3's and DeepSeek's), not from `add_bos_token`, which transformers 5 leaves False
  whenever a tokenizer.json exists.
- `TokenTable`: the text of every token and a sorted prefix index over it, so that the set of tokens that
  agree with a token-healing string is found by a binary search and one dictionary lookup per character,
  not by scanning a 151k vocabulary on each keystroke.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

_MARKER = re.compile(r"^(▁?<[^<>\s]{1,64}>|<｜[^｜]{1,64}｜>|\[[A-Z_]{2,32}\])$")


def control_tokens(tokenizer) -> dict[str, int]:
    """Added tokens that are control markers (content -> id): special-flagged ones and `<...>`-shaped ones."""
    out = {}
    for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        content = getattr(added, "content", str(added))
        if getattr(added, "special", False) or _MARKER.match(content):
            out[content] = int(tid)
    for tid in getattr(tokenizer, "all_special_ids", []) or []:
        if tid is not None:
            out.setdefault(tokenizer.convert_ids_to_tokens(tid), int(tid))
    return out


def adds_bos(tokenizer) -> bool:
    """True when encoding with special tokens puts the BOS token first (post-processor or add_bos_token)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    try:
        ids = tokenizer.encode("a", add_special_tokens=True)
    except Exception:  # noqa: BLE001 - an odd tokenizer: fall back to its flag
        return bool(getattr(tokenizer, "add_bos_token", False))
    return bool(ids) and ids[0] == bos and bos not in tokenizer.encode("a", add_special_tokens=False)


class TextEncoder:
    """Encodes user text so that control-token strings inside it stay text (never become control ids)."""

    def __init__(self, tokenizer, controls: dict[str, int]):
        self.tokenizer = tokenizer
        names = sorted((c for c in controls if c), key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, names))) if names else None
        # the Rust tokenizer itself: transformers' wrapper costs ~0.2 ms a call, and the prompt builder
        # counts tokens of many small sections on every keystroke
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend
        self._fast = (lambda t: backend.encode(t, add_special_tokens=False).ids) if backend is not None else None

    def token_ends(self, text: str) -> list[int] | None:
        """`str` index where each token of `text` ends (None: no offsets for this tokenizer or text).

        Cutting a text to a token budget slices the text at one of these instead of decoding ids
        back to text (transformers' decode costs more than the encode)."""
        if self._backend is None or not text or (self.pattern is not None and self.pattern.search(text)):
            return None
        return [end for _, end in self._backend.encode(text, add_special_tokens=False).offsets]

    def _encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast(text)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def __call__(self, text: str) -> list[int]:
        if not text:
            return []
        if self.pattern is None or not self.pattern.search(text):
            return self._encode(text)
        return self._split(text)

    def _split(self, text: str) -> list[int]:
        """Encode around each marker occurrence, cutting the marker after its first character."""
        ids: list[int] = []
        pos = 0
        for m in self.pattern.finditer(text):
            ids += self._encode(text[pos : m.start() + 1])
            pos = m.start() + 1
        rest = text[pos:]
        if rest:
            ids += self(rest) if self.pattern.match(rest) is None else self._split(rest)
        return ids


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[int, str]:
    """str.translate table: byte-level BPE characters -> the latin-1 character of their byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ord(ch): chr(b) for b, ch in bytes_to_unicode().items()}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.decoder).__name__ == "ByteLevel"


def token_strings(tokenizer, size: int) -> list[str]:
    """The text of each of the first `size` token ids (one-token decodes; fast path for byte-level BPE)."""
    if not _is_byte_level(tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
        return [tokenizer.decode([i]) for i in range(size)]
    table = _byte_level_table()
    added = {int(k): getattr(v, "content", str(v)) for k, v in tokenizer.added_tokens_decoder.items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    out = []
    for i, piece in enumerate(pieces):
        if i in added:
            out.append(added[i])
        elif piece is None:
            out.append("")
        else:
            out.append(piece.translate(table).encode("latin-1", "replace").decode("utf-8", "replace"))
    return out


class TokenTable:
    """Token texts plus a sorted prefix index for token healing (control tokens excluded)."""

    def __init__(self, strings: list[str], excluded: set[int], rows: int):
        import numpy as np

        self.strings = strings
        self.rows = rows
        usable = [i for i, s in enumerate(strings) if s and i not in excluded and "\ufffd" not in s]
        usable.sort(key=strings.__getitem__)
        self.sorted_text = [strings[i] for i in usable]
        self.sorted_ids = np.asarray(usable, dtype=np.int64)
        self._masks: dict[str, object] = {}

    def text(self, tok: int) -> str:
        return self.strings[tok] if 0 <= tok < len(self.strings) else ""

    def agreeing(self, left: str) -> tuple[object, list[int]]:
        """Ids of the tokens that start with `left` (a range of the index) or that `left` starts with."""
        lo = bisect.bisect_left(self.sorted_text, left)
        hi = bisect.bisect_left(self.sorted_text, left + "\U0010ffff", lo)
        shorter = []
        for k in range(1, len(left)):  # tokens equal to a proper prefix of `left`: equal runs of the index
            a = bisect.bisect_left(self.sorted_text, left[:k])
            b = bisect.bisect_right(self.sorted_text, left[:k], a)
            shorter.extend(self.sorted_ids[a:b].tolist())
        return self.sorted_ids[lo:hi], shorter

    def mask(self, left: str):
        """Bool mask over the model's vocabulary rows of the tokens allowed next while healing `left`.

        Built with numpy: a fresh torch.zeros of 151k entries wakes torch's thread pool, which costs
        20-30 ms on a busy machine; np.zeros is one calloc.
        """
        import numpy as np
        import torch

        cached = self._masks.get(left)
        if cached is not None:
            return cached
        longer, shorter = self.agreeing(left)
        flags = np.zeros(self.rows, dtype=np.bool_)
        flags[longer] = True
        flags[shorter] = True
        mask = torch.from_numpy(flags)
        if len(self._masks) > 256:
            self._masks.clear()
        self._masks[left] = mask
        return mask
