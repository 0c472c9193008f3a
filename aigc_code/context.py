"""What the model sees for one completion request, chosen with tree-sitter.

Plain functions over (text, tree); no LSP, no model. The server's pipeline calls
`completion_mode` (complete here at all? one line or a block?), then `build_prompt`
(FIM prefix/suffix windows within token budgets, with extra context prepended to the prefix:
the file's imports, signatures of the definitions the cursor's scope refers to, and snippets
of other open files ranked by identifier overlap with the cursor's surroundings, each tagged
with its path in a comment).

Offsets into source bytes (`src`) are byte offsets, as tree-sitter counts them; `cursor`
arguments of the public entry points that take a `SourceFile` are `str` indices.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

from aigc_code.languages import LANGUAGES, comment_line, ts_language

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Node, Tree

NONE, SINGLE, MULTI = "none", "single", "multi"


# --------------------------------------------------------------------------------------------
# Token budgets


class TokenCounter(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def truncate_left(self, text: str, max_tokens: int) -> str: ...

    def truncate_right(self, text: str, max_tokens: int) -> str: ...


class ApproxTokens:
    """Token arithmetic by character count, for backends without a local tokenizer."""

    def __init__(self, chars_per_token: float = 3.5):
        self.chars_per_token = chars_per_token

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def truncate_left(self, text: str, max_tokens: int) -> str:
        keep = int(max_tokens * self.chars_per_token)
        return text[-keep:] if keep > 0 else ""

    def truncate_right(self, text: str, max_tokens: int) -> str:
        return text[: int(max_tokens * self.chars_per_token)]


@dataclass(frozen=True)
class Budget:
    prefix_tokens: int = 1024
    suffix_tokens: int = 256
    context_tokens: int = 512


# --------------------------------------------------------------------------------------------
# Per-language syntax facts


@dataclass(frozen=True)
class Syntax:
    imports: frozenset[str]
    functions: frozenset[str]  # outline = signature (text up to the body) + stub
    containers: frozenset[str]  # outline = header + member outlines (+ closer)
    data: frozenset[str]  # outline = the whole (short) text
    wrappers: frozenset[str]  # looked through when collecting definitions
    member_data: frozenset[str] = frozenset()  # fields inside containers
    openers: tuple[str, ...] = ("{",)  # a line ending in one of these opens a block
    stub: str = " { ... }"
    braces: bool = True


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


_JS = Syntax(
    imports=_fs("import_statement"),
    functions=_fs("function_declaration", "generator_function_declaration", "method_definition", "function_signature", "method_signature", "abstract_method_signature"),
    containers=_fs("class_declaration", "abstract_class_declaration", "class"),
    data=_fs("interface_declaration", "type_alias_declaration", "enum_declaration"),
    wrappers=_fs("export_statement", "ambient_declaration"),
    member_data=_fs("public_field_definition", "field_definition"),
    openers=("{", "(", "[", "=>"),
)
_C = Syntax(
    imports=_fs("preproc_include"),
    functions=_fs("function_definition"),
    containers=_fs(),
    data=_fs("struct_specifier", "enum_specifier", "union_specifier", "type_definition", "declaration"),
    wrappers=_fs("preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif", "linkage_specification", "declaration_list"),
    openers=("{",),
)

SYNTAX: dict[str, Syntax] = {
    "python": Syntax(
        imports=_fs("import_statement", "import_from_statement", "future_import_statement"),
        functions=_fs("function_definition"),
        containers=_fs("class_definition"),
        data=_fs(),
        wrappers=_fs("decorated_definition"),
        member_data=_fs("expression_statement"),
        openers=(":", "(", "[", "{"),
        stub=" ...",
        braces=False,
    ),
    "javascript": _JS,
    "typescript": _JS,
    "typescriptreact": _JS,
    "go": Syntax(
        imports=_fs("package_clause", "import_declaration"),
        functions=_fs("function_declaration", "method_declaration"),
        containers=_fs(),
        data=_fs("type_declaration"),
        wrappers=_fs(),
        openers=("{", "("),
    ),
    "rust": Syntax(
        imports=_fs("use_declaration", "extern_crate_declaration"),
        functions=_fs("function_item", "function_signature_item"),
        containers=_fs("impl_item", "trait_item", "mod_item"),
        data=_fs("struct_item", "enum_item", "type_item", "union_item", "const_item", "static_item"),
        wrappers=_fs(),
        openers=("{", "("),
    ),
    "java": Syntax(
        imports=_fs("package_declaration", "import_declaration"),
        functions=_fs("method_declaration", "constructor_declaration"),
        containers=_fs("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"),
        data=_fs(),
        wrappers=_fs("enum_body_declarations"),
        member_data=_fs("field_declaration", "constant_declaration"),
        openers=("{", "("),
    ),
    "c": _C,
    "cpp": Syntax(
        imports=_fs("preproc_include", "using_declaration", "namespace_alias_definition"),
        functions=_fs("function_definition"),
        containers=_fs("class_specifier", "struct_specifier"),
        data=_fs("enum_specifier", "union_specifier", "type_definition", "declaration", "alias_declaration"),
        wrappers=_C.wrappers | _fs("template_declaration", "namespace_definition"),
        member_data=_fs("field_declaration", "declaration"),
        openers=("{",),
    ),
}

# Languages whose files may lend each other context.
_FAMILY = {"c": "c", "cpp": "c", "javascript": "js", "typescript": "js", "typescriptreact": "js"}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXTRA_STOPWORDS = {"self", "this", "cls", "true", "false", "null", "nil", "None", "True", "False", "std", "int", "str", "i32", "u8"}


def family(language: str) -> str:
    return _FAMILY.get(language, language)


@functools.cache
def keywords(language: str) -> frozenset[str]:
    """The grammar's keywords (anonymous word tokens) plus a few ubiquitous names."""
    words = set(_EXTRA_STOPWORDS)
    if language in LANGUAGES:
        lang = ts_language(language)
        for i in range(lang.node_kind_count):
            kind = lang.node_kind_for_id(i)
            if kind and not lang.node_kind_is_named(i) and kind.isidentifier() and not kind.startswith("_"):
                words.add(kind)
    return frozenset(words)


