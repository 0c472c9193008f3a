"""Where the cursor is: complete one line, a block, or nothing, and where the model must stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aigc_code.syntax import PY_BLOCK_PARENTS, PY_COMPOUND, SYNTAX

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Node, Tree

NONE, SINGLE, MULTI = "none", "single", "multi"


def _line_bounds(src: bytes, offset: int) -> tuple[int, int]:
    start = src.rfind(b"\n", 0, offset) + 1
    end = src.find(b"\n", offset)
    return start, (len(src) if end < 0 else end)


def _leaf_before(tree: Tree, offset: int) -> Node | None:
    if offset <= 0:
        return None
    return tree.root_node.descendant_for_byte_range(offset - 1, offset)


_CLOSERS = set(")]}>;,'\"` \t")


def _inside_comment_or_string(leaf: Node | None, offset: int) -> bool:
    node = leaf
    while node is not None and node.parent is not None:
        kind = node.type
        if "comment" in kind and node.start_byte < offset <= node.end_byte:
            return True
        if ("string" in kind or kind in ("char_literal", "rune_literal")) and node.start_byte < offset < node.end_byte:
            return True
        node = node.parent
    return False


def _python_colon_opens_block(head: str, leaf: Node | None) -> bool:
    """A Python `:` opens a block only after a compound statement's header, not after a dict key,
    a slice or a lambda."""
    first = head.split(None, 1)[0].split("(")[0] if head.split() else ""
    return first in PY_COMPOUND or (
        leaf is not None and leaf.parent is not None and leaf.parent.type in PY_BLOCK_PARENTS
    )


def completion_mode(tree: Tree | None, src: bytes, offset: int, language: str) -> str:
    """`MULTI`, `SINGLE` or `NONE` for a cursor at byte `offset`, from the syntax node there.

    None: the cursor touches a word on its right (middle of an identifier, or just before one).
    Single line: inside a comment or string, or with code after the cursor on its line, or
    after a partial statement. Multi-line: on a blank (indentation-only) line, or after a
    line-ending block opener (`:` of a Python compound statement, `{`, ...).
    """
    line_start, line_end = _line_bounds(src, offset)
    before = src[line_start:offset].decode("utf-8", "replace")
    after = src[offset:line_end].decode("utf-8", "replace").rstrip("\r")
    if after[:1].isalnum() or after[:1] == "_":
        return NONE
    leaf = _leaf_before(tree, offset) if tree is not None else None
    if _inside_comment_or_string(leaf, offset):
        return SINGLE
    syntax = SYNTAX.get(language)
    rest = after.strip()
    head = before.rstrip()
    only_closers = not rest or set(rest) <= _CLOSERS
    if not head:
        return MULTI if only_closers else SINGLE
    if syntax is None or not only_closers or not head.endswith(syntax.openers):
        return SINGLE
    if head.endswith(":"):
        return MULTI if _python_colon_opens_block(head, leaf) else SINGLE
    if rest and not head.endswith("{"):
        return SINGLE  # e.g. `foo(|)`: the arguments, on this line
    return MULTI


def stop_sequences(language: str, mode: str, src: bytes, offset: int) -> list[str]:
    """Stop strings for the model: end of line for one-line completions, else the start of a
    new top-level block (when the cursor is inside one) or two blank lines."""
    if mode == SINGLE:
        return ["\n"]
    stops = ["\n\n\n"]
    line_start, _ = _line_bounds(src, offset)
    at_top_level_blank = not src[line_start:offset].strip() and offset == line_start
    if not at_top_level_blank:
        if language == "python":
            stops += ["\ndef ", "\nclass ", "\nasync def ", "\n@", "\nif __name__"]
        elif language in SYNTAX:
            stops += ["\n}"]
    return stops
