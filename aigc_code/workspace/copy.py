"""Copy candidates: the rest of the line that followed the same code elsewhere.

Every indexed file is reduced to its non-blank lines, each stripped of surrounding whitespace and
hashed to 32 bits. A `LineSegment` holds those hashes for a batch of files, in file order, plus a
sorted copy for lookups (an inverted index: hash -> positions). A query takes the stripped line just
above the cursor, finds every position where it occurs (in the indexed files and in the editor
buffer itself, whose own disk copy is ignored), extends each match backwards over earlier lines and
forwards over the lines after the cursor (vectorised over all occurrences at once), and proposes the
line that followed each occurrence, minus what is already typed. Candidates are ranked by matched
characters, then by how many occurrences agree (votes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HASH_MASK = 0xFFFFFFFF
SENTINEL = 0  # the cursor line in a buffer; real line hashes that happen to be 0 become 1
MAX_BACK = 24  # lines of context compared before the cursor
MAX_FORWARD = 8  # lines compared after the cursor
MAX_EXAMINED = 400  # occurrences whose text is looked at, best first
BUFFER_WINDOW = 2000  # lines of the buffer around the cursor that are searched
INDENT_BONUS = 8  # characters credited when the indentation step matches the buffer's
SAME_INDENT_BONUS = 2  # ... and when the proposed line has the cursor's indentation
TAIL = 12  # a line's "tail" key: its last TAIL characters (stripped), for partial matches


@dataclass
class CopyCandidate:
    """`text` is inserted at the cursor (the rest of the current line, without any closing text that is
    already after the cursor); `line_text` is the whole rest of the source line; `source` is the path of
    the best occurrence ("" for the buffer itself); `match_chars` counts the whitespace-normalised
    characters that matched around the cursor (+ small bonuses when the indentation fits); `votes` how many
    occurrences proposed this text."""

    text: str
    votes: int
    match_chars: int
    source: str
    line_text: str = ""
    match_lines: int = 0  # whole non-blank lines that matched above and below the cursor
    margin: int = 0  # match_chars minus the next candidate's (a tie, 0, is a coin toss: ~5% right)
    kind: str = "line"  # how it was found: "line" (whole lines above), "tail" (the end of the line above), "inline"


def line_hash(stripped: str) -> int:
    h = hash(stripped) & HASH_MASK
    return h or 1


def tail_hash(stripped: str) -> int:
    return line_hash(stripped[-TAIL:])


def common_suffix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return i


def split_lines(text: str) -> list[str]:
    return text.split("\n")


def nonblank(lines: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(line numbers, hashes, tail hashes, indents) of the non-blank lines."""
    numbers, hashes, tails, indents = [], [], [], []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped:
            numbers.append(number)
            hashes.append(line_hash(stripped))
            tails.append(tail_hash(stripped))
            indents.append(min(len(line) - len(line.lstrip()), 255))
    return numbers, hashes, tails, indents


_KEYS: dict[str, tuple[int, int, int]] = {}  # line -> (hash, tail hash, indent), for buffers queried again


