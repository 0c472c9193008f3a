"""Context selection on real code snippets: completion mode, outlines, budgets, ranking."""

from __future__ import annotations

import pytest

from aigc_code.budget import ApproxTokens, Budget
from aigc_code.languages import ts_parser
from aigc_code.mode import MULTI, NONE, SINGLE, completion_mode, stop_sequences
from aigc_code.outline import index_file
from aigc_code.prompt import SourceFile, build_prompt, prefix_window, suffix_window
from aigc_code.syntax import identifiers


def parsed(language: str, text: str) -> SourceFile:
    return SourceFile(
        path=f"src/file.{language}", language=language, text=text, tree=ts_parser(language).parse(text.encode())
    )


def mode_at(language: str, marked: str) -> str:
    """Completion mode for the cursor at `|` in `marked`."""
    i = marked.index("|")
    text = marked[:i] + marked[i + 1 :]
    src = text.encode()
    tree = ts_parser(language).parse(src)
    return completion_mode(tree, src, len(text[:i].encode()), language)


@pytest.mark.parametrize(
    "language, marked, expected",
    [
        ("python", "def f(x):\n    y = x\n    |\n", MULTI),
        ("python", "def f(x):|\n", MULTI),
        ("python", "result = compu|te(1)\n", NONE),
        ("python", "result = |compute(1)\n", NONE),
        ("python", "result = compute(|)\n", SINGLE),
        ("python", "total = price * |\n", SINGLE),
        ("python", "# sum the values of|\n", SINGLE),
        ("python", "name = 'hello wor|'\n", SINGLE),
        ("python", "d = {'a':|\n", SINGLE),
        ("javascript", "function f(a) {|\n}\n", MULTI),
        ("javascript", "const total = items.reduce(|);\n", SINGLE),
        ("typescript", "class A {\n  m(): void {\n    |\n  }\n}\n", MULTI),
        ("typescriptreact", "const x = <div>{val|}</div>;\n", SINGLE),
        ("go", "func f() {\n\tx := comp|ute()\n}\n", NONE),
        ("go", "func f() {\n\t|\n}\n", MULTI),
        ("rust", 'fn f() -> i32 {\n    let s = "abc|";\n}\n', SINGLE),
        ("java", "class A {\n  void f() {\n    // TODO: |\n  }\n}\n", SINGLE),
        ("c", "int main(void) {\n  for (int i = 0; i < n; i++) {|\n}\n", MULTI),
        ("cpp", "int main() {\n  std::vector<int> v = |\n}\n", SINGLE),
    ],
)
def test_completion_mode(language, marked, expected):
    assert mode_at(language, marked) == expected


def test_stop_sequences():
    src = b"def f():\n    \n"
    assert stop_sequences("python", SINGLE, src, 13) == ["\n"]
    inside = stop_sequences("python", MULTI, src, 13)
    assert "\ndef " in inside and "\n\n\n" in inside
    top = stop_sequences("python", MULTI, b"x = 1\n\n", 7)
    assert "\ndef " not in top  # a new top-level definition is what the user may want
    assert "\n}" in stop_sequences("go", MULTI, b"func f() {\n\t\n}\n", 12)


def test_identifiers_skip_keywords():
    assert identifiers("for item in items:\n    if item is not None: total += item.price", "python") == [
        "item",
        "items",
        "item",
        "total",
        "item",
        "price",
    ]
    assert "return" not in identifiers("return value;", "java")


PY_LIB = """import os
from dataclasses import dataclass


@dataclass
class Invoice:
    number: str
    amount: float = 0.0

    def total(self, tax: float) -> float:
        return self.amount * (1 + tax)

    def render(self):
        return f"{self.number}: {self.amount}"


def load_invoices(path):
    with open(path) as f:
        return [Invoice(*line.split(",")) for line in f]
"""


