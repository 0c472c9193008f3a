"""What the model sees for one completion request: FIM prefix/suffix windows within token
budgets, with extra context prepended to the prefix — the file's imports, signatures of the
definitions the cursor's scope refers to, and snippets of other open files ranked by identifier
overlap with the cursor's surroundings, each tagged with its path in a comment.

`cursor` arguments are `str` indices; offsets into source bytes are byte offsets (tree-sitter's).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aigc_code.budget import ApproxTokens, Budget, TokenCounter, count_cached, truncate_right_cached
from aigc_code.languages import comment_line
from aigc_code.outline import Chunk, Definition, FileIndex, index_file, named_definitions
from aigc_code.scope import enclosing_function, scope_text
from aigc_code.snapshot import SourceFile, byte_len
from aigc_code.syntax import SYNTAX, family, identifiers


@dataclass
class Section:
    kind: str  # "imports" | "signatures" | "snippet"
    path: str
    text: str
    tokens: int


@dataclass
class Prompt:
    prefix: str  # extra context + prefix window
    suffix: str
    prefix_window: str
    suffix_window: str
    context: str = ""
    sections: list[Section] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)  # other files, for a repository format

    @property
    def context_sections(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sections:
            out[s.kind] = out.get(s.kind, 0) + 1
        return out


def prefix_window(text: str, tokens: TokenCounter, max_tokens: int) -> str:
    """The end of `text` within `max_tokens`, starting at a line boundary when cut.

    Lines are considered within the last `max_tokens * 8` characters (a partial first line
    there is dropped). The lines above the cursor's are costed once per text above it
    (`_costs_above`), so a keystroke on the cursor's line costs the count of that line only."""
    if max_tokens <= 0:
        return ""
    window_start = len(text) - max_tokens * 8  # a line must start after this (unless it starts the text)
    line_start = text.rfind("\n") + 1
    if 0 < window_start and line_start <= window_start:  # the cursor's line is longer than the window
        tail = text[window_start:]
        return tokens.truncate_left(tail, max_tokens) if count_cached(tokens, tail) > max_tokens else ""
    cursor_line = text[line_start:]
    left = max_tokens - count_cached(tokens, cursor_line)
    if left < 0:  # the cursor's own line alone is over the budget
        return tokens.truncate_left(cursor_line, max_tokens)
    start = line_start
    for cost, begin in _costs_above(tokens, text[:line_start], max_tokens):
        if cost > left or (begin <= window_start and window_start > 0):
            break
        left -= cost
        start = begin
    return text[start:]


_ABOVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # counter -> (text above, budget, costs)


def _costs_above(tokens: TokenCounter, above: str, max_tokens: int) -> list[tuple[int, int]]:
    """(tokens, start index) of the lines of `above` (which ends at a line break), bottom up,
    until `max_tokens` is spent. Remembered for the last `above` of each counter: the same text
    again (a keystroke on the cursor's line) costs nothing, and one that extends it (Enter, an
    accepted suggestion) costs only its new lines."""
    try:
        memo = _ABOVE.get(tokens)
    except TypeError:  # a counter that cannot be weakly referenced: no memo
        memo = None
    old, old_costs = ("", []) if memo is None or memo[1] != max_tokens else (memo[0], memo[2])
    if old and old == above:
        return old_costs
    if not (old and above.startswith(old)):
        old, old_costs = "", []
    out: list[tuple[int, int]] = []
    total, end = 0, len(above)
    while end > len(old) and total <= max_tokens:
        begin = above.rfind("\n", 0, end - 1) + 1
        cost = count_cached(tokens, above[begin:end])
        out.append((cost, begin))
        total, end = total + cost, begin
    if end == len(old):  # the rest is the remembered text's lines
        out += old_costs
    try:
        _ABOVE[tokens] = (above, max_tokens, out)
    except TypeError:
        pass
    return out


def suffix_window(text: str, tokens: TokenCounter, max_tokens: int) -> str:
    """The start of `text` within `max_tokens`, ending at a line boundary when cut (counted like
    `prefix_window`)."""
    if max_tokens <= 0:
        return ""
    rough = text[: max_tokens * 8]
    lines = rough.split("\n")
    last = len(lines) - 1
    total, end = 0, 0
    for i, line in enumerate(lines):
        cost = count_cached(tokens, line if i == last else line + "\n")
        if total + cost > max_tokens:
            break
        total, end = total + cost, i + 1
    if end == len(lines) and len(rough) == len(text):
        return rough
    end = min(end, last)  # the rough cut's last line is partial
    if end == 0:  # the rest of the cursor's line alone is over the budget
        return tokens.truncate_right(lines[0], max_tokens)
    return "".join(line + "\n" for line in lines[:end])