def identifiers(text: str, language: str) -> list[str]:
    """Identifier tokens of `text` in order, keywords and one-letter names left out."""
    kw = keywords(language)
    return [w for w in _IDENT.findall(text) if len(w) > 1 and w not in kw]


# --------------------------------------------------------------------------------------------
# Where the cursor is: one line, a block, or nothing


def _line_bounds(src: bytes, offset: int) -> tuple[int, int]:
    start = src.rfind(b"\n", 0, offset) + 1
    end = src.find(b"\n", offset)
    return start, (len(src) if end < 0 else end)


def _leaf_before(tree: Tree, offset: int) -> Node | None:
    if offset <= 0:
        return None
    return tree.root_node.descendant_for_byte_range(offset - 1, offset)


_CLOSERS = set(")]}>;,'\"` \t")


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
    node = leaf
    while node is not None and node.parent is not None:
        kind = node.type
        if "comment" in kind and node.start_byte < offset <= node.end_byte:
            return SINGLE
        if ("string" in kind or kind in ("char_literal", "rune_literal")) and node.start_byte < offset < node.end_byte:
            return SINGLE
        node = node.parent
    syntax = SYNTAX.get(language)
    rest = after.strip()
    head = before.rstrip()
    only_closers = not rest or set(rest) <= _CLOSERS
    if not head:
        return MULTI if only_closers else SINGLE
    if syntax is None or not only_closers or not head.endswith(syntax.openers):
        return SINGLE
    if head.endswith(":"):
        # Python: a block opens only after a compound statement's header, not after a dict key,
        # a slice or a lambda.
        first = head.split(None, 1)[0].split("(")[0] if head.split() else ""
        if first not in _PY_COMPOUND and not (leaf is not None and leaf.parent is not None and leaf.parent.type in _PY_BLOCK_PARENTS):
            return SINGLE
        return MULTI
    if rest and not head.endswith("{"):
        return SINGLE  # e.g. `foo(|)`: the arguments, on this line
    return MULTI


_PY_COMPOUND = {"def", "class", "if", "elif", "else", "for", "while", "try", "except", "finally", "with", "async", "match", "case"}
_PY_BLOCK_PARENTS = {"function_definition", "class_definition", "if_statement", "elif_clause", "else_clause", "for_statement",
                     "while_statement", "try_statement", "except_clause", "finally_clause", "with_statement", "match_statement",
                     "case_clause"}


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


# --------------------------------------------------------------------------------------------
# Outlines: imports, definitions and chunks of a file


