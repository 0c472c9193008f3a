"""Replace range for auto-closed brackets and quotes.

Editors auto-close brackets: after typing `if (n` the line reads `if (n|)` with the cursor before an
auto-inserted `)`. A suggestion ` === 0) {` inserted at the cursor would give `if (n === 0) {)`. The fix
(the bracket-stack replace range of Tabby) is to let the suggestion replace the auto-closed characters
after the cursor that it closes itself: `replaced_after_cursor(")", " === 0) {")` is 1.

Pure functions, no editor or model state; the LSP server turns the count into the item's range end, so
every editor gets it.
"""

from __future__ import annotations

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
QUOTES = frozenset("\"'`")


def unpaired_closers(suggestion: str, after_cursor: str = "") -> str:
    """The closing brackets/quotes in `suggestion` whose opener is not in `suggestion`, in order."""
    return _scan(suggestion, after_cursor)[0]


def _scan(suggestion: str, after_cursor: str) -> tuple[str, list[str]]:
    """(unpaired closers, brackets/quotes the suggestion leaves open, innermost last).

    A quote closes the string the cursor is in when it is the next character the editor auto-closed
    (the next unmatched character of `after_cursor`); otherwise it opens a string of the suggestion.
    Scanning stops at a closer that does not match the innermost open bracket (the text is not balanced
    code; nothing after it is trusted).
    """
    stack: list[str] = []
    closers: list[str] = []
    escaped = False
    for ch in suggestion:
        if stack and stack[-1] in QUOTES:
            escaped = _scan_in_string(stack, ch, escaped)
            continue
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack:
                if stack[-1] != CLOSERS[ch]:
                    break
                stack.pop()
            else:
                closers.append(ch)
        elif ch in QUOTES:
            if not stack and after_cursor[len(closers) : len(closers) + 1] == ch:
                closers.append(ch)
            else:
                stack.append(ch)
    return "".join(closers), stack


def _scan_in_string(stack: list[str], ch: str, escaped: bool) -> bool:
    """One character inside a string literal of the suggestion; returns the new `escaped` flag."""
    if escaped:
        return False
    if ch == "\\":
        return True
    if ch == stack[-1] or ch == "\n":
        stack.pop()  # closing quote (or an unterminated string ends at the line end)
    return False


def replaced_after_cursor(after_cursor: str, suggestion: str) -> int:
    """How many characters right after the cursor (on the cursor's line) `suggestion` should replace.

    `after_cursor` is the text from the cursor to the end of the line. Only auto-closed brackets and
    quotes that the suggestion itself closes are replaced, never other text:

    >>> replaced_after_cursor(")", " === 0) {")
    1
    >>> replaced_after_cursor(")", " + 1")
    0
    """
    rest = after_cursor.rstrip()
    if not rest or not suggestion:
        return 0
    closers, still_open = _scan(suggestion, rest)
    if not closers:
        return 0
    if still_open and rest[0] == OPENERS.get(still_open[-1], still_open[-1]):
        return 0  # `f(|)` + `x) + g(y`: the `)` after the cursor now closes the suggestion's own `g(`
    if rest.startswith(closers):
        return len(closers)
    if closers.startswith(rest):
        return len(rest)
    common = _common_prefix(rest, closers)
    return common if common and all(c in CLOSERS or c in QUOTES for c in rest[:common]) else 0


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
