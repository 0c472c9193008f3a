"""From raw model candidates to suggestions: trim, syntax-check, deduplicate, rank.

Plain functions; the server's pipeline calls `process(candidates, site)`.

- Trim: one line in single-line mode; in multi-line mode cut at the end of the syntactic block
  the suggestion opened, or where it leaves the block the cursor is in (tree-sitter, not
  indentation). Then stop where it starts repeating the line below the cursor.
- Syntax check: insert the suggestion into the document and parse (incrementally, from the
  document's tree); a suggestion that adds ERROR or MISSING nodes beyond those already present
  is shortened (whole lines from the end; in single-line mode the part that duplicates the text
  right of the cursor) or rejected.
- Rank: drop empty and invalid candidates, deduplicate, best mean token log-probability first.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aigc_code.brackets import replaced_after_cursor
from aigc_code.languages import ts_parser
from aigc_code.mode import MULTI, SINGLE
from aigc_code.syntax import SYNTAX

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Node, Tree

_local = threading.local()


def parser_for(language: str):
    """A tree-sitter parser for `language`, one per thread (parsers are not thread-safe)."""
    cache = _local.__dict__.setdefault("parsers", {})
    parser = cache.get(language)
    if parser is None:
        parser = cache[language] = ts_parser(language)
    return parser


def count_errors(node: Node, lo: int | None = None, hi: int | None = None) -> int:
    """ERROR and MISSING nodes under `node` (an ERROR node counts once, whatever it holds),
    only those touching the byte range [lo, hi] when one is given."""
    count = 0
    stack = [node]
    while stack:
        n = stack.pop()
        if lo is not None and (n.end_byte < lo or n.start_byte > hi):
            continue
        if n.is_error or n.is_missing:
            count += 1
            continue
        if n.has_error:
            stack.extend(n.children)
    return count


def _advance(point: tuple[int, int], data: bytes) -> tuple[int, int]:
    lines = data.count(b"\n")
    if lines == 0:
        return point[0], point[1] + len(data)
    return point[0] + lines, len(data) - data.rfind(b"\n") - 1


@dataclass
class Site:
    """Where suggestions go: the document around the cursor.

    `tree`, when given, is the parse of `before + after`; insertions then re-parse
    incrementally from it.
    """

    language: str | None
    before: str
    after: str
    mode: str = MULTI
    tree: Tree | None = None
    _before_b: bytes = field(init=False, repr=False)
    _after_b: bytes = field(init=False, repr=False)
    _baseline: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _parses: dict[str, Tree] = field(default_factory=dict, init=False, repr=False)  # trimming and checking share

    def __post_init__(self) -> None:
        self._before_b = self.before.encode("utf-8")
        self._after_b = self.after.encode("utf-8")
        if self.language not in SYNTAX:
            self.language = None
        elif self.tree is None:
            self.tree = parser_for(self.language).parse(self._before_b + self._after_b)

    @property
    def cursor_byte(self) -> int:
        return len(self._before_b)

    @property
    def line_start_byte(self) -> int:
        return self._before_b.rfind(b"\n") + 1

    @property
    def rest_of_line(self) -> str:
        nl = self.after.find("\n")
        return (self.after if nl < 0 else self.after[:nl]).rstrip("\r")

    def line_below(self) -> str | None:
        """The first non-blank line after the cursor's line, or None."""
        nl = self.after.find("\n")
        if nl < 0:
            return None
        for line in self.after[nl + 1 : nl + 1 + 4000].split("\n"):
            if line.strip():
                return line.rstrip()
        return None

    def baseline_errors(self) -> int:
        return self._baseline_counts()[0]

    def _baseline_counts(self) -> tuple[int, int]:
        """(errors in the document, errors touching the cursor)."""
        if self._baseline is None:
            if self.tree is None:
                self._baseline = (0, 0)
            else:
                root = self.tree.root_node
                c = self.cursor_byte
                self._baseline = (count_errors(root), count_errors(root, c, c))
        return self._baseline

    def parse_with(self, text: str) -> Tree:
        """Parse of the document with `text` inserted at the cursor (once per text)."""
        tree = self._parses.get(text)
        if tree is None:
            tree = self._parses[text] = self._parse_with(text)
        return tree

    def _parse_with(self, text: str) -> Tree:
        assert self.language is not None
        ins = text.encode("utf-8")
        skip = replaced_after_cursor(self.rest_of_line, text)  # auto-closed brackets the item's range replaces
        new_src = self._before_b + ins + self._after_b[skip:]
        parser = parser_for(self.language)
        if self.tree is None:
            return parser.parse(new_src)
        old = self.tree.copy()
        c = self.cursor_byte
        row = self._before_b.count(b"\n")
        point = (row, c - self.line_start_byte)
        old.edit(
            start_byte=c,
            old_end_byte=c + skip,
            new_end_byte=c + len(ins),
            start_point=point,
            old_end_point=(row, point[1] + skip),
            new_end_point=_advance(point, ins),
        )
        return parser.parse(new_src, old)

    def adds_errors(self, text: str) -> bool:
        """Whether inserting `text` adds ERROR/MISSING nodes: to the document as a whole, or
        around the inserted text (an error elsewhere must not hide a new one here)."""
        if self.language is None:
            return False
        total, local = self._baseline_counts()
        root = self.parse_with(text).root_node
        c = self.cursor_byte
        return count_errors(root) > total or count_errors(root, c, c + len(text.encode("utf-8"))) > local


