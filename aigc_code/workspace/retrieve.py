"""Chunk retrieval: code windows similar to the code around the cursor (BM25 over identifier tokens).

Files are cut into blocks of `BLOCK_LINES` lines; a retrieved chunk is a window of two consecutive
blocks (20 lines, stride 10, as RepoCoder does), scored as the sum of its blocks' scores. Each block
is its set of identifier tokens (keywords and one-letter names dropped), hashed to 32 bits; a
`BlockSegment` keeps the postings (token -> blocks) of a batch of files sorted by token, so a query
is a few `searchsorted` calls and one `bincount`. Tokens that occur in more than `COMMON_FRACTION`
of all blocks are ignored at query time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

BLOCK_LINES = 10
WINDOW_BLOCKS = 2
COMMON_FRACTION = 0.05
K1, B = 1.2, 0.75
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]+")
MASK = 0xFFFFFFFF
STOPWORDS = frozenset(
    """
    and as assert async await break case catch class const continue def default del do elif else enum
    except export extends false final finally fn for from func function go if impl import in interface
    is let lambda loop match mod mut new nil none not null or package pass pub raise return self static
    struct super switch this throw throws true try type typeof use var void while with yield
    int str bool float string char long short unsigned double auto usize i32 i64 u8 u32 u64 err
    None True False Self the
    """.split()
)
COMPATIBLE = {"typescript": "js", "typescriptreact": "js", "javascript": "js", "c": "c", "cpp": "c"}


@dataclass
class RetrievedChunk:
    """A window of another (or the same) file; `start_line` is 0-based; `shown_path`: its path inside
    the workspace folder, what the model is shown."""

    path: str
    text: str
    score: float
    start_line: int
    language: str = ""
    shown_path: str = ""


def language_group(language: str | None) -> str:
    return COMPATIBLE.get(language or "", language or "")


def token_hashes(text: str) -> np.ndarray:
    """Distinct identifier-token hashes of `text` (uint32, sorted)."""
    tokens = set(TOKEN.findall(text)) - STOPWORDS
    return np.unique(np.fromiter((hash(t) & MASK for t in tokens), dtype=np.uint32, count=len(tokens)))


@dataclass
class FileBlocks:
    """What a file contributes to a `BlockSegment`."""

    fid: int
    tokens: list[np.ndarray]  # per block: its distinct token hashes


_BLOCKS: dict[str, np.ndarray] = {}  # block text -> token hashes, for files edited again and again


def file_blocks(fid: int, lines: list[str], memo: bool = False) -> FileBlocks:
    """`memo`: for a file edited in an editor (most blocks are unchanged since its previous version)."""
    blocks = ["\n".join(lines[i : i + BLOCK_LINES]) for i in range(0, len(lines), BLOCK_LINES)]
    if not memo:
        return FileBlocks(fid, [token_hashes(b) for b in blocks])
    if len(_BLOCKS) > 4_000:  # ~3 MB at most
        _BLOCKS.clear()
    tokens = []
    for block in blocks:
        found = _BLOCKS.get(block)
        if found is None:
            found = _BLOCKS[block] = token_hashes(block)
        tokens.append(found)
    return FileBlocks(fid, tokens)


class BlockSegment:
    """Immutable postings of some files' blocks: `post_tok` sorted, `post_blk` the block of each posting."""

    def __init__(self, blk_fid, blk_no, blk_len, post_tok, post_blk):
        self.blk_fid, self.blk_no, self.blk_len = blk_fid, blk_no, blk_len
        order = np.argsort(post_tok, kind="stable")
        self.post_tok, self.post_blk = post_tok[order], post_blk[order].astype(np.int32)
        avg_len = max(1.0, float(blk_len.mean())) if len(blk_len) else 1.0
        self.norm = ((K1 + 1) / (1 + K1 * (1 - B + B * blk_len / avg_len))).astype(np.float32)

    @classmethod
    def from_files(cls, files: list[FileBlocks]) -> BlockSegment:
        fid, no, length, toks, blks = [], [], [], [], []
        base = 0
        for f in files:
            for i, t in enumerate(f.tokens):
                fid.append(f.fid)
                no.append(i)
                length.append(len(t))
                toks.append(t)
                blks.append(np.full(len(t), base + i, dtype=np.int32))
            base += len(f.tokens)
        return cls(
            np.asarray(fid, dtype=np.int32),
            np.asarray(no, dtype=np.int32),
            np.asarray(length, dtype=np.int32),
            np.concatenate(toks) if toks else np.zeros(0, dtype=np.uint32),
            np.concatenate(blks) if blks else np.zeros(0, dtype=np.int32),
        )

    @classmethod
    def merge(cls, segments: list[BlockSegment], alive: np.ndarray) -> BlockSegment:
        """One segment with the live blocks of `segments`."""
        fid, no, length, toks, blks = [], [], [], [], []
        base = 0
        for s in segments:
            keep = alive[s.blk_fid] if len(s.blk_fid) else np.zeros(0, dtype=bool)
            new_id = np.cumsum(keep) - 1 + base
            fid.append(s.blk_fid[keep])
            no.append(s.blk_no[keep])
            length.append(s.blk_len[keep])
            live_post = keep[s.post_blk] if len(s.post_blk) else np.zeros(0, dtype=bool)
            toks.append(s.post_tok[live_post])
            blks.append(new_id[s.post_blk[live_post]].astype(np.int32))
            base += int(keep.sum())
        if not fid:
            return cls.from_files([])
        return cls(*(np.concatenate(x) for x in (fid, no, length, toks, blks)))

    def __len__(self) -> int:
        return len(self.blk_fid)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.blk_fid, self.blk_no, self.blk_len, self.post_tok, self.post_blk, self.norm))

    def ranges(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.searchsorted(self.post_tok, query, "left"), np.searchsorted(self.post_tok, query, "right")


@dataclass
class Hit:
    segment: BlockSegment
    block: int  # index of the window's first block in the segment
    score: float


def search(
    segments: list[BlockSegment], query: np.ndarray, allowed: np.ndarray, limit: int, total_blocks: int
) -> list[Hit]:
    """The `limit` best windows over all segments; `allowed[fid]` says which files may be returned."""
    if len(query) == 0 or total_blocks == 0:
        return []
    spans = [seg.ranges(query) for seg in segments]
    df = sum(hi - lo for lo, hi in spans)
    common = df > max(20, COMMON_FRACTION * total_blocks)
    idf = np.log1p((total_blocks - df + 0.5) / (df + 0.5))
    idf[common | (df == 0)] = 0.0
    hits: list[Hit] = []
    for seg, (lo, hi) in zip(segments, spans, strict=True):
        hits.extend(_search_segment(seg, lo, hi, idf, allowed, limit))
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:limit]