@dataclass
class _Room:
    """What is left of the context budget while sections are chosen, and each file's header cost."""

    tokens: TokenCounter
    language: str
    left: int
    headers: dict[str, int] = field(default_factory=dict)

    def header(self, path: str) -> int:
        """Tokens of the path comment that heads a file's context (0 once it is in the prompt)."""
        return 0 if path in self.headers else count_cached(self.tokens, comment_line(self.language, path)) + 1

    def cost(self, path: str, body: str) -> int:
        """Tokens `body` adds, its file's header included the first time (and remembered)."""
        extra = self.header(path)
        if extra:
            self.headers[path] = extra
        return count_cached(self.tokens, body) + 1 + extra


def _default_index() -> Callable[[SourceFile], FileIndex]:
    memo: dict[str, FileIndex] = {}

    def index(f: SourceFile) -> FileIndex:
        if f.path not in memo:
            memo[f.path] = index_file(f.text, f.tree, f.language, f.source())
        return memo[f.path]

    return index


def _import_section(doc: SourceFile, own_imports, visible_start: int, room: _Room, budget: Budget) -> list[Section]:
    """The file's imports that the prefix window cut off."""
    imports = [t for (s, e, t) in own_imports if s < visible_start]
    if not imports:
        return []
    body = "\n".join(imports)
    cap = max(budget.context_tokens // 4, 1)
    if count_cached(room.tokens, body) > cap:
        body = truncate_right_cached(room.tokens, body, cap)
        body = body[: body.rfind("\n")] if "\n" in body else ""
    if not body.strip():
        return []
    c = room.cost(doc.path, body)
    if c > room.left:
        return []
    room.left -= c
    return [Section("imports", doc.path, body, c)]


def _signature_candidates(doc, own_table, related, index, used, visible, enclosing):
    """(last use in the scope, path, definition, container) for each name the scope uses."""
    last_use = {name: i for i, name in enumerate(used)}
    candidates: list[tuple[int, str, Definition, Definition | None]] = []
    for f in [doc, *related]:
        table = own_table if f is doc else index(f).by_name()
        for name, at in last_use.items():
            for defn, parent in table.get(name, ()):
                if f is doc and (visible[0] <= defn.start and defn.end <= visible[1]):
                    continue  # already in the prompt
                inside = enclosing is not None and defn.start <= enclosing.start_byte < defn.end
                if f is doc and inside and defn.kind == "function":
                    continue
                candidates.append((at, f.path, defn, parent))
    candidates.sort(key=lambda c: -c[0])
    return candidates


def _choose_signatures(candidates, room: _Room, cap: int) -> dict:
    """Outlines of the definitions used, most recently used first, within `cap` tokens."""
    chosen: dict[tuple[str, int], tuple[str, Definition, set[str] | None]] = {}
    for _, path, defn, parent in candidates:
        top = parent or defn
        key = (path, top.start)
        if key in chosen:
            entry = chosen[key]
            if entry[2] is not None and parent is not None:
                entry[2].add(defn.name)
            continue
        only = {defn.name} if parent is not None else None
        c = room.cost(path, top.outline(only=only))
        if c > cap:
            continue
        cap -= c
        room.left -= c
        chosen[key] = (path, top, only)
    return chosen


def _snippet_sections(related, index, used, room: _Room) -> tuple[list[Section], list[tuple[str, Chunk]]]:
    """Chunks of other open files, by identifier overlap (Jaccard) with the cursor's surroundings."""
    near = set(used)
    if not related or room.left <= 0 or not near:
        return [], []
    scored: list[tuple[float, str, Chunk]] = []
    for f in related:
        for chunk in index(f).chunks:
            inter = len(near & chunk.idents) if chunk.idents else 0
            if inter:
                scored.append((inter / len(near | chunk.idents), f.path, chunk))
    scored.sort(key=lambda s: -s[0])
    sections, snippets = [], []
    for score, path, chunk in scored[:8]:
        if score < 0.05:
            break
        c = room.cost(path, chunk.text)
        if c > room.left:
            continue
        room.left -= c
        snippets.append((path, chunk))
        sections.append(Section("snippet", path, chunk.text, c))
    return sections, snippets


def _first_lines_within(text: str, room: _Room, path: str, min_lines: int = 3) -> str:
    """The longest run of `text`'s first lines that fits what is left (at least `min_lines`)."""
    cut = room.tokens.truncate_right(text, max(0, room.left - room.header(path) - 1))
    cut = cut[: cut.rfind("\n")] if "\n" in cut else ""
    return cut if cut.count("\n") + 1 >= min_lines else ""


def _retrieved_sections(retrieved: Sequence, window: str, room: _Room) -> list[Section]:
    """Chunks of workspace files (the repository index), best first, not already in the prompt."""
    sections = []
    for chunk in retrieved:
        text = chunk.text.rstrip("\n")
        if not text.strip() or text in window:
            continue
        path = getattr(chunk, "shown_path", "") or chunk.path
        c = room.cost(path, text)
        if c > room.left:  # a small context: the chunk's first lines, when a few of them fit
            text = _first_lines_within(text, room, path)
            c = room.cost(path, text) if text else c
            if not text or c > room.left:
                continue
        room.left -= c
        sections.append(Section("retrieved", path, text, c))
    return sections


def _signature_sections(chosen: dict, snippets: list[tuple[str, Chunk]], tokens: TokenCounter) -> list[Section]:
    """Signatures grouped by file; one whose whole definition is in a chosen snippet would say it twice."""
    by_path: dict[str, list[str]] = {}
    for path, top, only in chosen.values():
        if any(p == path and ch.start_line <= top.rows[0] and top.rows[1] <= ch.end_line for p, ch in snippets):
            continue
        by_path.setdefault(path, []).append(top.outline(only=only))
    return [
        Section("signatures", path, "\n".join(b), count_cached(tokens, "\n".join(b))) for path, b in by_path.items()
    ]


_ORDER = {"retrieved": 0, "imports": 1, "signatures": 2, "snippet": 3}


def _assemble(sections: list[Section], doc_path: str, language: str) -> str:
    """The context text: one comment-headed group per file, other files first, this file last."""
    paths = list(dict.fromkeys(s.path for s in sections if s.path != doc_path)) + [doc_path]
    parts = []
    for path in paths:
        group = sorted((s for s in sections if s.path == path), key=lambda s: _ORDER[s.kind])
        if group:
            parts.append(comment_line(language, path) + "\n" + "\n".join(s.text.rstrip("\n") for s in group) + "\n")
    if not any(s.path == doc_path for s in sections):
        parts.append(comment_line(language, doc_path))
    return "\n".join(parts) + "\n"


def build_prompt(
    doc: SourceFile,
    cursor: int,
    others: Sequence[SourceFile] = (),
    tokens: TokenCounter | None = None,
    budget: Budget = Budget(),
    index: Callable[[SourceFile], FileIndex] | None = None,
    retrieved: Sequence = (),
    structured: bool = False,
) -> Prompt:
    """FIM prefix/suffix for a cursor at `str` index `cursor` of `doc`, with extra context.

    `index` maps a file to its `FileIndex` (the server passes a cache keyed by document
    version); by default files are indexed afresh. `retrieved`: chunks of workspace files from
    the repository index (objects with `path` and `text`), best first. `structured`: other files'
    context goes to `Prompt.files` (for a checkpoint's repository format) instead of path comments.
    """
    tokens = tokens or ApproxTokens()
    index = index or _default_index()
    text = doc.text
    pre = prefix_window(text[:cursor], tokens, budget.prefix_tokens)
    suf = suffix_window(text[cursor:], tokens, budget.suffix_tokens)
    prompt = Prompt(prefix=pre, suffix=suf, prefix_window=pre, suffix_window=suf)
    if budget.context_tokens <= 0 or doc.language not in SYNTAX:
        return prompt

    src = doc.source()
    language = doc.language
    offset = byte_len(text[:cursor])
    visible = (offset - byte_len(pre), offset + byte_len(suf))
    room = _Room(tokens, language, budget.context_tokens)
    used = identifiers(scope_text(doc.tree, src, offset, language), language)
    # the open file: only the definitions the scope's names refer to (outline.named_definitions)
    own_imports, own_table = named_definitions(doc.tree, language, src, set(used))
    sections = _import_section(doc, own_imports, visible[0], room, budget)
    related = [o for o in others if family(o.language) == family(language) and o.path != doc.path]
    if retrieved:  # the repository index's chunks take up to half of what is left
        share = room.left // 2
        retrieved_room = _Room(tokens, language, share, room.headers)
        sections += _retrieved_sections(retrieved, pre + suf, retrieved_room)
        room.left -= share - retrieved_room.left

    enclosing = enclosing_function(doc.tree, offset, language, src)
    candidates = _signature_candidates(doc, own_table, related, index, used, visible, enclosing)
    chosen = _choose_signatures(candidates, room, room.left - budget.context_tokens // 4 if related else room.left)
    snippet_sections, snippets = _snippet_sections(related, index, used, room)
    sections += snippet_sections + _signature_sections(chosen, snippets, tokens)
    if not sections:
        return prompt
    prompt.sections = sections
    if structured:  # other files go to the backend as (path, text), this file's context stays in the prefix
        prompt.files, prompt.context = _split_by_file(sections, doc.path)
    else:
        prompt.context = _assemble(sections, doc.path, language)
    prompt.prefix = prompt.context + pre
    return prompt


def _split_by_file(sections: list[Section], doc_path: str) -> tuple[list[tuple[str, str]], str]:
    """([(path, text)] of the other files, the current file's own context text)."""
    files: dict[str, list[Section]] = {}
    for s in sections:
        files.setdefault(s.path, []).append(s)

    def text(group: list[Section]) -> str:
        return "\n".join(s.text.rstrip("\n") for s in sorted(group, key=lambda s: _ORDER[s.kind]))

    own = files.pop(doc_path, [])
    return [(path, text(group)) for path, group in files.items()], (text(own) + "\n\n" if own else "")