def test_index_python_outline():
    f = parsed("python", PY_LIB)
    idx = index_file(f.text, f.tree, "python")
    assert [t for _, _, t in idx.imports] == ["import os", "from dataclasses import dataclass"]
    names = {d.name: d for d in idx.definitions}
    assert set(names) == {"Invoice", "load_invoices"}
    outline = names["Invoice"].outline()
    assert outline.splitlines() == [
        "class Invoice:",
        "    number: str",
        "    amount: float = 0.0",
        "    def total(self, tax: float) -> float: ...",
        "    def render(self): ...",
    ]
    assert names["Invoice"].outline(only={"render"}).splitlines()[-1] == "    def render(self): ..."
    assert names["load_invoices"].outline() == "def load_invoices(path): ..."
    assert any("load_invoices" in c.idents for c in idx.chunks)


@pytest.mark.parametrize(
    "language, text, imports, outlines",
    [
        (
            "javascript",
            'import { sum } from "./math.js";\nexport function mean(xs) {\n  return sum(xs) / xs.length;\n}\n'
            "const double = (x) => x * 2;\nclass Stack {\n  push(x) { this.items.push(x); }\n}\n",
            ['import { sum } from "./math.js";'],
            {
                "mean": "export function mean(xs) { ... }",
                "double": "const double = (x) => ...",
                "Stack": "class Stack {\n  push(x) { ... }\n}",
            },
        ),
        (
            "typescript",
            'import { Db } from "./db";\ninterface User { id: number; name: string }\n'
            "export class Repo {\n  constructor(private db: Db) {}\n  find(id: number): User | undefined { return undefined; }\n}\n",
            ['import { Db } from "./db";'],
            {
                "User": "interface User { id: number; name: string }",
                "Repo": "export class Repo {\n  constructor(private db: Db) { ... }\n  find(id: number): User | undefined { ... }\n}",
            },
        ),
        (
            "go",
            'package store\n\nimport "fmt"\n\ntype Item struct {\n\tName string\n}\n\nfunc (i *Item) Label() string {\n\treturn fmt.Sprint(i.Name)\n}\n',
            ["package store", 'import "fmt"'],
            {"Item": "type Item struct {\n\tName string\n}", "Label": "func (i *Item) Label() string { ... }"},
        ),
        (
            "rust",
            "use std::fmt;\nstruct Point { x: i32, y: i32 }\nimpl Point {\n    fn norm(&self) -> i32 { self.x.abs() + self.y.abs() }\n}\n",
            ["use std::fmt;"],
            {"Point": "struct Point { x: i32, y: i32 }"},
        ),
        (
            "java",
            "package shop;\nimport java.util.List;\npublic class Cart {\n  private List<Item> items;\n  public int size() { return items.size(); }\n}\n",
            ["package shop;", "import java.util.List;"],
            {"Cart": "public class Cart {\n  private List<Item> items;\n  public int size() { ... }\n}"},
        ),
        (
            "c",
            '#include <stdlib.h>\n#include "list.h"\n\nstruct node { int value; struct node *next; };\n'
            "int list_length(const struct node *head) {\n  int n = 0;\n  return n;\n}\n",
            ["#include <stdlib.h>", '#include "list.h"'],
            {
                "node": "struct node { int value; struct node *next; }",
                "list_length": "int list_length(const struct node *head) { ... }",
            },
        ),
        (
            "cpp",
            "#include <string>\nnamespace geo {\nclass Shape {\n public:\n  virtual double area() const = 0;\n};\n}\n"
            "double scale(double x) { return x * 2; }\n",
            ["#include <string>"],
            {
                "Shape": "class Shape {\n  virtual double area() const = 0;\n};",
                "scale": "double scale(double x) { ... }",
            },
        ),
    ],
)
def test_index_other_languages(language, text, imports, outlines):
    f = parsed(language, text)
    idx = index_file(f.text, f.tree, language)
    assert [t.strip() for _, _, t in idx.imports] == imports
    table = idx.by_name()
    for name, outline in outlines.items():
        assert name in table, (name, list(table))
        defn, parent = table[name][0]
        assert defn.outline() == outline
    if language == "rust":
        assert table["norm"][0][1].name == "Point"  # a method of `impl Point`


def test_windows_cut_at_line_boundaries():
    tok = ApproxTokens(chars_per_token=1.0)
    text = "line one\nline two\nline three\n"
    pre = prefix_window(text, tok, 15)
    assert pre == "line three\n"
    assert prefix_window(text, tok, 100) == text
    assert suffix_window(text, tok, 12) == "line one\n"
    assert prefix_window(text, tok, 0) == "" and suffix_window(text, tok, 0) == ""