def _search_segment(seg, lo, hi, idf, allowed, limit) -> list[Hit]:
    counts = hi - lo
    use = (counts > 0) & (idf > 0)
    if not use.any() or len(seg) == 0:
        return []
    idx = np.concatenate([seg.post_blk[a:b] for a, b in zip(lo[use], hi[use], strict=True)])
    weights = np.repeat(idf[use], counts[use])
    block_score = np.bincount(idx, weights=weights, minlength=len(seg)) * seg.norm
    window = block_score.copy()
    same_file = seg.blk_fid[1:] == seg.blk_fid[:-1]
    window[:-1] += np.where(same_file, block_score[1:], 0.0)
    window[~allowed[seg.blk_fid]] = 0.0
    k = min(limit, int((window > 0).sum()))
    if k == 0:
        return []
    top = np.argpartition(-window, k - 1)[:k]
    return [Hit(seg, int(b), float(window[b])) for b in top]


def idf_free_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted token-hash sets (near-duplicate test)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def window_lines(start_block: int) -> tuple[int, int]:
    start = start_block * BLOCK_LINES
    return start, start + WINDOW_BLOCKS * BLOCK_LINES


def overlap_fraction(chunk_lines: list[str], exclude_lines: set[str]) -> float:
    """Share of the chunk's non-blank stripped lines that also appear in the excluded text."""
    stripped = [line.strip() for line in chunk_lines if line.strip()]
    if not stripped:
        return 1.0
    return sum(1 for line in stripped if line in exclude_lines) / len(stripped)