# --------------------------------------------------------------------------------------------
# Trimming


def _block_around(root: Node, first: int, line_start: int) -> tuple[Node, Node | None]:
    """(the innermost node that starts before the cursor's line and holds the suggestion's first
    byte, its child on that path: what the suggestion opened on the cursor's line)."""
    node = root.descendant_for_byte_range(first, first + 1)
    chain: list[Node] = []
    while node is not None:
        chain.append(node)
        node = node.parent
    b_index = next((i for i, n in enumerate(chain) if n.start_byte < line_start), len(chain) - 1)
    return chain[b_index], (chain[b_index - 1] if b_index > 0 else None)


def _added_inside(block: Node, c: int, e: int) -> int:
    """End byte of the last child that the insertion [c, e) added inside `block`, with the separator
    that follows it (`I: Iterator,` in a where clause, `A: 1,` in a Go literal), else `c`."""
    cut = c
    children = block.children
    for k, child in enumerate(children):
        if child.is_named and c < child.end_byte <= e:
            cut = child.end_byte
            after = children[k + 1] if k + 1 < len(children) else None
            if after is not None and not after.is_named and after.type in (",", ";") and after.end_byte <= e:
                cut = after.end_byte
    return cut


def trim_block(text: str, site: Site) -> str:
    """Cut a multi-line suggestion at the end of the block it opened, or where it leaves the
    block that encloses the cursor's line."""
    if site.language is None or not text.strip():
        return text
    ins = text.encode("utf-8")
    c = site.cursor_byte
    e = c + len(ins)
    first = c + (len(ins) - len(ins.lstrip()))
    tree = site.parse_with(text)
    root = tree.root_node
    line_start = site.line_start_byte
    block, top = _block_around(root, first, line_start)
    if block.type == "ERROR" or (top is not None and top.type == "ERROR"):
        return text
    cut = None
    if block.id != root.id and block.end_byte <= e:
        # The suggestion closed (or, in Python, dedented out of) the block around the cursor:
        # keep what it added inside that block.
        # keep what it added inside that block -- and the closer too when the document lacked it
        # (the insertion removes syntax errors: an infilled `}` is the answer, not a runaway).
        cut = _added_inside(block, c, e)
        if count_errors(root) < site.baseline_errors():
            cut = block.end_byte
    elif (
        top is not None
        and top.start_byte >= line_start
        and top.end_point.row > top.start_point.row
        and top.end_byte <= e
    ):
        # The suggestion opened a block on the cursor's line and finished it.
        cut = top.end_byte
    if cut is None:
        return text
    return ins[: max(cut - c, 0)].decode("utf-8", "ignore")


def trim_repetition(text: str, site: Site) -> str:
    """Stop where the suggestion starts repeating the line below the cursor."""
    below = site.line_below()
    if below is None or not text:
        return text
    lines = text.split("\n")
    cursor_line_blank = not site.before[site.before.rfind("\n") + 1 :].strip() and not site.rest_of_line.strip()
    indent = site.before[site.before.rfind("\n") + 1 :]
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if i == 0:
            # On a blank line, a first line equal to the next line (at the same indentation) is a repeat too.
            if cursor_line_blank and (indent + line.lstrip()).rstrip() == below.rstrip():
                return ""
            continue
        if line.rstrip() == below:
            return "\n".join(lines[:i])
    return text


_TERMINAL = re.compile(r"(return|raise|throw|break|continue|panic)\b")


