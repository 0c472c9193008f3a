"""Per-language syntax facts in one place: which tree-sitter nodes are imports, functions,
containers and data, which line endings open a block, and the identifier/keyword rules."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from aigc_code.languages import LANGUAGES, ts_language


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
    functions=_fs(
        "function_declaration",
        "generator_function_declaration",
        "method_definition",
        "function_signature",
        "method_signature",
        "abstract_method_signature",
    ),
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
    wrappers=_fs(
        "preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif", "linkage_specification", "declaration_list"
    ),
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
_EXTRA_STOPWORDS = {
    "self",
    "this",
    "cls",
    "true",
    "false",
    "null",
    "nil",
    "None",
    "True",
    "False",
    "std",
    "int",
    "str",
    "i32",
    "u8",
}


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


# Python compound statements: a trailing `:` opens a block only after these.
PY_COMPOUND = {
    "def",
    "class",
    "if",
    "elif",
    "else",
    "for",
    "while",
    "try",
    "except",
    "finally",
    "with",
    "async",
    "match",
    "case",
}
PY_BLOCK_PARENTS = {
    "function_definition",
    "class_definition",
    "if_statement",
    "elif_clause",
    "else_clause",
    "for_statement",
    "while_statement",
    "try_statement",
    "except_clause",
    "finally_clause",
    "with_statement",
    "match_statement",
    "case_clause",
}