def _prefix_window_by_lines(text: str, tokens, max_tokens: int) -> str:
    """The definition `prefix_window` implements faster: every line of the last `max_tokens * 8`
    characters counted afresh, bottom up; a partial first line there is dropped."""
    rough = text[-max_tokens * 8 :]
    lines = rough.split("\n")
    total, start = 0, len(lines)
    for i in range(len(lines) - 1, -1, -1):
        cost = tokens.count_tokens(lines[i] if i == len(lines) - 1 else lines[i] + "\n")
        if total + cost > max_tokens:
            break
        total, start = total + cost, i
    if start == len(lines):
        return tokens.truncate_left(lines[-1], max_tokens)
    if start == 0 and len(rough) < len(text):
        start = 1
    return "\n".join(lines[start:])


def test_prefix_window_matches_counting_every_line_while_typing(tiny_engine):
    import random
    import sysconfig
    from pathlib import Path

    rng = random.Random(0)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:12]
    texts = [p.read_text(encoding="utf-8") for p in files] + ["x" * 5000, "a\n" * 3000, "é\n\n" * 50, "\n"]
    for tok in (ApproxTokens(), tiny_engine):  # a character estimate and a real tokenizer
        for text in texts:
            for _ in range(20):
                cut, budget = rng.randint(0, len(text)), rng.choice([1, 3, 15, 100, 512, 2000])
                typed = text[:cut]
                for _ in range(4):  # typing on (the same lines above the cursor) and Enter (one line more)
                    assert prefix_window(typed, tok, budget) == _prefix_window_by_lines(typed, tok, budget)
                    typed += rng.choice(["a", "b(", " ", "\n", "\n    "])


def long_module(n: int = 120) -> str:
    body = "".join(f"def helper_{i}(value):\n    return value + {i}\n\n\n" for i in range(n))
    return "import json\nimport os.path\n\n\n" + body


def test_prompt_prepends_cut_off_imports_and_referenced_signatures():
    text = long_module() + "def main(path):\n    data = json.load(open(path))\n    result = helper_3(data)\n    "
    doc = parsed("python", text)
    budget = Budget(prefix_tokens=60, suffix_tokens=20, context_tokens=120)
    prompt = build_prompt(doc, len(text), tokens=ApproxTokens(), budget=budget)
    assert prompt.prefix.endswith(prompt.prefix_window) and text.endswith(prompt.prefix_window)
    assert text[: len(text) - len(prompt.prefix_window)].endswith("\n")  # cut at a line start
    ctx = prompt.context
    assert ctx.startswith("# src/file.python\n")
    assert "import json\nimport os.path" in ctx
    assert "def helper_3(value): ..." in ctx  # referenced from the cursor's scope
    assert "helper_7" not in ctx  # not referenced
    assert "def main(path)" not in ctx  # already in the window
    assert ApproxTokens().count_tokens(ctx) <= budget.context_tokens + 10
    assert {s.kind for s in prompt.sections} == {"imports", "signatures"}


def test_prompt_without_cut_has_no_context_repetition():
    text = "import os\n\ndef f():\n    return os.getcwd()\n\nx = f()\n"
    prompt = build_prompt(parsed("python", text), len(text), tokens=ApproxTokens(), budget=Budget())
    assert prompt.prefix == text and prompt.context == ""


