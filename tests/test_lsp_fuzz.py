"""Property-based fuzzing of the real server process with malformed frames and hostile content.

After every case the server must still answer a well-formed inline-completion request, and
errors must carry the JSON-RPC code that applies.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigc_code.bench.lspclient import RawClient, frame, server_cmd

URI = "file:///tmp/fuzz/main.py"
TEXT = "import os\n\n\ndef cwd():\n    return os.getcwd()\n\n\ndef main():\n    \n"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def client(tiny_model):
    c = RawClient(server_cmd(tiny_model))
    init = c.request(
        "initialize",
        {
            "processId": None,
            "rootUri": None,
            "capabilities": {},
            "initializationOptions": {"aigcCode": {"maxNewTokens": 4}},
        },
        timeout=120,
    )
    assert "capabilities" in init["result"]
    c.notify("initialized", {})
    c.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": TEXT}})
    yield c
    c.close()


def inline(client, uri=URI, line=8, character=4, timeout=60.0) -> dict:
    return client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1},
        },
        timeout=timeout,
    )


def assert_alive(client) -> None:
    response = inline(client)
    assert "result" in response, response
    assert client.alive()


def error_code(response: dict) -> int:
    assert "error" in response, response
    return response["error"]["code"]


# -- specific malformed messages and their JSON-RPC codes --------------------------------------------------------


def test_invalid_json_is_a_parse_error(client):
    client.send(frame(b'{"jsonrpc": "2.0", "id": 1, "method": '))
    msg = client.wait_for(lambda m: m.get("id") is None and "error" in m)
    assert error_code(msg) == -32700
    assert_alive(client)


def test_non_object_is_an_invalid_request(client):
    client.send(frame(b"[1, 2, 3]"))
    assert error_code(client.wait_for(lambda m: "error" in m)) == -32600
    assert_alive(client)


def test_unknown_method(client):
    assert error_code(client.request("aigcCode/noSuchMethod", {})) == -32601
    assert_alive(client)


def test_wrong_param_types(client):
    response = client.request("textDocument/inlineCompletion", {"textDocument": 5, "position": "here"})
    assert error_code(response) == -32602
    assert_alive(client)


def test_unknown_document(client):
    assert error_code(inline(client, uri="file:///nowhere/unknown.py")) == -32602
    assert_alive(client)


def test_position_out_of_range(client):
    assert error_code(inline(client, line=10_000, character=0)) == -32602
    assert_alive(client)


def test_deeply_nested_json(client):
    body = b'{"jsonrpc": "2.0", "id": 7, "method": "x", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    client.send(frame(body))
    msg = client.wait_for(lambda m: "error" in m and m.get("id") in (None, 7))
    assert error_code(msg) in (-32700, -32600, -32601, -32602)
    assert_alive(client)


def test_missing_content_length_and_garbage_headers(client):
    client.send(b"Content-Type: application/vscode-jsonrpc\r\n\r\n{}\r\n")
    client.send(b"this is not a header\r\nX-Junk: 1\r\n\r\n")
    assert_alive(client)


def test_utf16_surrogate_pairs_and_line_endings(client):
    uri = "file:///tmp/fuzz/emoji.py"
    text = "s = '😀😀'\r\nt = 1\rdef f():\r\n    "
    client.notify(
        "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}
    )
    for character in (5, 6, 7):  # 6 falls between the two UTF-16 units of the first emoji
        response = inline(client, uri=uri, line=0, character=character)
        assert "result" in response or error_code(response) == -32602
    response = inline(client, uri=uri, line=3, character=4)
    assert "result" in response
    assert_alive(client)


def test_huge_and_binary_documents(client):
    big = "x = 1\n" * (5 * 1024 * 1024 // 6)
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": "file:///tmp/fuzz/big.py", "languageId": "python", "version": 1, "text": big}},
    )
    assert "result" in inline(client, uri="file:///tmp/fuzz/big.py", line=100, character=0, timeout=120)
    binary = "".join(chr(c) for c in range(0, 0x800))
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": "file:///tmp/fuzz/bin.py", "languageId": "python", "version": 1, "text": binary}},
    )
    response = inline(client, uri="file:///tmp/fuzz/bin.py", line=0, character=3)
    assert "result" in response or error_code(response) == -32602
    assert_alive(client)


# -- property-based ------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_in_a_frame(client, body):
    client.send(frame(body))
    assert_alive(client)


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_random_json_values(client, value):
    client.send(frame(json.dumps(value)))
    assert_alive(client)


LSP_METHODS = [
    "textDocument/inlineCompletion",
    "textDocument/completion",
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "workspace/didChangeConfiguration",
    "$/cancelRequest",
    "initialize",
    "aigcCode/unknown",
]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "textDocument",
                    "position",
                    "uri",
                    "line",
                    "character",
                    "text",
                    "contentChanges",
                    "range",
                    "settings",
                    "id",
                    "version",
                    "context",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@FUZZ
@given(
    method=st.sampled_from(LSP_METHODS),
    params=JSONISH,
    with_id=st.booleans(),
    msg_id=st.one_of(st.integers(0, 10**6), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2)),
)
def test_valid_json_with_wrong_types(client, method, params, with_id, msg_id):
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if with_id:
        message["id"] = msg_id
    client.send(frame(json.dumps(message)))
    assert_alive(client)


@FUZZ
@given(body=st.binary(min_size=1, max_size=200), delta=st.integers(-200, 200))
def test_wrong_content_length(client, body, delta):
    declared = max(0, len(body) + delta)
    data = b"Content-Length: %d\r\n\r\n" % declared + body
    if declared > len(body):
        data += b" " * (declared - len(body))  # complete the declared length so framing can continue
    client.send(data)
    assert_alive(client)


def test_server_never_writes_into_the_workspace(tiny_model, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    source = workspace / "app.py"
    source.write_text("import os\n\n\ndef main():\n    \n")

    def snapshot():
        return sorted(
            (str(p.relative_to(workspace)), p.stat().st_size, p.stat().st_mtime_ns) for p in workspace.rglob("*")
        )

    before = snapshot()
    c = RawClient(server_cmd(tiny_model), cwd=workspace)
    try:
        c.request("initialize", {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {}}, timeout=120)
        c.notify("initialized", {})
        uri = source.as_uri()
        c.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": source.read_text()}},
        )
        c.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": 2},
                "contentChanges": [
                    {
                        "range": {"start": {"line": 4, "character": 4}, "end": {"line": 4, "character": 4}},
                        "text": "x = ",
                    }
                ],
            },
        )
        assert "result" in inline(c, uri=uri, line=4, character=8)
    finally:
        c.close()
    assert snapshot() == before
