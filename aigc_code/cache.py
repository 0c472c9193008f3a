"""LRU cache of suggestions keyed by the text around the cursor, not by document version.

A hit is the same prefix and suffix again, or a prefix that extends a cached one by exactly
the characters the user typed, when those match the start of a cached suggestion: the answer
is then the rest of that suggestion, with no model call.

An entry keeps the prefix's length and its last `tail` characters and the suffix's first
`head` characters (the prompt never sees more than that), so memory stays bounded whatever
the document size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Entry:
    language: str
    prefix_len: int
    prefix_tail: str
    suffix_head: str
    suggestions: list[str]


class SuggestionCache:
    def __init__(self, capacity: int = 256, tail: int = 4096, head: int = 1024):
        self.capacity = capacity
        self.tail = tail
        self.head = head
        self._entries: OrderedDict[tuple[str, int, int], Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, language: str, prefix: str, suffix: str, suggestions: list[str]) -> None:
        if self.capacity <= 0:
            return
        entry = Entry(language, len(prefix), prefix[-self.tail :], suffix[: self.head], list(suggestions))
        key = (language, len(prefix), hash((entry.prefix_tail, entry.suffix_head)))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get(self, language: str, prefix: str, suffix: str) -> list[str] | None:
        """Suggestions (remainders after what was typed) for this cursor, or None on a miss.

        An empty list is a hit too: the model had nothing to say here last time.
        """
        head = suffix[: self.head]
        n = len(prefix)
        with self._lock:
            for key in reversed(self._entries):
                entry = self._entries[key]
                if entry.language != language or entry.prefix_len > n or entry.suffix_head != head:
                    continue
                typed = prefix[entry.prefix_len :]
                if typed and not any(len(s) > len(typed) and s.startswith(typed) for s in entry.suggestions):
                    continue
                start = entry.prefix_len - len(entry.prefix_tail)
                if prefix[start : entry.prefix_len] != entry.prefix_tail:
                    continue
                self._entries.move_to_end(key)
                self.hits += 1
                if not typed:
                    return list(entry.suggestions)
                return [s[len(typed) :] for s in entry.suggestions if len(s) > len(typed) and s.startswith(typed)]
            self.misses += 1
        return None
