"""Token arithmetic for prompt budgets: the backend's own tokenizer, or a character estimate."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol


class TokenCounter(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def truncate_left(self, text: str, max_tokens: int) -> str: ...

    def truncate_right(self, text: str, max_tokens: int) -> str: ...


_MEMOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one memo per counter, gone with it


def _memo(tokens: TokenCounter):
    """A per-counter memo of its methods' results. The prompt builder counts and cuts the same lines
    and sections on every keystroke (a real tokenizer costs ~0.4 us a character); the memo holds the
    counter weakly, so a backend the server replaces (and its model) is freed."""
    memo = _MEMOS.get(tokens)
    if memo is None:
        ref = weakref.ref(tokens)
        memo = _MEMOS[tokens] = lru_cache(maxsize=16384)(lambda method, *args: getattr(ref(), method)(*args))
    return memo


def count_cached(tokens: TokenCounter, text: str) -> int:
    """`tokens.count_tokens(text)`, memoized."""
    return _memo(tokens)("count_tokens", text)


def truncate_right_cached(tokens: TokenCounter, text: str, max_tokens: int) -> str:
    """`tokens.truncate_right(text, max_tokens)`, memoized (e.g. the same imports cut on every keystroke)."""
    return _memo(tokens)("truncate_right", text, max_tokens)


class ApproxTokens:
    """Token arithmetic by character count, for backends without a local tokenizer."""

    def __init__(self, chars_per_token: float = 3.5):
        self.chars_per_token = chars_per_token

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def truncate_left(self, text: str, max_tokens: int) -> str:
        keep = int(max_tokens * self.chars_per_token)
        return text[-keep:] if keep > 0 else ""

    def truncate_right(self, text: str, max_tokens: int) -> str:
        return text[: int(max_tokens * self.chars_per_token)]


@dataclass(frozen=True)
class Budget:
    prefix_tokens: int = 1024
    suffix_tokens: int = 256
    context_tokens: int = 512