def test_snippets_from_other_files_ranked_by_overlap():
    other_a = parsed(
        "python",
        "def parse_invoice(line):\n    number, amount = line.split(',')\n    return Invoice(number, float(amount))\n",
    )
    other_a = SourceFile("billing/parse.py", "python", other_a.text, other_a.tree)
    other_b = parsed("python", "def draw_circle(canvas, radius):\n    canvas.arc(0, 0, radius)\n")
    other_b = SourceFile("gfx/draw.py", "python", other_b.text, other_b.tree)
    js = parsed("javascript", "function parse_invoice(line) { return line.split(','); }\n")
    js = SourceFile("web/parse.js", "javascript", js.text, js.tree)
    text = "def import_all(lines):\n    out = []\n    for line in lines:\n        number, amount = line.split(',')\n        "
    doc = SourceFile("billing/load.py", "python", text, ts_parser("python").parse(text.encode()))
    prompt = build_prompt(
        doc, len(text), [other_b, js, other_a], tokens=ApproxTokens(), budget=Budget(context_tokens=200)
    )
    snippets = [s for s in prompt.sections if s.kind == "snippet"]
    assert snippets and snippets[0].path == "billing/parse.py"
    assert all(s.path != "web/parse.js" for s in prompt.sections)  # another language family
    assert "# billing/parse.py\ndef parse_invoice(line):" in prompt.context
    assert prompt.context.rstrip().endswith("# billing/load.py")
    assert prompt.prefix.endswith(text)


def test_cross_file_signatures_and_comment_syntax():
    lib = parsed(
        "typescript", "export function formatPrice(cents: number): string {\n  return (cents / 100).toFixed(2);\n}\n"
    )
    lib = SourceFile("src/price.ts", "typescript", lib.text, lib.tree)
    text = "import { formatPrice } from './price';\nexport function label(item: Item) {\n  return item.name + formatPrice(item.cents) + "
    doc = SourceFile("src/label.ts", "typescript", text, ts_parser("typescript").parse(text.encode()))
    prompt = build_prompt(doc, len(text), [lib], tokens=ApproxTokens(), budget=Budget(context_tokens=100))
    # The whole function fits as a snippet, so its signature is not repeated.
    assert "// src/price.ts\nexport function formatPrice(cents: number): string {\n  return" in prompt.context
    assert "{ ... }" not in prompt.context
    assert prompt.context.rstrip().endswith("// src/label.ts")

    # A long function does not fit: its signature stands in for it.
    body = "".join(f"  const step{i} = cents + {i};\n" for i in range(60))
    lib2 = parsed("typescript", "export function formatPrice(cents: number): string {\n" + body + "  return '';\n}\n")
    lib2 = SourceFile("src/price.ts", "typescript", lib2.text, lib2.tree)
    prompt = build_prompt(doc, len(text), [lib2], tokens=ApproxTokens(), budget=Budget(context_tokens=100))
    assert "// src/price.ts\nexport function formatPrice(cents: number): string { ... }" in prompt.context


def test_zero_context_budget_and_unknown_language():
    text = "def f():\n    return 1\n"
    prompt = build_prompt(parsed("python", text), 5, tokens=ApproxTokens(), budget=Budget(context_tokens=0))
    assert prompt.context == "" and prompt.prefix == text[:5] and prompt.suffix == text[5:]
    plain = build_prompt(SourceFile("notes.txt", "", "some text", None), 4)
    assert plain.prefix == "some" and plain.suffix == " text"


def test_retrieved_chunks_are_cut_to_a_small_context():
    from types import SimpleNamespace

    doc = parsed("python", "import os\n\n\ndef main():\n    return os.getcwd()\n")
    chunk = SimpleNamespace(
        path="lib/util.py", text="\n".join(f"def helper_{i}(x):\n    return x + {i}" for i in range(40))
    )
    tight = build_prompt(doc, len(doc.text), [], ApproxTokens(), Budget(256, 64, 120), retrieved=[chunk])
    kinds = [s.kind for s in tight.sections]
    assert "retrieved" in kinds, kinds
    shown = next(s.text for s in tight.sections if s.kind == "retrieved")
    assert shown.startswith("def helper_0(x):") and len(shown) < len(chunk.text)
    assert "# lib/util.py" in tight.prefix


def test_definition_memo_gives_the_index_a_fresh_walk_gives_after_edits(monkeypatch):
    """Definitions come back from the memo after a keystroke, shifted to where they now stand."""
    import random
    import sysconfig
    from pathlib import Path

    from aigc_code import outline
    from aigc_code.languages import ts_parser

    rng = random.Random(0)
    parser = ts_parser("python")
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    memo = outline._DefinitionMemo()
    for _ in range(25):
        pos = rng.randrange(len(text))
        text = (
            text[:pos]
            + rng.choice(["x", "\n", "    ", "def q():\n    pass\n", ""])
            + text[pos + rng.choice([0, 1, 5]) :]
        )
        tree = parser.parse(text.encode())
        monkeypatch.setattr(outline, "_MEMO", memo)
        cached = outline.index_file(text, tree, "python")
        monkeypatch.setattr(outline, "_MEMO", outline._DefinitionMemo())
        fresh = outline.index_file(text, tree, "python")
        assert cached.imports == fresh.imports and cached.definitions == fresh.definitions
    assert len(memo._items) > 0


