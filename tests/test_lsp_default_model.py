"""A real client gets syntax-valid inline completions from the shipped default model (Python, JS, Go, Rust)."""

from __future__ import annotations

import pytest

from aigc_code.bench.lspclient import RawClient, server_cmd
from aigc_code.languages import ts_parser
from aigc_code.loading import DEFAULT_MODEL_DIR

# (language, file text, cursor positions to try: (line, character))
CASES = {
    "python": (
        "import os\n\n\ndef list_files(path):\n    names = []\n    for name in os.listdir(path):\n        \n"
        "    return names\n",
        [(6, 8), (4, 12), (5, 8)],
    ),
    "javascript": (
        "const fs = require('fs');\n\nfunction readConfig(path) {\n  const text = fs.\n}\n",
        [(3, 18), (3, 8)],
    ),
    "go": ('package main\n\nimport "fmt"\n\nfunc main() {\n\tname := "world"\n\tfmt.\n}\n', [(6, 5), (5, 9)]),
    "rust": ("fn main() {\n    let v = vec![1, 2, 3];\n    let total: i32 = v.\n}\n", [(2, 23), (1, 12)]),
}
EXT = {"python": "py", "javascript": "js", "go": "go", "rust": "rs"}


def errors(tree) -> int:
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(node.children)
    return count


def apply(text: str, line: int, character: int, insert: str, end_character: int | None = None) -> str:
    """The document after the editor applies the item: `insert` replaces [character, end_character)."""
    lines = text.split("\n")
    end = character if end_character is None else end_character
    lines[line] = lines[line][:character] + insert + lines[line][end:]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def client():
    c = RawClient(server_cmd(DEFAULT_MODEL_DIR))
    c.request(
        "initialize",
        {
            "processId": None,
            "rootUri": None,
            "capabilities": {},
            "initializationOptions": {"aigcCode": {"maxNewTokens": 32}},
        },
        timeout=300,
    )
    c.notify("initialized", {})
    yield c
    c.close()


@pytest.mark.parametrize("language", list(CASES))
def test_default_model_gives_syntax_valid_inline_completions(client, language):
    text, positions = CASES[language]
    uri = f"file:///project/main.{EXT[language]}"
    client.notify(
        "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}}
    )
    parser = ts_parser(language)
    baseline = errors(parser.parse(text.encode()))
    got = []
    for line, character in positions:
        response = client.request(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": character},
                "context": {"triggerKind": 1},
            },
            timeout=120,
        )
        assert "result" in response, response
        for item in response["result"]["items"]:
            got.append(item["insertText"])
            end = item.get("range", {}).get("end", {}).get("character")  # auto-closed text it replaces
            completed = apply(text, line, character, item["insertText"], end)
            assert errors(parser.parse(completed.encode())) <= baseline, (language, item["insertText"])
    assert any(s.strip() for s in got), f"no {language} suggestion at any of {positions}"
