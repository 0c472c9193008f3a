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
        # the same keys by (language, suffix head): a lookup scans only entries that can match
        self._by_head: dict[tuple[str, str], dict[tuple[str, int, int], Entry]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_head.clear()

    def put(self, language: str, prefix: str, suffix: str, suggestions: list[str]) -> None:
        if self.capacity <= 0:
            return
        entry = Entry(language, len(prefix), prefix[-self.tail :], suffix[: self.head], list(suggestions))
        key = (language, len(prefix), hash((entry.prefix_tail, entry.suffix_head)))
        with self._lock:
            replaced = self._entries.pop(key, None)
            if replaced is not None:
                self._forget(key, replaced)
            self._entries[key] = entry
            self._by_head.setdefault((language, entry.suffix_head), {})[key] = entry  # last = most recent
            while len(self._entries) > self.capacity:
                old_key, old = self._entries.popitem(last=False)
                self._forget(old_key, old)

    def _forget(self, key: tuple[str, int, int], entry: Entry) -> None:
        group = self._by_head.get((entry.language, entry.suffix_head))
        if group is not None:
            group.pop(key, None)
            if not group:
                del self._by_head[(entry.language, entry.suffix_head)]

    def get(self, language: str, prefix: str, suffix: str) -> list[str] | None:
        """Suggestions (remainders after what was typed) for this cursor, or None on a miss.

        An empty list is a hit too: the model had nothing to say here last time.
        """
        head = suffix[: self.head]
        n = len(prefix)
        with self._lock:
            group = self._by_head.get((language, head), {})
            for key in reversed(group):
                entry = group[key]
                if entry.prefix_len > n:
                    continue
                typed = prefix[entry.prefix_len :]
                if typed and not any(len(s) > len(typed) and s.startswith(typed) for s in entry.suggestions):
                    continue
                start = entry.prefix_len - len(entry.prefix_tail)
                if prefix[start : entry.prefix_len] != entry.prefix_tail:
                    continue
                self._entries.move_to_end(key)
                del group[key]
                group[key] = entry
                self.hits += 1
                if not typed:
                    return list(entry.suggestions)
                return [s[len(typed) :] for s in entry.suggestions if len(s) > len(typed) and s.startswith(typed)]
            self.misses += 1
        return None