@dataclass
class Definition:
    name: str
    kind: str  # "function" | "container" | "data"
    start: int  # byte offsets of the node
    end: int
    header: str  # signature / container header / whole data text
    indent: str = ""
    members: list[Definition] = field(default_factory=list)
    closer: str = ""
    rows: tuple[int, int] = (0, 0)  # first and last line

    def outline(self, only: set[str] | None = None, max_members: int = 30) -> str:
        """Text to show the model: a stub for functions, header + member stubs for containers."""
        if self.kind != "container":
            return self.header
        members = [m for m in self.members if only is None or m.name in only][:max_members]
        lines = [self.header]
        for m in members:
            body = m.outline(max_members=10)
            lines.extend(m.indent + line if i == 0 else line for i, line in enumerate(body.split("\n")))
        if self.closer:
            lines.append(self.closer)
        return "\n".join(lines)

    def names(self) -> Iterable[str]:
        yield self.name
        for m in self.members:
            yield m.name


@dataclass
class Chunk:
    start_line: int
    end_line: int  # inclusive
    text: str
    idents: frozenset[str]


class FileIndex:
    """Imports and definitions of one file; its chunks are cut on first use."""

    def __init__(self, imports: list[tuple[int, int, str]], definitions: list[Definition], chunker: Callable[[], list[Chunk]]):
        self.imports = imports  # (start byte, end byte, text)
        self.definitions = definitions
        self._chunker = chunker
        self._chunks: list[Chunk] | None = None
        self._by_name: dict[str, list[tuple[Definition, Definition | None]]] | None = None

    @property
    def chunks(self) -> list[Chunk]:
        if self._chunks is None:
            self._chunks = self._chunker()
        return self._chunks

    def by_name(self) -> dict[str, list[tuple[Definition, Definition | None]]]:
        """name -> [(definition, its container or None)]."""
        if self._by_name is None:
            table: dict[str, list[tuple[Definition, Definition | None]]] = {}
            for d in self.definitions:
                table.setdefault(d.name, []).append((d, None))
                for m in d.members:
                    table.setdefault(m.name, []).append((m, d))
            self._by_name = table
        return self._by_name


_NAME_TYPES = {"identifier", "field_identifier", "type_identifier", "property_identifier", "namespace_identifier", "destructor_name", "operator_name", "qualified_identifier", "private_property_identifier", "constant"}


def _text(src: bytes, node: Node) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _node_name(node: Node, src: bytes) -> str:
    name = node.child_by_field_name("name")
    if name is None:
        kind = node.type
        if kind == "impl_item":
            name = node.child_by_field_name("type")
        elif kind == "type_declaration":
            spec = next((c for c in node.named_children if c.type in ("type_spec", "type_alias")), None)
            name = spec.child_by_field_name("name") if spec is not None else None
        elif kind in ("lexical_declaration", "variable_declaration"):
            decl = next((c for c in node.named_children if c.type == "variable_declarator"), None)
            name = decl.child_by_field_name("name") if decl is not None else None
        elif kind == "expression_statement":
            target = node.named_children[0] if node.named_children else None
            if target is not None and target.type == "assignment":
                name = target.child_by_field_name("left")
        else:
            d = node.child_by_field_name("declarator")
            for _ in range(8):
                if d is None or d.type in _NAME_TYPES:
                    break
                d = d.child_by_field_name("declarator") or d.child_by_field_name("name")
            name = d
            if name is None and kind in ("struct_specifier", "enum_specifier", "union_specifier", "type_definition"):
                name = next((c for c in node.named_children if c.type == "type_identifier"), None)
    if name is None:
        return ""
    if name.type == "qualified_identifier":
        inner = name.child_by_field_name("name")
        name = inner if inner is not None else name
    text = _text(src, name)
    return re.split(r"[<\[(\s]", text.split("::")[-1], maxsplit=1)[0]


def _cap_lines(text: str, max_lines: int) -> str:
    lines = text.split("\n")
    return text if len(lines) <= max_lines else "\n".join(lines[:max_lines])


def _indent_of(src: bytes, node: Node) -> str:
    line_start = src.rfind(b"\n", 0, node.start_byte) + 1
    prefix = src[line_start : node.start_byte].decode("utf-8", "replace")
    return prefix if not prefix.strip() else ""


def _function_value(node: Node) -> Node | None:
    """The arrow function / function expression a JS `const f = ...` declaration binds."""
    for decl in node.named_children:
        if decl.type == "variable_declarator":
            value = decl.child_by_field_name("value")
            if value is not None and value.type in ("arrow_function", "function_expression", "function"):
                return value
    return None


