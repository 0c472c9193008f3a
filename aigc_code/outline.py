"""Outlines of one file: its imports, definitions (with members) and identifier-tagged chunks,
from the tree-sitter tree; the prompt builder shows signatures and snippets from them."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aigc_code.syntax import SYNTAX, Syntax, identifiers

if TYPE_CHECKING:  # pragma: no cover
    from tree_sitter import Node, Tree


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

    def __init__(
        self, imports: list[tuple[int, int, str]], definitions: list[Definition], chunker: Callable[[], list[Chunk]]
    ):
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


_NAME_TYPES = {
    "identifier",
    "field_identifier",
    "type_identifier",
    "property_identifier",
    "namespace_identifier",
    "destructor_name",
    "operator_name",
    "qualified_identifier",
    "private_property_identifier",
    "constant",
}


def _text(src: bytes, node: Node) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _declarator_name(node: Node) -> Node | None:
    """C/C++: follow `declarator` fields down to the name (`int (*f)(void)` -> `f`)."""
    d = node.child_by_field_name("declarator")
    for _ in range(8):
        if d is None or d.type in _NAME_TYPES:
            break
        d = d.child_by_field_name("declarator") or d.child_by_field_name("name")
    if d is None and node.type in ("struct_specifier", "enum_specifier", "union_specifier", "type_definition"):
        d = next((c for c in node.named_children if c.type == "type_identifier"), None)
    return d


def _first_named(node: Node, types: tuple[str, ...]) -> Node | None:
    return next((c for c in node.named_children if c.type in types), None)


def _name_node(node: Node) -> Node | None:
    """The node that names a definition, by the kinds of definitions the grammars have."""
    name = node.child_by_field_name("name")
    if name is not None:
        return name
    kind = node.type
    if kind == "impl_item":
        return node.child_by_field_name("type")
    if kind == "type_declaration":
        spec = _first_named(node, ("type_spec", "type_alias"))
        return spec.child_by_field_name("name") if spec is not None else None
    if kind in ("lexical_declaration", "variable_declaration"):
        decl = _first_named(node, ("variable_declarator",))
        return decl.child_by_field_name("name") if decl is not None else None
    if kind == "expression_statement":
        target = node.named_children[0] if node.named_children else None
        return target.child_by_field_name("left") if target is not None and target.type == "assignment" else None
    return _declarator_name(node)


def _node_name(node: Node, src: bytes) -> str:
    name = _name_node(node)
    if name is None:
        return ""
    if name.type == "qualified_identifier":
        inner = name.child_by_field_name("name")
        name = inner if inner is not None else name
    text = _text(src, name)
    if text.isidentifier():  # the common case, without the regex
        return text
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


_JS_BINDINGS = frozenset({"lexical_declaration", "variable_declaration"})  # `const f = () => ...`
_JS_LANGUAGES = ("javascript", "typescript", "typescriptreact")
_KINDS: dict[tuple[str, bool], frozenset[str]] = {}


def _is_function(node: Node, syntax: Syntax, language: str) -> bool:
    if node.type in syntax.functions:
        return True
    return node.type in _JS_BINDINGS and language in _JS_LANGUAGES and _function_value(node) is not None


def definition_kinds(syntax: Syntax, language: str, member: bool = False) -> frozenset[str]:
    """The node kinds `_build_definition` can make a definition of: a node of any other kind
    (a comment, a statement) gives none, so its name is never looked up."""
    kinds = _KINDS.get((language, member))
    if kinds is None:
        kinds = syntax.functions | syntax.containers | syntax.data | (syntax.member_data if member else frozenset())
        if language in _JS_LANGUAGES:
            kinds |= _JS_BINDINGS
        kinds = _KINDS[(language, member)] = frozenset(kinds)
    return kinds


def _function_definition(node: Node, src: bytes, syntax: Syntax, start: int, rows) -> Definition | None:
    """Signature (the text up to the body) + a stub."""
    is_binding = node.type in _JS_BINDINGS
    target = _function_value(node) if is_binding else node
    body = target.child_by_field_name("body") if target is not None else None
    if body is None:
        header = _cap_lines(src[start : node.end_byte].decode("utf-8", "replace").rstrip(), 12)
    else:
        header = src[start : body.start_byte].decode("utf-8", "replace").rstrip()
        header = header + " ..." if header.endswith("=>") else _cap_lines(header, 12) + syntax.stub
    name = _node_name(node, src)
    if not name:
        return None
    return Definition(name, "function", start, node.end_byte, header, _indent_of(src, node), rows=rows)


def _container_definition(
    node: Node, src: bytes, syntax: Syntax, language: str, start: int, rows, members=None
) -> Definition | None:
    """Header + the outlines of its members (+ closer); `members`: only these (node, start) pairs."""
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
    for child, child_start in _walk_wrapped(body, syntax) if members is None else members:
        sub = _definition(child, src, syntax, language, member=True, start=child_start)
        if sub is not None:
            defn.members.append(sub)
    return defn


def _data_definition(node: Node, src: bytes, member: bool, start: int, rows) -> Definition | None:
    """The whole (short) text: a type, a constant, a field."""
    text = src[start : node.end_byte].decode("utf-8", "replace")
    if member and node.type == "expression_statement" and ("\n" in text or not ("=" in text or ":" in text)):
        return None
    name = _node_name(node, src)
    if not name:
        return None
    return Definition(
        name, "data", start, node.end_byte, _cap_lines(text.rstrip(), 20), _indent_of(src, node), rows=rows
    )


class _DefinitionMemo:
    """Definitions by the text they were built from: a keystroke re-indexes the open file, and all but
    the edited definition come back from here (shifted to where they now stand) instead of from a
    walk of their nodes. Keyed by the source bytes from the definition's line start to its end (and
    where the node starts in them), so a hit is the same text, whatever the tree it came from."""

    def __init__(self, max_bytes: int = 8 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[Definition | None, int, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[Definition | None, int, int] | None:
        """A lookup without the lock (a dict read is atomic); eviction is oldest-first, and a hit
        is not moved (a keystroke looks up every definition of the file: ~1 us each saved)."""
        return self._items.get(key)

    def put(self, key: tuple, value: tuple[Definition | None, int, int]) -> None:
        with self._lock:
            if key not in self._items:
                self._bytes += len(key[-1])
            self._items[key] = value
            while self._bytes > self.max_bytes and self._items:
                old, _ = self._items.popitem(last=False)
                self._bytes -= len(old[-1])


_MEMO = _DefinitionMemo()


def _shifted(d: Definition, db: int, dr: int) -> Definition:
    """`d` moved by `db` bytes and `dr` rows (built directly: `dataclasses.replace` costs ~4x more,
    and every definition after a keystroke is shifted)."""
    if not db and not dr:
        return d
    members = [_shifted(m, db, dr) for m in d.members]
    rows = (d.rows[0] + dr, d.rows[1] + dr)
    return Definition(d.name, d.kind, d.start + db, d.end + db, d.header, d.indent, members, d.closer, rows)


def _definition(
    node: Node, src: bytes, syntax: Syntax, language: str, member: bool = False, start: int | None = None
) -> Definition | None:
    start = node.start_byte if start is None else start
    line = src.rfind(b"\n", 0, start) + 1
    row = node.start_point.row
    key = (language, member, start - line, node.start_byte - line, src[line : node.end_byte])
    hit = _MEMO.get(key)
    if hit is not None:
        defn, old_line, old_row = hit
        return None if defn is None else _shifted(defn, line - old_line, row - old_row)
    defn = _build_definition(node, src, syntax, language, member, start)
    _MEMO.put(key, (defn, line, row))
    return defn


def _build_definition(
    node: Node, src: bytes, syntax: Syntax, language: str, member: bool, start: int
) -> Definition | None:
    rows = (node.start_point.row, node.end_point.row)
    if _is_function(node, syntax, language):
        return _function_definition(node, src, syntax, start, rows)
    if node.type in syntax.containers:
        return _container_definition(node, src, syntax, language, start, rows)
    if node.type in syntax.data or (member and node.type in syntax.member_data):
        return _data_definition(node, src, member, start, rows)
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


def _top_level(
    tree: Tree, syntax: Syntax, language: str, src: bytes, imports: list[tuple[int, int, str]]
) -> Iterable[tuple[Node, int]]:
    """(node, start byte) of the file's top-level definitions (through wrappers); its imports are
    appended to `imports` on the way, and nodes of kinds that make no definition are skipped."""
    kinds = definition_kinds(syntax, language)
    for node, start in _walk_wrapped(tree.root_node, syntax):
        kind = node.type
        if kind in syntax.imports:
            imports.append((node.start_byte, node.end_byte, _text(src, node).rstrip()))
        elif kind in kinds:
            yield node, start


def index_file(
    text: str, tree: Tree | None, language: str, src: bytes | None = None, chunk_lines: int = 30
) -> FileIndex:
    """Imports, definitions (with members) and identifier-tagged chunks of one file."""
    syntax = SYNTAX.get(language)
    if tree is None or syntax is None:
        return FileIndex([], [], lambda: _line_chunks(text, language, chunk_lines))
    src = src if src is not None else text.encode("utf-8")
    imports: list[tuple[int, int, str]] = []
    definitions: list[Definition] = []
    for node, start in _top_level(tree, syntax, language, src, imports):
        defn = _definition(node, src, syntax, language, start=start)
        if defn is not None:
            definitions.append(defn)
    return FileIndex(imports, definitions, lambda: _chunks(tree, text, src, syntax, language, chunk_lines))


def named_definitions(
    tree: Tree | None, language: str, src: bytes, names: set[str]
) -> tuple[list[tuple[int, int, str]], dict[str, list[tuple[Definition, Definition | None]]]]:
    """`index_file`'s imports and `FileIndex.by_name()` restricted to `names`, building only the
    definitions those names refer to. The prompt re-reads the open file on every keystroke and
    asks for the few names the cursor's scope uses; a container it is inside is otherwise rebuilt
    with all its members each time. A container is built whole when its own name is asked for,
    else with the asked-for members only (the outlines the prompt shows are the same)."""
    syntax = SYNTAX.get(language)
    if tree is None or syntax is None:
        return [], {}
    imports: list[tuple[int, int, str]] = []
    table: dict[str, list[tuple[Definition, Definition | None]]] = {}
    for node, start in _top_level(tree, syntax, language, src, imports):
        defn = _named_definition(node, start, src, syntax, language, names)
        if defn is None:
            continue
        if defn.name in names:
            table.setdefault(defn.name, []).append((defn, None))
        for m in defn.members:
            if m.name in names:
                table.setdefault(m.name, []).append((m, defn))
    return imports, table


def _named_definition(node: Node, start: int, src: bytes, syntax: Syntax, language: str, names: set[str]):
    """The definition of `node` if it or (for a container) one of its members is named in `names`."""
    if _node_name(node, src) in names:
        return _definition(node, src, syntax, language, start=start)
    if node.type not in syntax.containers or _is_function(node, syntax, language):
        return None
    body = node.child_by_field_name("body")
    if body is None:
        return None
    kinds = definition_kinds(syntax, language, member=True)
    wanted = [(c, s) for c, s in _walk_wrapped(body, syntax) if c.type in kinds and _node_name(c, src) in names]
    if not wanted:
        return None
    rows = (node.start_point.row, node.end_point.row)
    return _container_definition(node, src, syntax, language, start, rows, members=wanted)


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
