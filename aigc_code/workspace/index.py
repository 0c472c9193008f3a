"""The workspace index: the source files of the workspace folders, kept current, queried per completion.

`WorkspaceIndex.build()` discovers and reads the files (see `files.py`) and indexes them in batches;
each batch becomes an immutable segment (line hashes for copy candidates, block postings for
retrieval) that queries see at once, so a half-built index already answers. When the build ends the
segments are merged into one. `update()`/`remove()` re-index one file: the old version is marked
dead and the new one becomes a small segment; small segments are merged when there are too many.
Readers never take the lock: they work on a snapshot of the segment lists and liveness arrays.
Nothing is ever written into the workspace, and no path outside the workspace folders is read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc_code.languages import canonical, language_for_path
from aigc_code.sourcefiles import read_text, reject_reason

from . import copy as copymod
from . import retrieve as retrmod
from .copy import CopyCandidate, LineSegment
from .files import IndexLimits, Skips, inside, list_candidates, path_in_roots, resolve_root, safe_resolve
from .retrieve import BlockSegment, RetrievedChunk

log = logging.getLogger("aigc_code.workspace")

FLUSH_LINES = 200_000  # a build batch becomes a segment after this many lines (segments are not merged)
MAX_SMALL_SEGMENTS = 6
DEAD_CHECK_EVERY = 64
INLINE_BUFFER_CHARS = 50_000  # of the buffer on each side of the cursor, searched by the mid-line fallback
INLINE_TYPED_CHARS = 300  # of the current line before the cursor, for the mid-line fallback
INLINE_MAX_BLOCKS = 64  # blocks per segment that contain the anchor identifier
MIN_BUDGET_BYTES = 16_384  # the build stops when less than this (or 1% of it) is left of max_total_bytes


@dataclass(eq=False)
class Document:
    """One indexed file version."""

    fid: int
    path: str
    language: str
    text: str
    line_starts: np.ndarray  # int32 offset of each line in `text`
    size: int

    def line(self, number: int) -> str:
        start = int(self.line_starts[number])
        end = int(self.line_starts[number + 1]) - 1 if number + 1 < len(self.line_starts) else len(self.text)
        return self.text[start:end]

    def lines(self, first: int, last: int) -> str:
        last = min(last, len(self.line_starts))
        if first >= last:
            return ""
        start = int(self.line_starts[first])
        end = int(self.line_starts[last]) - 1 if last < len(self.line_starts) else len(self.text)
        return self.text[start:end]


def line_starts(lines: list[str]) -> np.ndarray:
    lengths = np.fromiter((len(x) + 1 for x in lines), dtype=np.int32, count=len(lines))
    starts = np.zeros(max(1, len(lines)), dtype=np.int32)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


class WorkspaceIndex:
    """Copy candidates and retrieved chunks over the source files of some workspace folders."""

    def __init__(self, roots: list[str | Path], limits: IndexLimits = IndexLimits()):
        self.limits = limits
        self.roots: list[Path] = []
        for root in roots:
            real = resolve_root(root)
            if real is None:
                log.warning("workspace folder %s is not an existing folder; not indexed", root)
            elif real not in self.roots:
                self.roots.append(real)
        self._lock = threading.RLock()
        self._docs: dict[int, Document] = {}
        self._by_path: dict[str, int] = {}
        self._alive = np.zeros(1024, dtype=bool)
        self._lang = np.zeros(1024, dtype=np.int16)
        self._flags = (self._alive, self._lang)  # replaced together when they grow; readers take this pair
        self._groups: dict[str, int] = {}
        self._next_fid = 0
        self._line_segments: list[LineSegment] = []
        self._block_segments: list[BlockSegment] = []
        self._blocks_alive = 0
        self._bytes = 0
        self._drops_since_check = 0
        self._ready = False
        self._shown: dict[str, str] = {}  # path -> path inside its workspace folder (what the model is shown)
        self._path_cache: dict[str, str | None] = {}
        self._pending: dict[str, str] = {}  # editor buffers not indexed yet (see `buffer`)
        self.last_report: dict = {}

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        return self._ready

    def __len__(self) -> int:
        return len(self._by_path)

    def contains(self, path: str | Path) -> bool:
        key = self._key(path)
        return key is not None and key in self._by_path

    def stats(self) -> dict:
        lines = sum(s.nbytes() for s in self._line_segments)
        blocks = sum(s.nbytes() for s in self._block_segments)
        return {
            "files": len(self._by_path),
            "bytes": self._bytes,
            "line_index_bytes": lines,
            "block_index_bytes": blocks,
            "segments": len(self._line_segments),
        }

    # ------------------------------------------------------------------ build

    def build(self, cancel: threading.Event | None = None) -> dict:
        """Index every file of the workspace folders that is not indexed yet. Blocking; safe to query
        meanwhile. Returns {files, skipped: {reason: count}, seconds, bytes, cancelled}."""
        started = time.monotonic()
        skips = Skips()
        pending: list[Document] = []
        cancelled = False
        for root in self.roots:
            if not root.is_dir():
                skips.add("workspace-folder-missing", root)
                continue
            cancelled = self._build_root(root, skips, pending, cancel, started)
            if cancelled:
                break
        self._flush(pending)
        self._ready = not cancelled
        report = {
            "files": len(self._by_path),
            "skipped": dict(sorted(skips.counts.items())),
            "seconds": round(time.monotonic() - started, 3),
            "bytes": self._bytes,
            "cancelled": cancelled,
        }
        skips.log_summary(", ".join(map(str, self.roots)))
        log.info("workspace index: %d files, %d bytes in %.2f s", report["files"], report["bytes"], report["seconds"])
        self.last_report = report
        return report

    def _build_root(self, root: Path, skips: Skips, pending: list, cancel, started: float) -> bool:
        """Index one folder; True when cancelled."""
        pending_lines = 0
        for real, language in list_candidates(root, self.limits, skips, cancel):
            if cancel is not None and cancel.is_set():
                return True
            reason = self._cap_reason(started)
            if reason:
                skips.add(reason, real)
                return False
            key = str(real)
            if key in self._by_path:
                continue
            text, why = self._read(real)
            if text is None:
                skips.add(why, real)
                continue
            doc = self._new_document(key, language, text)
            pending.append(doc)
            pending_lines += text.count("\n") + 1
            if pending_lines >= FLUSH_LINES:
                self._flush(pending)
                pending_lines = 0
        return cancel is not None and cancel.is_set()

    def _cap_reason(self, started: float) -> str:
        """Why the build stops here ("" to go on)."""
        if len(self._by_path) + 1 > self.limits.max_files:
            return "file-count-cap"
        if self.limits.max_total_bytes - self._bytes < min(MIN_BUDGET_BYTES, self.limits.max_total_bytes // 100):
            return "total-bytes-cap"
        if time.monotonic() - started > self.limits.max_seconds:
            return "time-cap"
        return ""

    def _read(self, real: Path) -> tuple[str | None, str]:
        """(text, "") or (None, reason) for one discovered file; files over the remaining budget are not read."""
        try:
            size = real.stat().st_size
        except OSError:
            return None, "vanished"
        if size <= self.limits.max_file_bytes and self._bytes + size > self.limits.max_total_bytes:
            return None, "total-bytes-cap"
        text, why = read_text(real, self.limits.max_file_bytes)
        if text is None:
            return None, why.split(":")[0]
        if self._bytes + len(text) > self.limits.max_total_bytes:
            return None, "total-bytes-cap"
        return text, ""

    def _new_document(self, key: str, language: str, text: str) -> Document:
        with self._lock:
            fid = self._next_fid
            self._next_fid += 1
            self._by_path[key] = fid  # reserved: a concurrent update() of the same path wins later
            self._bytes += len(text)
        return Document(fid, key, language, text, np.zeros(0, dtype=np.int64), len(text))

    def _flush(self, pending: list[Document], memo: bool = False) -> None:
        """Turn pending documents into one searchable segment pair."""
        if not pending:
            return
        line_parts, block_parts = [], []
        for doc in pending:
            lines = copymod.split_lines(doc.text)
            doc.line_starts = line_starts(lines)
            line_parts.append(copymod.file_lines(doc.fid, lines, memo))
            block_parts.append(retrmod.file_blocks(doc.fid, lines, memo))
        line_seg = LineSegment.from_files(line_parts)
        block_seg = BlockSegment.from_files(block_parts)
        with self._lock:
            live = [d for d in pending if self._by_path.get(d.path) == d.fid]
            for doc in live:
                self._docs[doc.fid] = doc
                self._set_alive(doc.fid, doc.language)
            self._bytes -= sum(d.size for d in pending) - sum(d.size for d in live)
            self._blocks_alive += int(np.isin(block_seg.blk_fid, [d.fid for d in live]).sum())
            self._line_segments = self._line_segments + [line_seg]
            self._block_segments = self._block_segments + [block_seg]
        pending.clear()

    def _set_alive(self, fid: int, language: str) -> None:
        if fid >= len(self._alive):
            size = max(fid + 1, 2 * len(self._alive))
            alive, lang = np.zeros(size, dtype=bool), np.zeros(size, dtype=np.int16)
            alive[: len(self._alive)], lang[: len(self._lang)] = self._alive, self._lang
            self._alive, self._lang = alive, lang
            self._flags = (alive, lang)
        group = retrmod.language_group(language)
        self._lang[fid] = self._groups.setdefault(group, len(self._groups) + 1)
        self._alive[fid] = True

    def _compact(self) -> None:
        """Merge the small segments (left by updates) when there are too many, and rewrite a segment
        whose lines are mostly dead (checked every `DEAD_CHECK_EVERY` drops)."""
        with self._lock:
            small = [i for i, seg in enumerate(self._line_segments) if len(seg) < FLUSH_LINES // 4]
            if len(small) > MAX_SMALL_SEGMENTS:
                self._merge(small)
            if self._drops_since_check >= DEAD_CHECK_EVERY:
                self._drops_since_check = 0
                for i, seg in enumerate(self._line_segments):
                    if len(seg) and 1.0 - self._alive[seg.fids].mean() > 0.3:
                        self._merge([i])

    def _merge(self, which: list[int]) -> None:
        lines, blocks = self._line_segments, self._block_segments
        merged_l = LineSegment.merge([lines[i] for i in which], self._alive)
        merged_b = BlockSegment.merge([blocks[i] for i in which], self._alive)
        rest = [i for i in range(len(lines)) if i not in which]
        self._line_segments = [lines[i] for i in rest] + [merged_l]
        self._block_segments = [blocks[i] for i in rest] + [merged_b]

    # ------------------------------------------------------------------ updates

    def _key(self, path: str | Path) -> str | None:
        """The real path of `path` when it is inside a workspace folder, else None (cached)."""
        raw = os.fspath(path)
        if raw in self._path_cache:
            return self._path_cache[raw]
        try:
            real = Path(raw).expanduser().resolve(strict=False)
        except (OSError, RuntimeError):
            real = None
        key = str(real) if real is not None and any(inside(real, r) for r in self.roots) else None
        if len(self._path_cache) > 10_000:
            self._path_cache.clear()
        self._path_cache[raw] = key
        return key

    def buffer(self, path: str | Path, text: str) -> None:
        """An editor buffer's new text, indexed later: re-indexing a file costs ~1 ms per 20 KB, too much
        for every keystroke. Pending buffers are indexed by `flush`: before any lookup for another file,
        and when typing pauses (the server's timer)."""
        key = self._key(path)
        if key is not None:
            with self._lock:
                self._pending[key] = text

    def flush(self, keep: str | Path | None = None) -> None:
        """Index the pending buffers, except `keep`'s (the file being typed in: its lookups use the
        buffer itself)."""
        kept = self._key(keep) if keep is not None else None
        with self._lock:
            keys = [k for k in self._pending if k != kept]
        for key in keys:
            with self._lock:  # take and apply under one lock: a disk event for the file cannot slip between
                text = self._pending.pop(key, None)
                if text is not None:
                    self.update(key, text)

    def update(self, path: str | Path, text: str | None = None) -> None:
        """(Re)index one file: `text` is an editor buffer; None means read it from disk. Paths outside the
        workspace folders and files that are not indexable are ignored (an indexed copy is dropped)."""
        key = self._key(path)
        if key is None:
            return
        with self._lock:
            self._pending.pop(key, None)  # this newer event replaces a buffer not indexed yet
        language = language_for_path(key)
        if language is None:
            return
        text, reason = self._checked_text(Path(key), text)
        if text is None:
            log.debug("not indexing %s: %s", key, reason)
            self.remove(key)
            return
        with self._lock:
            old = self._by_path.get(key)
            if old is not None and old in self._docs and self._docs[old].text == text:
                return
            if (
                self._bytes + len(text) - (self._docs[old].size if old in self._docs else 0)
                > self.limits.max_total_bytes
            ):
                log.info("not indexing %s: total-bytes-cap", key)
                return
            self._drop(key)
            doc = self._new_document(key, language, text)
            self._flush([doc], memo=True)
            self._compact()

    def _checked_text(self, real: Path, text: str | None) -> tuple[str | None, str]:
        if text is None:
            resolved = None
            for root in self.roots:
                if inside(real, root):
                    resolved, reason = safe_resolve(real, root)
                    if resolved is None:
                        return None, reason
            return read_text(resolved or real, self.limits.max_file_bytes)
        if len(text.encode("utf-8", "replace")) > self.limits.max_file_bytes:
            return None, "huge"
        reason = reject_reason(text) if text.strip() else "empty"
        return (None, reason) if reason else (text, "")

    def remove(self, path: str | Path) -> None:
        """Forget a file (deleted on disk, or no longer indexable)."""
        key = self._key(path)
        if key is None:
            return
        with self._lock:
            self._pending.pop(key, None)
            self._drop(key)

    def _drop(self, key: str) -> None:
        fid = self._by_path.pop(key, None)
        if fid is None:
            return
        doc = self._docs.pop(fid, None)
        if doc is not None:
            self._bytes -= doc.size
            self._alive[fid] = False
            self._drops_since_check += 1
            self._blocks_alive -= (len(doc.line_starts) + retrmod.BLOCK_LINES - 1) // retrmod.BLOCK_LINES

    # ------------------------------------------------------------------ queries

    def copy_candidates(self, path: str, before: str, after: str, max_candidates: int = 3) -> list[CopyCandidate]:
        """Continuations of the current line copied from where the text before the cursor also occurs (the
        buffer itself and the other indexed files; the indexed copy of `path` is replaced by the buffer)."""
        self.flush(keep=path)
        lines, blocks = self._line_segments, self._block_segments  # before the flags: they cover these fids
        alive = self._flags[0].copy()
        own = self._by_path.get(self._key(path) or "")
        if own is not None and own < len(alive):
            alive[own] = False
        ctx = copymod.cursor_context(before, after)
        ranked = [] if ctx is None else self._line_candidates(ctx, lines, alive, max_candidates)
        return ranked or self._inline_candidates(before, after, blocks, alive, max_candidates)

    def _line_candidates(self, ctx, segments, alive: np.ndarray, max_candidates: int) -> list[CopyCandidate]:
        sources = [ctx.buffer, *segments]
        found, kind = self._occurrences(sources, ctx, alive, tail=False), "line"
        if not found:
            found, kind = self._occurrences(sources, ctx, alive, tail=True), "tail"

        def line_text(segment: LineSegment, position: int) -> tuple[str, str]:
            if segment is ctx.buffer:
                return ctx.buffer_lines[position], ""
            doc = self._docs.get(int(segment.fids[position]))
            return (doc.line(int(segment.numbers[position])), doc.path) if doc else ("", "")

        ranked = copymod.rank(found, ctx, line_text, max_candidates)
        for candidate in ranked:
            candidate.kind = kind
        return ranked

    def _inline_candidates(self, before: str, after: str, segments, alive: np.ndarray, max_candidates: int) -> list:
        """Mid-line fallback: the typed part's last identifier onwards, found inside lines (the buffer, and
        blocks of other files that contain that identifier)."""
        current = before[before.rfind("\n") + 1 :]
        rest = after.split("\n", 1)[0]
        typed = current.lstrip()[-INLINE_TYPED_CHARS:]
        anchor = copymod.inline_needle(typed, retrmod.STOPWORDS)
        if anchor is None:
            return []
        token, start = anchor
        texts = [
            (before[: len(before) - len(current)][-INLINE_BUFFER_CHARS:], ""),
            (after[len(rest) :][:INLINE_BUFFER_CHARS], ""),
        ]
        key = np.asarray([hash(token) & retrmod.MASK], dtype=np.uint32)
        for seg in segments:
            lo, hi = seg.ranges(key)
            for block in seg.post_blk[int(lo[0]) : int(hi[0])][:INLINE_MAX_BLOCKS]:
                fid = int(seg.blk_fid[block])
                doc = self._docs.get(fid) if alive[fid] else None
                if doc is not None:
                    first = int(seg.blk_no[block]) * retrmod.BLOCK_LINES
                    texts.append((doc.lines(first, first + retrmod.BLOCK_LINES), doc.path))
        return copymod.inline_candidates(typed, rest, start, texts, max_candidates)

    @staticmethod
    def _occurrences(sources, ctx, alive, tail: bool) -> list:
        found = []
        for segment in sources:
            occ = copymod.match_segment(segment, ctx, None if segment is ctx.buffer else alive, tail)
            if occ is not None:
                found.append(occ)
        return found

    def retrieve(
        self, path: str, language: str, query: str, max_chunks: int = 4, exclude: str = ""
    ) -> list[RetrievedChunk]:
        """Windows of indexed files of a compatible language most similar to `query` (BM25 over identifier
        tokens); windows of `path` that overlap `exclude`, and near-duplicates of it, are left out."""
        self.flush(keep=path)
        tokens = retrmod.token_hashes(query)
        segments = self._block_segments
        canonical_name = canonical(language) if language else None
        group = self._groups.get(retrmod.language_group(canonical_name or language_for_path(path)))
        if group is None or not segments:
            return []
        alive, lang = self._flags
        allowed = alive & (lang == group)
        hits = retrmod.search(segments, tokens, allowed, max_chunks * 4 + 8, max(1, self._blocks_alive))
        excluded = {line.strip() for line in exclude.splitlines() if line.strip()}
        exclude_tokens = retrmod.token_hashes(exclude) if exclude else np.zeros(0, dtype=np.uint32)
        own = self._key(path)
        return self._select(hits, excluded, exclude_tokens, own, max_chunks)

    def _select(self, hits, excluded, exclude_tokens, own, max_chunks) -> list[RetrievedChunk]:
        chosen: list[RetrievedChunk] = []
        for hit in hits:
            doc = self._docs.get(int(hit.segment.blk_fid[hit.block]))
            if doc is None:
                continue
            first, last = retrmod.window_lines(int(hit.segment.blk_no[hit.block]))
            text = doc.lines(first, last)
            if self._rejected(doc, first, last, text, excluded, exclude_tokens, own, chosen):
                continue
            chosen.append(RetrievedChunk(doc.path, text, hit.score, first, doc.language, self.shown_path(doc.path)))
            if len(chosen) >= max_chunks:
                break
        return chosen

    def shown_path(self, path: str) -> str:
        """`path` inside the workspace folder that holds it, as the server shows a document to the model
        (a prompt must not depend on where the workspace lives on disk)."""
        shown = self._shown.get(path)
        if shown is None:
            shown = path_in_roots(Path(path), self.roots) or path
            if len(self._shown) > 65536:
                self._shown.clear()
            self._shown[path] = shown
        return shown

    @staticmethod
    def _rejected(doc, first, last, text, excluded, exclude_tokens, own, chosen) -> bool:
        if not text.strip():
            return True
        if any(c.path == doc.path and c.start_line < last and first < c.start_line + (last - first) for c in chosen):
            return True
        lines = text.splitlines()
        if excluded and retrmod.overlap_fraction(lines, excluded) >= (0.3 if doc.path == own else 0.7):
            return True
        return len(exclude_tokens) > 0 and retrmod.idf_free_similarity(retrmod.token_hashes(text), exclude_tokens) > 0.8
