"""Golden cases for the auto-closed bracket replace range (aigc_code/brackets.py)."""

import pytest

from aigc_code.brackets import replaced_after_cursor, unpaired_closers

# (text after the cursor on its line, suggestion, characters replaced, resulting line tail)
GOLDEN = [
    # the bug seen in VS Code: `if (n|)` + ` === 0) {` must not give `if (n === 0) {)`
    (")", " === 0) {", 1),
    (")", " + 1", 0),  # the suggestion does not close the bracket: keep the editor's `)`
    ("", " === 0) {", 0),  # nothing after the cursor
    ("  ", ") {", 0),  # only whitespace after the cursor
    ("))", "b))", 2),  # `f(g(a|))`
    ("))", "b)", 1),  # closes only the inner call
    (")", "a, b):\n    return a + b", 1),  # def f(|) -> multi-line body
    ("]", "1, 2, 3]", 1),
    ("})", "a: 1})", 2),
    (")", "x[0])", 1),  # brackets opened and closed inside the suggestion are skipped
    (")", 'x, ")")', 1),  # a `)` inside a string literal of the suggestion does not count
    ('")', 'lo")', 2),  # print("hel|") -> the quote and the bracket were auto-closed
    (")", '"a")', 1),  # a quote that opens a string of the suggestion
    (") + y", "x)", 1),  # replaces the auto-closed `)` only, never the text after it
    ("x)", "y)", 0),  # the text right after the cursor is not an auto-closed character
    (")", "x]", 0),  # mismatched closer: not balanced code, replace nothing
    (")]", "x)}", 1),  # closes `)` then something else: only the common auto-closed prefix
    (")", "", 0),
    (")", "'it\\'s')", 1),  # escaped quote inside the suggestion's string
    (")", "x) + g(y", 0),  # the `)` after the cursor is needed to close the suggestion's own `g(`
    (")", " === 0) {", 1),  # an open `{` (closed on a later line) does not need the `)`
    ('")', 'a", "b', 0),  # the suggestion's own string is still open: the `"` after the cursor closes it
]


@pytest.mark.parametrize(("after", "suggestion", "expected"), GOLDEN)
def test_golden(after: str, suggestion: str, expected: int) -> None:
    assert replaced_after_cursor(after, suggestion) == expected


@pytest.mark.parametrize(
    ("line", "cursor", "suggestion", "result"),
    [
        ("if (n)", 5, " === 0) {", "if (n === 0) {"),
        ('print("hel")', 10, 'lo")', 'print("hello")'),
        ("def f()", 6, "a, b):", "def f(a, b):"),
        ("total = sum(x)", 13, " for x in xs)", "total = sum(x for x in xs)"),
    ],
)
def test_applied_line_is_valid(line: str, cursor: int, suggestion: str, result: str) -> None:
    after = line[cursor:]
    n = replaced_after_cursor(after, suggestion)
    assert line[:cursor] + suggestion + after[n:] == result


def test_unpaired_closers_order() -> None:
    assert unpaired_closers("a]) + {b}) ", "])") == "]))"
    assert unpaired_closers("(a)") == ""