def _definition(node: Node, src: bytes, syntax: Syntax, language: str, member: bool = False, start: int | None = None) -> Definition | None:
    kind = node.type
    start = node.start_byte if start is None else start
    rows = (node.start_point.row, node.end_point.row)
    if kind in syntax.functions or (kind in ("lexical_declaration", "variable_declaration") and language in ("javascript", "typescript", "typescriptreact") and _function_value(node) is not None):
        target = _function_value(node) if kind in ("lexical_declaration", "variable_declaration") else node
        body = target.child_by_field_name("body") if target is not None else None
        if body is None:
            header = _cap_lines(src[start : node.end_byte].decode("utf-8", "replace").rstrip(), 12)
        else:
            header = src[start : body.start_byte].decode("utf-8", "replace").rstrip()
            if header.endswith("=>"):
                header += " ..."
            else:
                header = _cap_lines(header, 12) + syntax.stub
        name = _node_name(node, src)
        return Definition(name, "function", start, node.end_byte, header, _indent_of(src, node), rows=rows) if name else None
    if kind in syntax.containers:
        body = node.child_by_field_name("body")
        name = _node_name(node, src)
        if body is None or not name:
            return None
        header = _cap_lines(src[start : body.start_byte].decode("utf-8", "replace").rstrip(), 6)
        closer = ""
        if syntax.braces:
            header += " {"
            closer = "}" + (";" if language == "cpp" else "")
        defn = Definition(name, "container", start, node.end_byte, header, _indent_of(src, node), closer=closer, rows=rows)
        for child, child_start in _walk_wrapped(body, syntax):
            sub = _definition(child, src, syntax, language, member=True, start=child_start)
            if sub is not None:
                defn.members.append(sub)
        return defn
    is_data = kind in syntax.data or (member and kind in syntax.member_data)
    if is_data:
        text = src[start : node.end_byte].decode("utf-8", "replace")
        if member and kind == "expression_statement" and ("\n" in text or not ("=" in text or ":" in text)):
            return None
        name = _node_name(node, src)
        if not name:
            return None
        return Definition(name, "data", start, node.end_byte, _cap_lines(text.rstrip(), 20), _indent_of(src, node), rows=rows)
    return None


def _walk_wrapped(parent: Node, syntax: Syntax) -> Iterable[tuple[Node, int]]:
    """(node, start byte) for the named children of `parent`, looking through wrapper nodes
    (exports, decorators, templates, namespaces, #ifdef...). The start includes an `export` /
    `declare` keyword but not decorators."""
    for child in parent.named_children:
        if child.type in syntax.wrappers:
            inner = child.child_by_field_name("definition") or child.child_by_field_name("declaration")
            if inner is not None and child.type in ("decorated_definition", "export_statement", "ambient_declaration"):
                yield inner, (inner.start_byte if child.type == "decorated_definition" else child.start_byte)
            else:
                body = child.child_by_field_name("body")
                yield from _walk_wrapped(body if body is not None else child, syntax)
        else:
            yield child, child.start_byte


def index_file(text: str, tree: Tree | None, language: str, src: bytes | None = None, chunk_lines: int = 30) -> FileIndex:
    """Imports, definitions (with members) and identifier-tagged chunks of one file."""
    syntax = SYNTAX.get(language)
    if tree is None or syntax is None:
        return FileIndex([], [], lambda: _line_chunks(text, language, chunk_lines))
    src = src if src is not None else text.encode("utf-8")
    imports: list[tuple[int, int, str]] = []
    definitions: list[Definition] = []
    for node, start in _walk_wrapped(tree.root_node, syntax):
        if node.type in syntax.imports:
            imports.append((node.start_byte, node.end_byte, _text(src, node).rstrip()))
            continue
        defn = _definition(node, src, syntax, language, start=start)
        if defn is not None:
            definitions.append(defn)
    return FileIndex(imports, definitions, lambda: _chunks(tree, text, src, syntax, language, chunk_lines))


def _line_chunks(text: str, language: str, size: int) -> list[Chunk]:
    lines = text.split("\n")
    out = []
    for start in range(0, len(lines), size):
        body = "\n".join(lines[start : start + size])
        if body.strip():
            out.append(Chunk(start, min(start + size, len(lines)) - 1, body, frozenset(identifiers(body, language))))
    return out