def test_token_count_memo_frees_a_replaced_counter():
    """The memo must not keep a backend (and its model) alive after the server replaced it."""
    import gc
    import weakref

    from aigc_code.budget import count_cached

    tokens = ApproxTokens()
    ref = weakref.ref(tokens)
    assert count_cached(tokens, "abcdefg") == count_cached(tokens, "abcdefg") == 2
    del tokens
    gc.collect()
    assert ref() is None


def _definition_row(defn, parent, names):
    top = parent or defn
    only = {n for n in names if any(m.name == n for m in top.members)} if parent is not None else None
    return (
        defn.name,
        defn.kind,
        defn.start,
        defn.end,
        defn.rows,
        defn.header,
        top.start,
        top.rows,
        top.outline(only=only),
    )


@pytest.mark.parametrize("language, pattern", [("python", "*.py"), ("c", "*.h"), ("javascript", "*.js")])
def test_named_definitions_match_the_full_index(language, pattern):
    """The open file's definition table built for the scope's names only equals the full index's."""
    import random
    import sysconfig
    from pathlib import Path

    from aigc_code.outline import named_definitions
    from aigc_code.syntax import identifiers

    repo = Path(__file__).resolve().parent.parent
    roots = {  # the interpreter's own library, the C library's headers (gcc's), this repository's JavaScript
        "python": [Path(sysconfig.get_paths()["stdlib"])],
        "c": [Path("/usr/include")],
        "javascript": [repo / "examples", repo / "editors"],
    }
    files = sorted(p for r in roots[language] for p in r.rglob(pattern) if "node_modules" not in p.parts)[:25]
    assert files, f"no {pattern} files under {roots[language]}"
    rng = random.Random(1)
    parser = ts_parser(language)
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        src = text.encode()
        tree = parser.parse(src)
        for edit in range(4):  # as typed: each tree reparsed from the edited one before it
            if edit:
                src, tree = _edited(parser, src, tree, rng)
                text = src.decode("utf-8", "replace")
            full = index_file(text, tree, language, src)
            table = full.by_name()
            vocabulary = sorted(set(table) | set(identifiers(text[:4000], language)))
            for _ in range(4):
                names = set(rng.sample(vocabulary, min(len(vocabulary), rng.choice([1, 5, 30]))))
                imports, named = named_definitions(tree, language, src, names)
                assert imports == full.imports
                expected = {n: [_definition_row(d, p, names) for d, p in table[n]] for n in names if n in table}
                got = {n: [_definition_row(d, p, names) for d, p in rows] for n, rows in named.items()}
                assert got == expected, (path, edit)


def _edited(parser, src: bytes, tree, rng):
    """`src` with a random insertion (inside a line, a new definition, a stray bracket), reparsed from
    the edited `tree`."""
    at = rng.randrange(len(src) + 1)
    while at < len(src) and (src[at] & 0xC0) == 0x80:  # not inside a UTF-8 character
        at += 1
    ins = rng.choice([b"x", b"\n", b"    ", b"def q():\n    pass\n", b"int q(void);\n", b"}", b"(", b"zz_name"])
    row = src.count(b"\n", 0, at)
    col = at - (src.rfind(b"\n", 0, at) + 1)
    rows = ins.count(b"\n")
    end = (row + rows, len(ins) - ins.rfind(b"\n") - 1) if rows else (row, col + len(ins))
    tree.edit(
        start_byte=at,
        old_end_byte=at,
        new_end_byte=at + len(ins),
        start_point=(row, col),
        old_end_point=(row, col),
        new_end_point=end,
    )
    new = src[:at] + ins + src[at:]
    return new, parser.parse(new, tree)
