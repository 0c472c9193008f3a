"""Server parts without a server process: documents (positions, incremental parses), the
suggestion cache, settings and token budgets."""

from __future__ import annotations

import random
from types import SimpleNamespace as NS

import pytest
from aigc_code.server.documents import (
    UTF8,
    UTF16,
    UTF32,
    Document,
    DocumentStore,
    PositionError,
    UnknownDocument,
    column_to_index,
    display_path,
    index_to_column,
)
from aigc_code.server.settings import Settings, merge, section

from aigc_code.cache import SuggestionCache
from aigc_code.languages import ts_parser
from aigc_code.pipeline import fit_budget, generation_request


def rng_range(l1, c1, l2, c2):
    return NS(start=NS(line=l1, character=c1), end=NS(line=l2, character=c2))


def test_columns_in_each_encoding():
    line = "a😀é b"
    assert column_to_index(line, 1, UTF16) == 1
    assert column_to_index(line, 3, UTF16) == 2  # after the surrogate pair
    assert column_to_index(line, 2, UTF16) == 1  # inside it: its start
    assert column_to_index(line, 6, UTF16) == 5 and column_to_index(line, 7, UTF16) is None
    assert column_to_index(line, 5, UTF8) == 2 and column_to_index(line, 7, UTF8) == 3
    assert column_to_index(line, 5, UTF32) == 5 and column_to_index(line, 6, UTF32) is None
    assert index_to_column(line, 3, UTF16) == 4 and index_to_column(line, 3, UTF8) == 7


def test_positions_strict_and_clamped():
    doc = Document("file:///w/a.py", "python", 1, "x = 1\r\ny = '😀'\n")
    assert doc.index_at(1, 0) == 7
    assert doc.index_at(1, 8) == len("x = 1\r\ny = '😀'")  # UTF-16: the emoji counts 2
    with pytest.raises(PositionError, match="out of range"):
        doc.index_at(1, 9)
    with pytest.raises(PositionError):
        doc.index_at(0, 6)  # the \r is not part of the line
    with pytest.raises(PositionError, match="3 lines"):
        doc.index_at(3, 0)
    assert doc.index_at(9, 9, strict=False) == len(doc.text)
    assert doc.index_at(0, 99, strict=False) == 5
    assert doc.position_at(doc.index_at(1, 8)) == (1, 8)


def test_incremental_edits_match_a_fresh_parse():
    rng = random.Random(7)
    text = open(__file__, encoding="utf-8").read()[:3000] + "s = '😀 é'\n"
    doc = Document("file:///w/t.py", "python", 1, text)
    parser = ts_parser("python")
    pieces = ["x", "\n", "def g():\n    return 1\n", "😀", "é", "(", "", "    ", "'''"]
    for version in range(2, 60):
        a = rng.randrange(len(doc.text) + 1)
        b = min(len(doc.text), a + rng.choice([0, 0, 1, 5, 30]))
        (l1, c1), (l2, c2) = doc.position_at(a), doc.position_at(b)
        new = rng.choice(pieces)
        expected = doc.text[:a] + new + doc.text[b:]
        doc.apply_change(new, rng_range(l1, c1, l2, c2))
        doc.version = version
        doc.reparse()
        assert doc.text == expected
        assert str(doc.tree.root_node) == str(parser.parse(expected.encode()).root_node)
        assert doc.line_starts() == Document("file:///w/u.py", "python", 1, expected).line_starts()
    doc.apply_change("y = 2\n", None)  # a full-text change
    doc.reparse()
    assert doc.text == "y = 2\n" and str(doc.tree.root_node) == str(parser.parse(b"y = 2\n").root_node)


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_line_starts_after_keystrokes_equal_a_fresh_count(eol):
    """Edits within a line shift the cached line starts; any edit with a line break recounts them."""
    rng = random.Random(11)
    doc = Document("file:///w/k.py", "python", 1, eol.join(f"line {i} = {i} * 2" for i in range(40)) + eol)
    pieces = ["x", "ab", "", "é😀", "\n", "\r\n", "\r"]
    for version in range(2, 200):
        doc.line_starts()  # cached before each edit, as a completion request leaves it
        a = rng.randrange(len(doc.text) + 1)
        b = min(len(doc.text), a + rng.choice([0, 0, 1, 3, 12]))
        (l1, c1), (l2, c2) = doc.position_at(a), doc.position_at(b)
        new = rng.choice(pieces) if version % 5 == 0 else rng.choice(pieces[:4])
        doc.apply_change(new, rng_range(l1, c1, l2, c2))
        fresh = Document("file:///w/f.py", "python", 1, doc.text)
        assert doc.line_starts() == fresh.line_starts()
        assert doc.position_at(a) == fresh.position_at(a)