def _chunks(tree: Tree, text: str, src: bytes, syntax: Syntax, language: str, size: int) -> list[Chunk]:
    """Top-level syntax units (a big container split into its members), packed into chunks of
    at most `size` lines; units longer than that are cut into windows."""
    units: list[tuple[int, int, bool]] = []  # (first row, last row, is a definition)
    own_chunk = syntax.functions | syntax.containers | syntax.data | syntax.wrappers

    def add(node: Node, depth: int = 0) -> None:
        rows = node.end_point.row - node.start_point.row + 1
        if rows > size and depth < 2 and (node.type in syntax.containers or node.type in syntax.wrappers):
            body = node.child_by_field_name("body") or node
            kids = list(body.named_children)
            if kids:
                units.append((node.start_point.row, kids[0].start_point.row - 1, False))
                for kid in kids:
                    add(kid, depth + 1)
                return
        units.append((node.start_point.row, node.end_point.row, node.type in own_chunk))

    for node in tree.root_node.named_children:
        add(node)
    lines = text.split("\n")
    out: list[Chunk] = []

    def emit(a: int, b: int) -> None:
        body = "\n".join(lines[a : b + 1])
        if body.strip():
            out.append(Chunk(a, b, body, frozenset(identifiers(body, language))))

    cur: tuple[int, int] | None = None
    for a, b, alone in units:
        if b < a:
            continue
        if b - a + 1 > size:
            if cur:
                emit(*cur)
                cur = None
            for s in range(a, b + 1, size):
                emit(s, min(s + size - 1, b))
            continue
        if alone:
            if cur:
                emit(*cur)
                cur = None
            emit(a, b)
        elif cur and b - cur[0] + 1 <= size:
            cur = (cur[0], b)
        else:
            if cur:
                emit(*cur)
            cur = (a, b)
    if cur:
        emit(*cur)
    return out


# --------------------------------------------------------------------------------------------
# The cursor's scope


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


def scope_text(tree: Tree | None, src: bytes, offset: int, language: str, before_lines: int = 40, after_lines: int = 10) -> str:
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


# --------------------------------------------------------------------------------------------
# The prompt


