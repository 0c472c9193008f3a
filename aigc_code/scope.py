"""The cursor's scope: its enclosing function, and the text around it that names what it uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aigc_code.syntax import SYNTAX

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Node, Tree


_FUNCTION_LIKE = ("arrow_function", "function_expression", "lambda_expression", "closure_expression", "func_literal")


def enclosing_function(tree: Tree | None, offset: int, language: str, src: bytes | None = None) -> Node | None:
    """Innermost function-like definition containing byte `offset`, if any.

    In Python a function ends at its last statement, so a cursor on an indented blank line
    after it is looked up from the last code before the cursor, when the cursor's
    indentation is deeper than the function's.
    """
    syntax = SYNTAX.get(language)
    if tree is None or syntax is None:
        return None

    def find(at: int) -> Node | None:
        node = tree.root_node.descendant_for_byte_range(max(at - 1, 0), at)
        while node is not None:
            if node.type in syntax.functions or node.type in _FUNCTION_LIKE:
                return node
            node = node.parent
        return None

    found = find(offset)
    if found is None and language == "python" and src is not None:
        line_start = src.rfind(b"\n", 0, offset) + 1
        indent = src[line_start:offset]
        if indent and not indent.strip():
            code_end = len(src[:line_start].rstrip())
            candidate = find(code_end)
            while candidate is not None and candidate.start_point.column >= len(indent):
                parent = candidate.parent
                candidate = None
                while parent is not None:
                    if parent.type in syntax.functions:
                        candidate = parent
                        break
                    parent = parent.parent
            found = candidate
    return found


def scope_text(
    tree: Tree | None, src: bytes, offset: int, language: str, before_lines: int = 40, after_lines: int = 10
) -> str:
    """The cursor's surroundings: its enclosing function (capped), else a window of lines."""
    func = enclosing_function(tree, offset, language, src)
    start = src.rfind(b"\n", 0, offset)
    for _ in range(before_lines):
        if start <= 0:
            start = 0
            break
        start = src.rfind(b"\n", 0, start)
    start = max(start, 0)
    end = offset
    for _ in range(after_lines):
        nxt = src.find(b"\n", end + 1)
        if nxt < 0:
            end = len(src)
            break
        end = nxt
    if func is not None:
        start = max(start, func.start_byte)
        end = min(end, func.end_byte) if func.end_byte > offset else end
    return src[start:end].decode("utf-8", "replace")