def test_snapshot_is_isolated_from_later_edits():
    store = DocumentStore()
    store.open("file:///w/a.go", "go", 1, "package main\n\nfunc f() {}\n")
    snap = store.get("file:///w/a.go").snapshot()
    before = str(snap.tree.root_node)
    store.change("file:///w/a.go", 2, [NS(text="\nfunc g() int { return 1 }\n", range=rng_range(3, 0, 3, 0))])
    assert str(snap.tree.root_node) == before and snap.version == 1
    assert "func g" in store.get("file:///w/a.go").text


def test_store_unknown_and_recent():
    store = DocumentStore()
    with pytest.raises(UnknownDocument, match="unknown document"):
        store.get("file:///w/none.py")
    for name in ("a.py", "b.rs", "c.txt"):
        store.open(f"file:///w/{name}", "plaintext" if name.endswith("txt") else "", 1, "x")
    assert store.get("file:///w/b.rs").language == "rust"  # from the extension
    assert store.get("file:///w/c.txt").language is None
    assert [d.uri for d in store.recent(exclude="file:///w/c.txt")] == ["file:///w/b.rs", "file:///w/a.py"]
    store.close("file:///w/b.rs")
    assert "file:///w/b.rs" not in store
    assert display_path("file:///w/src/x%20y.py", ["file:///w"]) == "src/x y.py"
    assert display_path("file:///elsewhere/z.py", ["file:///w"]) == "/elsewhere/z.py"


def test_cache_exact_and_type_ahead():
    cache = SuggestionCache(capacity=3)
    prefix, suffix = "def f(x):\n    return ", "\n\nprint(f(2))\n"
    assert cache.get("python", prefix, suffix) is None
    cache.put("python", prefix, suffix, ["x * 2 + offset", "x + 1"])
    assert cache.get("python", prefix, suffix) == ["x * 2 + offset", "x + 1"]
    assert cache.get("python", prefix + "x *", suffix) == [" 2 + offset"]  # typed the start of the first
    assert cache.get("python", prefix + "x", suffix) == [" * 2 + offset", " + 1"]
    assert cache.get("python", prefix + "y", suffix) is None  # typed something else
    assert cache.get("python", prefix + "x * 2 + offset", suffix) is None  # all typed: nothing left
    assert cache.get("python", prefix, suffix + "more") is None  # the suffix changed
    assert cache.get("go", prefix, suffix) is None
    assert cache.get("python", "# new first line\n" + prefix, suffix) is None  # an edit above
    cache.put("python", "a", "", [])
    assert cache.get("python", "a", "") == []  # "nothing to suggest here" is a hit too
    for i in range(3):
        cache.put("python", f"p{i}", "", ["s"])
    assert cache.get("python", prefix, suffix) is None and len(cache) == 3  # evicted (LRU)


def test_cache_bounded_memory_for_huge_documents():
    cache = SuggestionCache(tail=100, head=50)
    prefix = "x = 1\n" * 100_000
    cache.put("python", prefix, "y" * 10_000, ["z = 2"])
    entry = next(iter(cache._entries.values()))
    assert len(entry.prefix_tail) == 100 and len(entry.suffix_head) == 50
    assert cache.get("python", prefix + "z =", "y" * 10_000) == [" 2"]


def test_settings_merge_and_problems():
    s, problems = merge(
        Settings(),
        {
            "maxNewTokens": 32,
            "temperature": 0.4,
            "enabledLanguages": ["py", "c++", "TypeScript"],
            "n": 3,
            "debounceMs": "soon",
            "mystery": 1,
            "backend": "cloud",
            "timeBudgetMs": None,
        },
    )
    assert s.max_new_tokens == 32 and s.temperature == 0.4 and s.n == 3
    assert s.enabled_languages == ("python", "cpp", "typescript")
    assert s.debounce_ms == 0 and s.backend == "local"
    assert len(problems) == 3 and any("mystery" in p for p in problems) and any("debounceMs" in p for p in problems)
    s2, problems = merge(s, {"enabledLanguages": ["*"], "n": 99, "maxNewTokens": 2.5})
    assert set(s2.enabled_languages) >= {"go", "rust"} and s2.n == 3 and s2.max_new_tokens == 32 and len(problems) == 2
    assert section({"aigcCode": {"n": 2}}) == {"n": 2}
    assert section({"maxNewTokens": 2}) == {"maxNewTokens": 2}
    assert section({"editor": {"x": 1}}) is None and section(None) is None
    assert "token" not in Settings(token="secret").public() and "apiKey" not in Settings().public()


def test_budget_fits_the_model_context():
    s = Settings(prefix_tokens=1024, suffix_tokens=256, context_tokens=512)
    assert fit_budget(s, 64, None).prefix_tokens == 1024
    b = fit_budget(s, 64, 512)
    assert b.prefix_tokens + b.suffix_tokens + b.context_tokens <= 512 - 64
    assert b.prefix_tokens > b.context_tokens > 0


