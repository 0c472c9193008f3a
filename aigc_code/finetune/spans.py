"""Where to cut fill-in-the-middle examples: syntactic units found with tree-sitter, and lines.

A span is a (start, end) character range of a file that becomes the "middle" the model learns to
fill in, with everything before it as the prefix and everything after it as the suffix. Spans
follow the units an editor user actually leaves unfinished:

- ``body``: a function or method body,
- ``block``: any other block or bracketed literal (if/for bodies, class bodies, dicts, arrays),
- ``statement``: one statement or declaration,
- ``arguments``: the inside of an argument or parameter list (the cursor just after ``(``),
- ``line``: the rest of a line from its indentation or a random column (the next-line case).

The node types are matched by name patterns, so one table serves the eight grammars.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from aigc_code.languages import LANGUAGES, ts_parser

KINDS = ("body", "block", "statement", "arguments", "line")
# How often each kind is drawn (among those a file has): the next line is what editors ask for most.
KIND_WEIGHTS = {"body": 1.0, "block": 1.0, "statement": 1.0, "arguments": 1.0, "line": 2.0}

_BLOCK_TYPES = {
    "block",
    "statement_block",
    "compound_statement",
    "declaration_list",
    "class_body",
    "field_declaration_list",
    "interface_body",
    "enum_body",
    "switch_body",
    "switch_block",
    "match_block",
    "object",
    "dictionary",
    "list",
    "array",
    "set",
    "initializer_list",
    "struct_expression",
    "composite_literal",
    "literal_value",
    "constructor_body",
    "enum_variant_list",
    "field_initializer_list",
    "object_type",
}
_ARGUMENT_TYPES = {
    "argument_list",
    "arguments",
    "parameters",
    "formal_parameters",
    "parameter_list",
    "type_arguments",
    "type_parameters",
    "lambda_parameters",
}
_STATEMENT = re.compile(
    r"(_statement|_declaration|_definition|_item|_declarator|^assignment|^decorated_definition|"
    r"^let_declaration|^expression_statement)$"
)
_FUNCTION = re.compile(r"function|method|constructor|lambda|closure|arrow")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def _byte_to_char(text: str, data: bytes):
    """Map a UTF-8 byte offset to a character offset (identity for ASCII text)."""
    if len(data) == len(text):
        return lambda b: b
    table = [0] * (len(data) + 1)
    pos = 0
    for i, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        for k in range(n):
            table[pos + k] = i
        pos += n
    table[pos] = len(text)
    return table.__getitem__


def classify(node) -> str | None:
    """The span kind of a tree-sitter node, or None when it is not a unit we cut at."""
    t = node.type
    parent = node.parent
    if parent is not None and _FUNCTION.search(parent.type) and parent.child_by_field_name("body") == node:
        return "body"
    if t in _ARGUMENT_TYPES:
        return "arguments"
    if t in _BLOCK_TYPES:
        return "block"
    if _STATEMENT.search(t):
        return "statement"
    return None


def syntactic_spans(text: str, language: str, max_chars: int = 2000) -> list[Span]:
    """Spans of the syntactic units in `text` (at most `max_chars` long, not blank)."""
    if language not in LANGUAGES:
        return []
    data = text.encode("utf-8")
    try:
        tree = ts_parser(language).parse(data)
    except Exception:  # a grammar that cannot be loaded: fall back to lines and random spans
        return []
    to_char = _byte_to_char(text, data)
    spans: list[Span] = []
    cursor = tree.walk()
    visited_children = False
    while True:
        node = cursor.node
        if not visited_children:
            if node.is_named and node.end_byte - node.start_byte <= max_chars * 4:
                kind = classify(node)
                if kind is not None:
                    span = _node_span(node, kind, text, to_char)
                    if span is not None and span.end - span.start <= max_chars:
                        spans.append(span)
            if cursor.goto_first_child():
                continue
        if cursor.goto_next_sibling():
            visited_children = False
            continue
        if not cursor.goto_parent():
            break
        visited_children = True
    return spans


def _node_span(node, kind: str, text: str, to_char) -> Span | None:
    start, end = to_char(node.start_byte), to_char(node.end_byte)
    if kind == "arguments":
        # the inside of the brackets: the editor case of a cursor right after "(" with ")" auto-closed
        if end - start >= 2 and text[start] in "(<[" and text[end - 1] in ")>]":
            start, end = start + 1, end - 1
    elif kind in ("block", "body") and end - start >= 2 and text[start] in "{[(" and text[end - 1] in "}])":
        start, end = start + 1, end - 1
    if end <= start or not text[start:end].strip():
        return None
    return Span(start, end, kind)


def line_span(text: str, rng: random.Random) -> Span | None:
    """The rest of a random non-blank line, from its indentation (mostly) or a random column."""
    lines = text.splitlines(keepends=True)
    offsets, pos = [], 0
    for line in lines:
        if line.strip():
            offsets.append((pos, line))
        pos += len(line)
    if not offsets:
        return None
    pos, line = rng.choice(offsets)
    body = line.rstrip("\r\n")
    indent = len(body) - len(body.lstrip())
    col = indent if rng.random() < 0.7 or len(body) - indent < 2 else rng.randrange(indent, len(body))
    if col >= len(body):
        return None
    return Span(pos + col, pos + len(body), "line")


class FileSpans:
    """The syntactic spans of one file by kind, computed once and sampled many times."""

    def __init__(self, text: str, language: str, max_chars: int = 2000):
        self.text = text
        self.by_kind: dict[str, list[Span]] = {}
        for span in syntactic_spans(text, language, max_chars):
            self.by_kind.setdefault(span.kind, []).append(span)

    def sample(self, rng: random.Random, kind: str | None = None) -> Span | None:
        """A span of `kind` (default: a kind drawn by `KIND_WEIGHTS` among those present, lines included)."""
        if kind is None:
            kinds = [k for k in KINDS if k == "line" or self.by_kind.get(k)]
            kind = rng.choices(kinds, [KIND_WEIGHTS[k] for k in kinds])[0]
        if kind == "line":
            return line_span(self.text, rng)
        spans = self.by_kind.get(kind)
        return rng.choice(spans) if spans else None
