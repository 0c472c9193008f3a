"""One immutable view of a document at one moment, and the cursor in it.

The pipeline works on snapshots only: the text, its UTF-8 bytes and a private copy of the
tree-sitter tree, safe to hand to a worker thread while further edits arrive. `Cursor` carries
the cursor's offsets — `str` index, UTF-8 byte offset, the text before and after it — computed
once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from aigc_code.languages import ts_parser

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Tree


# Documents larger than this are not parsed with tree-sitter (a 2.4 MB file's tree costs ~300 MB);
# their completions see a window of text around the cursor instead.
MAX_PARSE_BYTES = 1 << 20
WINDOW_CHARS = 32_000


def byte_len(text: str) -> int:
    """UTF-8 length of `text` (the fast path for ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(frozen=True)
class SourceFile:
    """One document as the context builder sees it."""

    path: str  # shown to the model in a comment
    language: str  # canonical language id
    text: str
    tree: Tree | None = None
    src: bytes = b""

    def source(self) -> bytes:
        return self.src or self.text.encode("utf-8")


@dataclass(frozen=True)
class Snapshot:
    uri: str
    version: int
    language: str | None  # canonical id, None when not a supported language
    text: str
    src: bytes
    tree: Tree | None

    @classmethod
    def parse(cls, text: str, language: str | None, uri: str = "", version: int = 0) -> Snapshot:
        """A snapshot of `text` parsed afresh (outside an editor: `aigc-code complete`, benchmarks)."""
        src = text.encode("utf-8")
        tree = ts_parser(language).parse(src) if language and len(src) <= MAX_PARSE_BYTES else None
        return cls(uri, version, language, text, src, tree)

    def source_file(self, path: str) -> SourceFile:
        return SourceFile(path=path, language=self.language or "", text=self.text, tree=self.tree, src=self.src)

    def cursor(self, index: int) -> Cursor:
        return Cursor(self, max(0, min(index, len(self.text))))


@dataclass(frozen=True)
class Cursor:
    """A position in a snapshot: `index` is a `str` index into `snap.text`."""

    snap: Snapshot
    index: int

    @cached_property
    def before(self) -> str:
        return self.snap.text[: self.index]

    @cached_property
    def after(self) -> str:
        return self.snap.text[self.index :]

    def window(self) -> tuple[str, str]:
        """(before, after) for parsing around the cursor: all of it for a parsed document, else
        about `WINDOW_CHARS` cut at line boundaries (huge documents)."""
        if self.snap.tree is not None or len(self.snap.src) <= MAX_PARSE_BYTES:
            return self.before, self.after
        before = self.before[-WINDOW_CHARS:]
        before = before[before.find("\n") + 1 :] if "\n" in before else before
        after = self.after[: WINDOW_CHARS // 4]
        after = after[: after.rfind("\n") + 1] if "\n" in after else after
        return before, after

    @cached_property
    def byte(self) -> int:
        """UTF-8 byte offset, as tree-sitter counts."""
        return byte_len(self.before)