@dataclass(frozen=True)
class SourceFile:
    """One document as the context builder sees it."""

    path: str  # shown to the model in a comment
    language: str  # canonical language id
    text: str
    tree: Tree | None = None
    src: bytes = b""

    def source(self) -> bytes:
        return self.src or self.text.encode("utf-8")


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

    @property
    def context_sections(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sections:
            out[s.kind] = out.get(s.kind, 0) + 1
        return out


def prefix_window(text: str, tokens: TokenCounter, max_tokens: int) -> str:
    """The end of `text` within `max_tokens`, starting at a line boundary when cut."""
    if max_tokens <= 0:
        return ""
    rough = text[-max_tokens * 8 :]
    cut = tokens.truncate_left(rough, max_tokens)
    if len(cut) < len(text):
        nl = cut.find("\n")
        if 0 <= nl < len(cut) - 1:
            cut = cut[nl + 1 :]
    return cut


def suffix_window(text: str, tokens: TokenCounter, max_tokens: int) -> str:
    """The start of `text` within `max_tokens`, ending at a line boundary when cut."""
    if max_tokens <= 0:
        return ""
    rough = text[: max_tokens * 8]
    cut = tokens.truncate_right(rough, max_tokens)
    if len(cut) < len(text):
        nl = cut.rfind("\n")
        if nl > 0:
            cut = cut[: nl + 1]
    return cut


def _byte_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def build_prompt(
    doc: SourceFile,
    cursor: int,
    others: Sequence[SourceFile] = (),
    tokens: TokenCounter | None = None,
    budget: Budget = Budget(),
    index: Callable[[SourceFile], FileIndex] | None = None,
) -> Prompt:
    """FIM prefix/suffix for a cursor at `str` index `cursor` of `doc`, with extra context.

    `index` maps a file to its `FileIndex` (the server passes a cache keyed by document
    version); by default files are indexed afresh.
    """
    tokens = tokens or ApproxTokens()
    if index is None:
        memo: dict[str, FileIndex] = {}

        def index(f: SourceFile) -> FileIndex:
            if f.path not in memo:
                memo[f.path] = index_file(f.text, f.tree, f.language, f.source())
            return memo[f.path]

    text = doc.text
    pre = prefix_window(text[:cursor], tokens, budget.prefix_tokens)
    suf = suffix_window(text[cursor:], tokens, budget.suffix_tokens)
    prompt = Prompt(prefix=pre, suffix=suf, prefix_window=pre, suffix_window=suf)
    if budget.context_tokens <= 0 or doc.language not in SYNTAX:
        return prompt

    src = doc.source()
    offset = _byte_len(text[:cursor])
    visible = (offset - _byte_len(pre), offset + _byte_len(suf))
    language = doc.language
    left = budget.context_tokens
    sections: list[Section] = []
    header_cost: dict[str, int] = {}

    def cost(path: str, body: str) -> int:
        extra = 0 if path in header_cost else header_cost.setdefault(path, tokens.count_tokens(comment_line(language, path)) + 1)
        return tokens.count_tokens(body) + 1 + extra

    # 1. the file's imports that the prefix window cut off
    own = index(doc)
    imports = [t for (s, e, t) in own.imports if s < visible[0]]
    if imports:
        body = "\n".join(imports)
        cap = max(budget.context_tokens // 4, 1)
        if tokens.count_tokens(body) > cap:
            body = tokens.truncate_right(body, cap)
            body = body[: body.rfind("\n")] if "\n" in body else ""
        if body.strip():
            c = cost(doc.path, body)
            if c <= left:
                sections.append(Section("imports", doc.path, body, c))
                left -= c

    # 2. signatures of definitions the cursor's scope refers to
    scope = scope_text(doc.tree, src, offset, language)
    used = identifiers(scope, language)
    last_use = {name: i for i, name in enumerate(used)}
    enclosing = enclosing_function(doc.tree, offset, language, src)
    related = [o for o in others if family(o.language) == family(language) and o.path != doc.path]
    candidates: list[tuple[int, str, Definition, Definition | None]] = []
    for f in [doc, *related]:
        table = own.by_name() if f is doc else index(f).by_name()
        for name in last_use:
            for defn, parent in table.get(name, ()):
                if f is doc and (visible[0] <= defn.start and defn.end <= visible[1]):
                    continue  # already in the prompt
                if f is doc and enclosing is not None and defn.start <= enclosing.start_byte < defn.end and defn.kind == "function":
                    continue
                candidates.append((last_use[name], f.path, defn, parent))
    candidates.sort(key=lambda c: -c[0])
    chosen: dict[tuple[str, int], tuple[str, Definition, set[str] | None]] = {}
    sig_cap = left - budget.context_tokens // 4 if len(related) else left
    for _, path, defn, parent in candidates:
        top = parent or defn
        key = (path, top.start)
        if key in chosen:
            entry = chosen[key]
            if entry[2] is not None and parent is not None:
                entry[2].add(defn.name)
            continue
        only = {defn.name} if parent is not None else None
        body = top.outline(only=only)
        c = cost(path, body)
        if c > sig_cap:
            continue
        sig_cap -= c
        left -= c
        chosen[key] = (path, top, only)

    # 3. snippets of other open files, by identifier overlap with the cursor's surroundings
    snippets: list[tuple[str, Chunk]] = []
    if related and left > 0:
        near = set(used)
        scored: list[tuple[float, str, Chunk]] = []
        for f in related:
            for chunk in index(f).chunks:
                if not chunk.idents or not near:
                    continue
                inter = len(near & chunk.idents)
                if inter == 0:
                    continue
                scored.append((inter / len(near | chunk.idents), f.path, chunk))
        scored.sort(key=lambda s: -s[0])
        for score, path, chunk in scored[:8]:
            if score < 0.05:
                break
            c = cost(path, chunk.text)
            if c > left:
                continue
            left -= c
            snippets.append((path, chunk))
            sections.append(Section("snippet", path, chunk.text, c))

    # Signatures whose whole definition is in a chosen snippet would say it twice.
    by_path: dict[str, list[str]] = {}
    for path, top, only in chosen.values():
        if any(p == path and ch.start_line <= top.rows[0] and top.rows[1] <= ch.end_line for p, ch in snippets):
            continue
        by_path.setdefault(path, []).append(top.outline(only=only))
    for path, bodies in by_path.items():
        body = "\n".join(bodies)
        sections.append(Section("signatures", path, body, tokens.count_tokens(body)))

    if not sections:
        return prompt
    order = {"imports": 0, "signatures": 1, "snippet": 2}
    paths = [s.path for s in sections if s.path != doc.path]
    paths = list(dict.fromkeys(paths)) + [doc.path]
    parts = []
    for path in paths:
        group = sorted((s for s in sections if s.path == path), key=lambda s: order[s.kind])
        if group:
            parts.append(comment_line(language, path) + "\n" + "\n".join(s.text.rstrip("\n") for s in group) + "\n")
    if not any(s.path == doc.path for s in sections):
        parts.append(comment_line(language, doc.path))
    context = "\n".join(parts) + "\n"
    prompt.context = context
    prompt.sections = sections
    prompt.prefix = context + pre
    return prompt