def buffer_nonblank(lines: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
    """`nonblank` for an editor buffer, memoised per line (a buffer changes a little between queries)."""
    if len(_KEYS) > 60_000:  # ~10 MB at most
        _KEYS.clear()
    numbers, hashes, tails, indents = [], [], [], []
    for number, line in enumerate(lines):
        keys = _KEYS.get(line)
        if keys is None:
            stripped = line.strip()
            keys = (
                (line_hash(stripped), tail_hash(stripped), min(len(line) - len(line.lstrip()), 255)) if stripped else ()
            )
            _KEYS[line] = keys
        if keys:
            numbers.append(number)
            hashes.append(keys[0])
            tails.append(keys[1])
            indents.append(keys[2])
    return numbers, hashes, tails, indents


@dataclass
class FileLines:
    """What a file contributes to a `LineSegment` (built once per file version)."""

    fid: int
    numbers: np.ndarray  # int32 line number of each non-blank line
    hashes: np.ndarray  # uint32
    tails: np.ndarray  # uint32
    indents: np.ndarray  # uint8


def file_lines(fid: int, lines: list[str], memo: bool = False) -> FileLines:
    """`memo`: for a file edited in an editor (most lines were seen in its previous version)."""
    numbers, hashes, tails, indents = buffer_nonblank(lines) if memo else nonblank(lines)
    return FileLines(
        fid,
        np.asarray(numbers, dtype=np.int32),
        np.asarray(hashes, dtype=np.uint32),
        np.asarray(tails, dtype=np.uint32),
        np.asarray(indents, dtype=np.uint8),
    )


_DTYPES = (np.uint32, np.uint32, np.int32, np.int32, np.uint8)


class LineSegment:
    """Immutable: the non-blank line hashes of some files, contiguous per file, with a sorted index."""

    def __init__(self, hashes, tails, fids, numbers, indents, indexed: bool = True):
        self.hashes, self.tails, self.fids, self.numbers, self.indents = hashes, tails, fids, numbers, indents
        self.indexed = indexed  # False: small (a buffer), searched by scanning
        if indexed:
            self.order = np.argsort(hashes, kind="stable").astype(np.int32)
            self.sorted = hashes[self.order]
            self.tail_order = np.argsort(tails, kind="stable").astype(np.int32)
            self.tail_sorted = tails[self.tail_order]

    def _columns(self) -> tuple:
        return self.hashes, self.tails, self.fids, self.numbers, self.indents

    @classmethod
    def from_files(cls, files: list[FileLines]) -> LineSegment:
        if not files:
            return cls(*(np.zeros(0, dtype=t) for t in _DTYPES))
        return cls(
            np.concatenate([f.hashes for f in files]),
            np.concatenate([f.tails for f in files]),
            np.concatenate([np.full(len(f.hashes), f.fid, dtype=np.int32) for f in files]),
            np.concatenate([f.numbers for f in files]),
            np.concatenate([f.indents for f in files]),
        )

    @classmethod
    def merge(cls, segments: list[LineSegment], alive: np.ndarray) -> LineSegment:
        """One segment with the live lines of `segments` (dead files dropped)."""
        parts = [s._columns() for s in segments if len(s)]
        if not parts:
            return cls.from_files([])
        columns = [np.concatenate(p) for p in zip(*parts, strict=True)]
        keep = alive[columns[2]]
        return cls(*(c[keep] for c in columns))

    def __len__(self) -> int:
        return len(self.hashes)

    def nbytes(self) -> int:
        extra = (self.order, self.sorted, self.tail_order, self.tail_sorted) if self.indexed else ()
        return sum(a.nbytes for a in self._columns() + extra)

    def lookup(self, h: int, tail: bool = False) -> np.ndarray:
        if not self.indexed:
            return np.flatnonzero((self.tails if tail else self.hashes) == h)
        keys, order = (self.tail_sorted, self.tail_order) if tail else (self.sorted, self.order)
        key = np.uint32(h)  # a Python int would make numpy cast the whole array
        lo = np.searchsorted(keys, key, side="left")
        hi = np.searchsorted(keys, key, side="right")
        return order[lo:hi]


@dataclass
class CursorContext:
    """The buffer around the cursor, whitespace-normalised, as the matcher needs it."""

    typed: str  # current line before the cursor, left-stripped
    rest: str  # current line after the cursor
    back: np.ndarray  # uint32 hashes of the non-blank lines above, nearest first
    back_text: list[str]  # those lines, stripped
    back_chars: np.ndarray  # cumulative stripped lengths of those lines (back_chars[k] = first k lines)
    forward: np.ndarray  # uint32 hashes of the non-blank lines below, nearest first
    forward_chars: np.ndarray
    indent: int  # indentation of the cursor line
    indent_step: int  # ... minus that of the line above
    next_line: str  # first non-blank line below the cursor, stripped
    buffer: LineSegment  # the buffer itself as a searchable source (the cursor line is SENTINEL)
    buffer_lines: list[str]  # line text of each buffer position


def _cumulative(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def cursor_context(before: str, after: str) -> CursorContext | None:
    above = split_lines(before)
    current = above.pop()
    below = split_lines(after)
    rest = below.pop(0)
    above, below = above[-BUFFER_WINDOW:], below[:BUFFER_WINDOW]
    a_num, a_hash, a_tail, a_ind = buffer_nonblank(above)
    b_num, b_hash, b_tail, b_ind = buffer_nonblank(below)
    if not a_hash:
        return None
    back_text = [above[n].strip() for n in a_num[::-1][:MAX_BACK]]
    fwd_len = [len(below[n].strip()) for n in b_num[:MAX_FORWARD]]
    indent = len(current) - len(current.lstrip())
    size = len(a_hash) + 1 + len(b_hash)
    segment = LineSegment(
        np.asarray(a_hash + [SENTINEL] + b_hash, dtype=np.uint32),
        np.asarray(a_tail + [SENTINEL] + b_tail, dtype=np.uint32),
        np.full(size, -1, dtype=np.int32),
        np.arange(size, dtype=np.int32),
        np.asarray(a_ind + [min(indent, 255)] + b_ind, dtype=np.uint8),
        indexed=False,
    )
    return CursorContext(
        typed=current.lstrip(),
        rest=rest,
        back=np.asarray(a_hash[::-1][:MAX_BACK], dtype=np.uint32),
        back_text=back_text,
        back_chars=_cumulative([len(t) for t in back_text]),
        forward=np.asarray(b_hash[:MAX_FORWARD], dtype=np.uint32),
        forward_chars=_cumulative(fwd_len),
        indent=indent,
        indent_step=indent - a_ind[-1],
        next_line=below[b_num[0]].strip() if b_num else "",
        buffer=segment,
        buffer_lines=[above[n] for n in a_num] + [current] + [below[n] for n in b_num],
    )


@dataclass
class Occurrences:
    """Matches of the context in one segment: the position of the proposed line and the match size."""

    segment: LineSegment
    cand: np.ndarray  # positions of the proposed lines
    back: np.ndarray  # whole lines matched above (the next one up may match in part)
    forward: np.ndarray  # lines matched below
    score: np.ndarray  # matched characters of whole lines (+ indentation bonuses)


def match_segment(
    segment: LineSegment, ctx: CursorContext, alive: np.ndarray | None, tail: bool = False
) -> Occurrences | None:
    """Where the line above the cursor occurs in `segment` (tail: where its last characters occur)."""
    pos = segment.lookup(int(ctx.back[0]) if not tail else tail_hash(ctx.back_text[0]), tail)
    if len(pos) == 0:
        return None
    fids = segment.fids
    cand = pos + 1
    ok = cand < len(segment)
    pos, cand = pos[ok], cand[ok]
    ok = (fids[cand] == fids[pos]) & (segment.hashes[cand] != SENTINEL)
    if alive is not None:
        ok &= alive[fids[pos]]
    pos, cand = pos[ok], cand[ok]
    if len(pos) == 0:
        return None
    back = np.zeros(len(pos), dtype=np.int64) if tail else _extend(segment, pos, ctx.back, -1)
    forward = _extend(segment, cand, ctx.forward, +1) if len(ctx.forward) else np.zeros(len(cand), dtype=np.int64)
    step = segment.indents[cand].astype(np.int64) - segment.indents[pos].astype(np.int64)
    score = ctx.back_chars[back] + ctx.forward_chars[forward] + INDENT_BONUS * (step == ctx.indent_step)
    score += SAME_INDENT_BONUS * (segment.indents[cand] == min(ctx.indent, 255))
    return Occurrences(segment, cand, back, forward, score)


def _extend(segment: LineSegment, start: np.ndarray, wanted: np.ndarray, direction: int) -> np.ndarray:
    """How many of `wanted` match going from `start` in `direction` (start itself is wanted[0] when going
    back; going forward, wanted[0] is compared with the line after `start`). Vectorised, stops early."""
    n = len(segment)
    matched = np.ones(len(start), dtype=np.int64) if direction < 0 else np.zeros(len(start), dtype=np.int64)
    first = 1 if direction < 0 else 0
    live = np.arange(len(start))
    fid = segment.fids[start]
    for i in range(first, len(wanted)):
        q = start[live] + direction * (i + (0 if direction < 0 else 1))
        inside = (q >= 0) & (q < n)
        qs = np.where(inside, q, 0)
        ok = inside & (segment.fids[qs] == fid[live]) & (segment.hashes[qs] == wanted[i])
        live = live[ok]
        if len(live) == 0:
            break
        matched[live] += 1
    return matched


def continuation(line: str, ctx: CursorContext) -> str:
    """The text to insert for a proposed source `line`, or "" when it does not fit the cursor."""
    if not line.lstrip().startswith(ctx.typed):
        return ""
    text = line.lstrip()[len(ctx.typed) :].rstrip()
    rest = ctx.rest.strip()
    if rest and text.endswith(rest):
        text = text[: len(text) - len(rest)].rstrip() if text != rest else ""
    if not text.strip():
        return ""
    if not rest and not ctx.typed and line.strip() == ctx.next_line:
        return ""  # would only repeat the line below the cursor
    return text


LineText = Callable[[LineSegment, int], tuple[str, str]]


def _partial(segment: LineSegment, cand: int, back: int, ctx: CursorContext, line_text: LineText) -> int:
    """Characters at the end of the first line above that did not match whole, that still match."""
    if back >= len(ctx.back_text):
        return 0
    position = cand - 1 - back
    if position < 0 or segment.fids[position] != segment.fids[cand]:
        return 0
    return common_suffix(line_text(segment, position)[0].strip(), ctx.back_text[back])


def rank(found: list[Occurrences], ctx: CursorContext, line_text: LineText, max_candidates: int) -> list[CopyCandidate]:
    """Distinct continuations, best first by (matched characters, votes)."""
    if not found:
        return []
    seg_ids = np.concatenate([np.full(len(o.cand), i, dtype=np.int32) for i, o in enumerate(found)])
    cands = np.concatenate([o.cand for o in found])
    backs = np.concatenate([o.back for o in found])
    scores = np.concatenate([o.score for o in found])
    lines_matched = backs + np.concatenate([o.forward for o in found])
    order = np.argsort(-scores, kind="stable")[:MAX_EXAMINED]
    best: dict[str, CopyCandidate] = {}
    for k in order:
        segment = found[seg_ids[k]].segment
        line, source = line_text(segment, int(cands[k]))
        text = continuation(line, ctx)
        if not text:
            continue
        score = int(scores[k]) + _partial(segment, int(cands[k]), int(backs[k]), ctx, line_text)
        entry = best.get(text)
        if entry is None:
            whole = line.lstrip()[len(ctx.typed) :].rstrip()
            best[text] = CopyCandidate(text, 1, score, source, whole, int(lines_matched[k]))
            continue
        entry.votes += 1
        if score > entry.match_chars:
            entry.match_chars, entry.source = score, source
    return _sorted(best, max_candidates)


def _sorted(best: dict[str, CopyCandidate], max_candidates: int) -> list[CopyCandidate]:
    """Best first by matched characters, then votes; `margin` set to the lead over the next one."""
    ranked = sorted(best.values(), key=lambda c: (c.match_chars, c.votes), reverse=True)
    for first, second in zip(ranked, ranked[1:] + [None], strict=False):
        first.margin = first.match_chars - (second.match_chars if second else 0)
    return ranked[:max_candidates]


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")
INLINE_MIN_CHARS = 4
INLINE_MAX_HITS = 50  # occurrences looked at per text


def inline_needle(typed: str, stop: frozenset[str]) -> tuple[str, int] | None:
    """(token, start): the last identifier in the typed part of the line (not a keyword), where a match
    inside other lines is anchored; None when there is none."""
    for match in reversed(list(IDENT.finditer(typed))):
        if match.group() not in stop:
            return match.group(), match.start()
    return None


def inline_candidates(
    typed: str, rest: str, start: int, texts: list[tuple[str, str]], max_candidates: int
) -> list[CopyCandidate]:
    """Mid-line fallback: where `typed[start:]` occurs inside any line of `texts` ((text, source) pairs),
    extended left over the rest of `typed`; the continuation is what follows it on that line."""
    needle, left_part = typed[start:], typed[:start]
    best: dict[str, CopyCandidate] = {}
    for text, source in texts:
        i, hits = text.find(needle), 0
        while i >= 0 and hits < INLINE_MAX_HITS:
            hits += 1
            _inline_hit(text, i, needle, left_part, rest, source, best)
            i = text.find(needle, i + 1)
    return _sorted(best, max_candidates)


def _inline_hit(text, i, needle, left_part, rest, source, best) -> None:
    line_start = text.rfind("\n", 0, i) + 1
    line_end = text.find("\n", i)
    line_end = len(text) if line_end < 0 else line_end
    left = common_suffix(text[line_start:i], left_part)
    if left == 0 and i > line_start and (text[i - 1].isalnum() or text[i - 1] == "_"):
        return  # the token is the tail of a longer identifier
    chars = left + len(needle)
    whole = text[i + len(needle) : line_end].rstrip()
    suffix = rest.strip()
    cont = whole[: len(whole) - len(suffix)].rstrip() if suffix and whole.endswith(suffix) else whole
    if chars < INLINE_MIN_CHARS or not cont.strip():
        return
    entry = best.get(cont)
    if entry is None:
        best[cont] = CopyCandidate(cont, 1, chars, source, whole, 0, kind="inline")
    else:
        entry.votes += 1
        if chars > entry.match_chars:
            entry.match_chars, entry.source = chars, source
