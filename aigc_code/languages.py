"""The languages aigc-code knows: file extensions, comment syntax and tree-sitter grammars.

One table, used by the corpus builder, the LSP server, the finetune data pipeline and the
evaluation harness, so that "which language is this file" has a single answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Language:
    name: str  # canonical id, also the LSP languageId where one exists
    extensions: tuple[str, ...]
    line_comment: str
    grammar_module: str  # python module of the maintained tree-sitter grammar wheel
    grammar_function: str = "language"


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in [
        Language("python", (".py", ".pyi"), "#", "tree_sitter_python"),
        Language("javascript", (".js", ".mjs", ".cjs", ".jsx"), "//", "tree_sitter_javascript"),
        Language("typescript", (".ts", ".mts", ".cts"), "//", "tree_sitter_typescript", "language_typescript"),
        Language("typescriptreact", (".tsx",), "//", "tree_sitter_typescript", "language_tsx"),
        Language("go", (".go",), "//", "tree_sitter_go"),
        Language("rust", (".rs",), "//", "tree_sitter_rust"),
        Language("java", (".java",), "//", "tree_sitter_java"),
        Language("c", (".c", ".h"), "//", "tree_sitter_c"),
        Language("cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".h++", ".c++"), "//", "tree_sitter_cpp"),
    ]
}

# Editors and benchmarks use other names for the same languages.
ALIASES = {
    "py": "python",
    "js": "javascript",
    "javascriptreact": "javascript",
    "ts": "typescript",
    "tsx": "typescriptreact",
    "c++": "cpp",
    "cxx": "cpp",
    "golang": "go",
    "rs": "rust",
}

_BY_EXTENSION = {ext: lang for lang in LANGUAGES.values() for ext in lang.extensions}


def canonical(name: str) -> str | None:
    """Canonical language id for an LSP languageId / benchmark name, or None if unsupported."""
    name = name.lower()
    name = ALIASES.get(name, name)
    return name if name in LANGUAGES else None


def language_for_path(path: str | Path) -> str | None:
    lang = _BY_EXTENSION.get(Path(path).suffix.lower())
    return lang.name if lang else None


@functools.cache
def ts_language(name: str):
    """The tree-sitter `Language` for a canonical language id (loaded once)."""
    import importlib

    import tree_sitter

    lang = LANGUAGES[name]
    module = importlib.import_module(lang.grammar_module)
    return tree_sitter.Language(getattr(module, lang.grammar_function)())


def ts_parser(name: str):
    import tree_sitter

    return tree_sitter.Parser(ts_language(name))


def comment_line(language: str | None, text: str) -> str:
    """`text` as a one-line comment in `language` (used to tag context snippets with their path)."""
    marker = LANGUAGES[language].line_comment if language in LANGUAGES else "#"
    return f"{marker} {text}"