def trim_degenerate(text: str) -> str:
    """Cut a small model's loops and dead code: a line that repeats the line before it, and
    lines at the same indentation after a return/raise/throw/break/continue."""
    lines = text.split("\n")
    previous = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if previous is not None:
            if line.strip() == previous.strip() and any(ch.isalnum() for ch in line):  # not "}" after "}"
                return "\n".join(lines[:i]).rstrip()
            indent = len(line) - len(line.lstrip())
            prev_indent = len(previous) - len(previous.lstrip())
            if indent == prev_indent and i > 1 and _TERMINAL.match(previous.strip()):
                return "\n".join(lines[:i]).rstrip()
        previous = line
    return text


def clean(text: str, site: Site, finish_reason: str = "") -> str:
    """Trim one raw candidate (no syntax check)."""
    if site.mode == SINGLE:
        text = text.split("\n", 1)[0]
    else:
        if finish_reason == "length" and "\n" in text.rstrip("\n"):
            text = text[: text.rstrip("\n").rfind("\n")]  # the last line was cut mid-way
        text = trim_block(text, site)
    text = trim_repetition(text, site)
    if site.mode != SINGLE:
        text = trim_degenerate(text)
    return text.rstrip()


# --------------------------------------------------------------------------------------------
# Syntax check


def _variants(text: str, site: Site, max_variants: int) -> list[str]:
    """`text` and shorter versions of it, longest first."""
    out = [text]
    rest = site.rest_of_line.strip()
    first, nl, tail = text.partition("\n")
    if rest:
        # The model may have written (part of) what already stands right of the cursor.
        body = first.rstrip()
        for k in range(len(rest), 0, -1):
            if body.endswith(rest[:k]) and len(body) > k:
                out.append(body[:-k] + (nl + tail if nl else ""))
    if "\n" in text:
        lines = text.split("\n")
        for n in range(len(lines) - 1, 0, -1):
            cut = "\n".join(lines[:n]).rstrip()
            if cut.strip():
                out.append(cut)
    seen: set[str] = set()
    uniq = []
    for v in out:
        if v not in seen:
            seen.add(v)
            uniq.append(v)
    return uniq[:max_variants]


def _indent_width(line: str) -> int:
    return len(line) - len(line.lstrip())


def _python_header_without_body(variant: str, site: Site) -> bool:
    """A Python suggestion that ends in a block header (`if x:`) with no body after it: neither in
    the suggestion nor in the document (the next line indented deeper than the header's)."""
    if not (site.mode == MULTI and site.language == "python" and variant.rstrip().endswith(":")):
        return False
    if site.rest_of_line.strip():
        return False
    header = (site.before.rsplit("\n", 1)[-1] + variant).rsplit("\n", 1)[-1]
    below = site.line_below()
    return below is None or _indent_width(below) <= _indent_width(header)


def fit_syntax(text: str, site: Site, max_variants: int = 12) -> str | None:
    """The longest version of `text` that adds no syntax errors to the document, or None."""
    if site.language is None:
        return text
    for variant in _variants(text, site, max_variants):
        if _python_header_without_body(variant, site):
            continue  # tree-sitter-python accepts a block header with no body; Python does not
        if not site.adds_errors(variant):
            return variant
    return None


# --------------------------------------------------------------------------------------------
# All together


@dataclass
class Suggestion:
    text: str
    score: float  # mean token log-probability (higher is better)
    finish_reason: str = ""


def process(candidates: Iterable, site: Site, check_syntax: bool = True) -> list[Suggestion]:
    """Trim, syntax-filter, deduplicate and rank candidates, best first.

    A candidate is anything with `text`, `mean_logprob` (or `score`) and optionally
    `finish_reason` attributes, or a `(text, score)` tuple.
    """
    items = []
    for cand in candidates:
        if isinstance(cand, tuple):
            text, score, reason = cand[0], cand[1], (cand[2] if len(cand) > 2 else "")
        else:
            text = cand.text
            score = getattr(cand, "mean_logprob", getattr(cand, "score", 0.0))
            reason = getattr(cand, "finish_reason", "")
        items.append((float(score) if score is not None else float("-inf"), text, reason))
    items.sort(key=lambda t: -t[0])
    out: list[Suggestion] = []
    tried: set[str] = set()
    kept: set[str] = set()
    for score, text, reason in items:
        if reason == "cancelled":
            continue
        text = clean(text, site, reason)
        if not text.strip() or text in tried:
            continue
        tried.add(text)
        if check_syntax:
            fitted = fit_syntax(text, site)
            if fitted is None or not fitted.strip():
                continue
            text = fitted
        if text in kept:
            continue
        kept.add(text)
        out.append(Suggestion(text, score, reason))
    return out