def test_generation_request_per_mode():
    s = Settings(max_new_tokens=128, n=3)
    single = generation_request(s, "single", ["\n"])
    assert single.max_new_tokens == 48 and single.stop == ["\n"] and single.temperature > 0  # n>1 samples
    assert generation_request(s, "multi", []).max_new_tokens == 128
    assert generation_request(Settings(time_budget_ms=250), "multi", []).time_budget_s == 0.25


# -- keystroke messages read without cattrs ------------------------------------------------------
_CHANGE = {
    "jsonrpc": "2.0",
    "method": "textDocument/didChange",
    "params": {
        "textDocument": {"uri": "file:///w/a.py", "version": 7},
        "contentChanges": [
            {"range": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 6}}, "text": "ab"},
            {"text": "whole\n"},
        ],
    },
}
_INLINE = {
    "jsonrpc": "2.0",
    "id": 12,
    "method": "textDocument/inlineCompletion",
    "params": {
        "context": {"triggerKind": 2},
        "textDocument": {"uri": "file:///w/a.py"},
        "position": {"line": 5, "character": 0},
    },
}
_COMPLETION = {
    "jsonrpc": "2.0",
    "id": "c-1",
    "method": "textDocument/completion",
    "params": {"textDocument": {"uri": "file:///w/a.py"}, "position": {"line": 1, "character": 2}},
}


def _cattrs(data):
    from pygls.protocol import LanguageServerProtocol, default_converter

    return default_converter().structure(data, LanguageServerProtocol.get_message_type(None, data["method"]))


def test_keystroke_messages_read_as_cattrs_reads_them():
    from aigc_code.server.keystroke import read_keystroke_message

    change, ref = read_keystroke_message(_CHANGE), _cattrs(_CHANGE)
    assert (change.method, change.params.text_document.uri, change.params.text_document.version) == (
        ref.method,
        ref.params.text_document.uri,
        ref.params.text_document.version,
    )
    for fast, slow in zip(change.params.content_changes, ref.params.content_changes, strict=True):
        assert fast.text == slow.text
        assert hasattr(fast, "range") == hasattr(slow, "range")
        if hasattr(slow, "range"):
            assert (fast.range.start.line, fast.range.start.character, fast.range.end.character) == (
                slow.range.start.line,
                slow.range.start.character,
                slow.range.end.character,
            )
    for data in (_INLINE, _COMPLETION):
        fast, slow = read_keystroke_message(data), _cattrs(data)
        assert (fast.id, fast.method, fast.params.text_document.uri) == (
            slow.id,
            slow.method,
            slow.params.text_document.uri,
        )
        assert (fast.params.position.line, fast.params.position.character) == (
            slow.params.position.line,
            slow.params.position.character,
        )
        fast_kind = fast.params.context.trigger_kind if fast.params.context else None
        slow_kind = slow.params.context.trigger_kind if slow.params.context else None
        assert fast_kind == slow_kind


@pytest.mark.parametrize(
    "path, value",
    [
        (("params", "position", "line"), -1),
        (("params", "position", "character"), "3"),
        (("params", "position", "line"), True),
        (("params", "textDocument", "uri"), 5),
        (("params", "context", "triggerKind"), 3),  # not an InlineCompletionTriggerKind
        (("params", "context", "selectedCompletionInfo"), {"range": {}, "text": "x"}),
        (("params",), []),
        (("jsonrpc",), "1.0"),
    ],
)
def test_keystroke_reader_leaves_anything_unusual_to_cattrs(path, value):
    import copy

    from aigc_code.server.keystroke import read_keystroke_message

    data = copy.deepcopy(_INLINE)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert read_keystroke_message(data) is None
    change = copy.deepcopy(_CHANGE)
    change["params"]["contentChanges"][0]["range"]["start"]["line"] = -2
    assert read_keystroke_message(change) is None
    assert read_keystroke_message({**_CHANGE, "id": 3}) is None  # a notification with an id is not one


def test_suggestions_take_the_documents_line_breaks():
    from aigc_code.pipeline import to_document_newlines
    from aigc_code.postprocess import Suggestion

    crlf = [Suggestion("if x:\n    y()", 0.0), Suggestion("z = 1", 0.0)]
    to_document_newlines(crlf, "a = 1\r\nb = 2\r\n")
    assert [s.text for s in crlf] == ["if x:\r\n    y()", "z = 1"]
    lf = [Suggestion("if x:\n    y()", 0.0)]
    to_document_newlines(lf, "a = 1\nb = 2\n")
    assert lf[0].text == "if x:\n    y()"
