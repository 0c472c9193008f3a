"""End to end: the real server (`python -m aigc_code.server serve --model <tiny model>`) over
stdio, driven by pytest-lsp's client. One server for the module; each test uses its own
documents and sets the settings it needs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import time

import pytest
import pytest_asyncio
from lspkit import plain
from lsprotocol import types as T
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcMethodNotFound, JsonRpcRequestCancelled
from pytest_lsp import make_test_lsp_client

from aigc_code.bench.lspclient import frame

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE = {"maxNewTokens": 8, "temperature": 0.0}


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    """The tiny model with an 8k context: a long generation lasts seconds (the engine never generates
    past the context, and the 512-token one finishes in well under a second on the fast path)."""
    from aigc_code.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-8k") / "model", context=8192)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(long_context_model):
    c = make_test_lsp_client()
    await c.start_io(
        sys.executable, "-m", "aigc_code.server", "serve", "--model", str(long_context_model), "--log-level", "INFO"
    )
    c.init_result = await c.initialize_session(
        T.InitializeParams(
            capabilities=T.ClientCapabilities(workspace=T.WorkspaceClientCapabilities(configuration=True)),
            root_uri="file:///project",
            initialization_options={"aigcCode": dict(BASE)},
        )
    )
    yield c
    if c._server is not None and c._server.returncode is None:
        try:
            await asyncio.wait_for(c.shutdown_session(), 10)
        except Exception:
            c._server.kill()
    await c.stop()


def configure(client, **settings) -> None:
    client.workspace_did_change_configuration(
        T.DidChangeConfigurationParams(settings={"aigcCode": {**BASE, **settings}})
    )


def open_doc(client, uri: str, language: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, language, version, text)))


def inline(client, uri: str, line: int, character: int, kind=T.InlineCompletionTriggerKind.Automatic, msg_id=None):
    params = T.InlineCompletionParams(
        context=T.InlineCompletionContext(trigger_kind=kind),
        text_document=T.TextDocumentIdentifier(uri),
        position=T.Position(line, character),
    )
    if msg_id is not None:
        return client.protocol.send_request_async(T.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    return client.text_document_inline_completion_async(params)


async def last_timing(client) -> dict:
    return plain(await client.protocol.send_request_async("aigcCode/lastTiming", None))


async def status(client) -> dict:
    return plain(await client.protocol.send_request_async("aigcCode/status", None))


def send_raw(client, body: bytes, msg_id=None):
    """Write a raw message; when `msg_id` is given, return a future for its response."""
    fut = None
    if msg_id is not None:
        cf: concurrent.futures.Future = concurrent.futures.Future()
        client.protocol._request_futures[msg_id] = cf
        fut = asyncio.wrap_future(cf)
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return fut


PY = "import os\n\n\ndef area(width, height):\n    # multiply the sides of the\n    result = width * height\n    \n    return result\n"


async def test_initialize_advertises_features(client):
    caps = client.init_result.capabilities
    assert client.init_result.server_info.name == "aigc-code"
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    sync = caps.text_document_sync
    assert sync.change == T.TextDocumentSyncKind.Incremental and sync.open_close
    assert caps.position_encoding in (None, T.PositionEncodingKind.Utf16)
    info = await status(client)
    assert info["settings"]["maxNewTokens"] == 8
    assert info["positionEncoding"] == "utf-16"


async def test_inline_completion_and_completion_fallback(client):
    uri = "file:///project/geometry.py"
    open_doc(client, uri, "python", PY)
    line, col = 4, len("    # multiply the sides of the")
    found = None
    for seed in range(12):  # random tiny model: find a seed whose sample survives post-processing
        configure(client, temperature=1.0, seed=seed, maxNewTokens=12)
        result = await inline(client, uri, line, col)
        assert isinstance(result, T.InlineCompletionList)
        if result.items:
            found = result
            break
    assert found is not None, "no seed produced a suggestion"
    item = found.items[0]
    assert item.range == T.Range(T.Position(line, col), T.Position(line, col))
    assert isinstance(item.insert_text, str) and item.insert_text.strip() and "\n" not in item.insert_text
    timing = await last_timing(client)
    assert timing["mode"] == "single" and not timing["cache_hit"]
    assert timing["model_ms"] > 0 and timing["total_ms"] >= timing["model_ms"]

    # The completion fallback answers from the cache: same text, as a textEdit, shown first.
    completion = await client.text_document_completion_async(
        T.CompletionParams(text_document=T.TextDocumentIdentifier(uri), position=T.Position(line, col))
    )
    assert completion.is_incomplete and len(completion.items) == 1
    citem = completion.items[0]
    assert citem.text_edit.new_text == item.insert_text
    assert citem.text_edit.range == item.range
    assert citem.preselect and citem.sort_text < "0" and citem.label
    assert plain(citem.data)["aigcCode"]["cache_hit"] is True

    # Typing the first character of the suggestion: the rest comes from the cache, no model call.
    typed = item.insert_text[0]
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                T.TextDocumentContentChangePartial(
                    range=T.Range(T.Position(line, col), T.Position(line, col)), text=typed
                )
            ],
        )
    )
    if len(item.insert_text) > 1:
        again = await inline(client, uri, line, col + 1)
        assert again.items and again.items[0].insert_text == item.insert_text[1:]
        assert (await last_timing(client))["cache_hit"] is True


LANG_DOCS = [
    # (language id, file, text, (line, character), expected mode)
    ("javascript", "app.js", "function total(items) {\n  let sum = 0;\n  \n}\n", (2, 2), "multi"),
    (
        "typescript",
        "svc.ts",
        "export class Svc {\n  run(x: number): number {\n    return x\n  }\n}\n",
        (2, 12),
        "single",
    ),
    ("go", "main.go", "package main\n\nfunc add(a, b int) int {\n\t\n}\n", (3, 1), "multi"),
    ("rust", "lib.rs", "fn add(a: i32, b: i32) -> i32 {\n    let total = a + \n}\n", (1, 20), "single"),
    ("java", "Main.java", "class Main {\n  int twice(int x) {\n    return twi(x);\n  }\n}\n", (2, 13), "none"),
    ("c", "util.c", "#include <stdio.h>\n\nint square(int x) {\n  \n}\n", (3, 2), "multi"),
    (
        "cpp",
        "util.cpp",
        "#include <vector>\n\nint main() {\n  std::vector<int> v;\n  // print the\n}\n",
        (4, 14),
        "single",
    ),
]


async def test_languages_modes(client):
    configure(client)
    for language, name, text, (line, col), mode in LANG_DOCS:
        uri = f"file:///project/{name}"
        open_doc(client, uri, language, text)
        result = await inline(client, uri, line, col)
        assert isinstance(result, T.InlineCompletionList), language
        timing = await last_timing(client)
        assert timing["uri"] == uri and timing["mode"] == mode, (language, timing)
        if mode == "none":
            assert timing["model_ms"] == 0 and not result.items
        for item in result.items:
            assert item.range.start == T.Position(line, col)


async def test_invoked_in_identifier_still_completes(client):
    configure(client)
    uri = "file:///project/Ident.java"
    open_doc(client, uri, "java", "class A {\n  int f() { return fo(1); }\n}\n")
    await inline(client, uri, 1, 21, kind=T.InlineCompletionTriggerKind.Invoked)
    assert (await last_timing(client))["mode"] == "single"


async def test_incremental_sync_utf16_positions(client):
    configure(client)
    uri = "file:///project/emoji.py"
    open_doc(client, uri, "python", "s = 'ab'\n")
    # Insert an astral character (2 UTF-16 code units) and a line, incrementally.
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                T.TextDocumentContentChangePartial(
                    range=T.Range(T.Position(0, 6), T.Position(0, 6)), text="\U0001f600"
                ),
                T.TextDocumentContentChangePartial(range=T.Range(T.Position(1, 0), T.Position(1, 0)), text="t = s\n"),
            ],
        )
    )
    # Line 0 is now  s = 'a😀b'  : 10 UTF-16 units (9 code points).
    await inline(client, uri, 0, 10)
    assert (await last_timing(client))["version"] == 2
    with pytest.raises(JsonRpcInvalidParams, match="out of range"):
        await inline(client, uri, 0, 11)
    await inline(client, uri, 1, 5)  # the inserted line exists
    with pytest.raises(JsonRpcInvalidParams, match="out of range"):
        await inline(client, uri, 3, 0)
    # Replace the emoji (UTF-16 columns 6-8) and check the new line length.
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=3),
            content_changes=[
                T.TextDocumentContentChangePartial(range=T.Range(T.Position(0, 6), T.Position(0, 8)), text="z")
            ],
        )
    )
    await inline(client, uri, 0, 9)  # s = 'azb'  -> 9 units
    with pytest.raises(JsonRpcInvalidParams):
        await inline(client, uri, 0, 10)


async def test_unknown_document_and_bad_positions(client):
    with pytest.raises(JsonRpcInvalidParams, match="unknown document"):
        await inline(client, "file:///project/never-opened.py", 0, 0)
    uri = "file:///project/small.py"
    open_doc(client, uri, "python", "x = 1\n")
    with pytest.raises(JsonRpcInvalidParams, match="out of range"):
        await inline(client, uri, 0, 99)
    with pytest.raises(JsonRpcInvalidParams, match="out of range"):
        await client.text_document_completion_async(
            T.CompletionParams(text_document=T.TextDocumentIdentifier(uri), position=T.Position(7, 0))
        )
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    with pytest.raises(JsonRpcInvalidParams, match="unknown document"):
        await inline(client, uri, 0, 0)


async def test_malformed_messages_get_errors_and_server_keeps_answering(client):
    bad_params = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": "bad-1",
            "method": "textDocument/inlineCompletion",
            "params": {"textDocument": {"uri": 5}, "position": {"line": "x"}},
        }
    ).encode()
    with pytest.raises(JsonRpcInvalidParams, match="invalid params"):
        await asyncio.wait_for(send_raw(client, bad_params, "bad-1"), 10)
    no_params = json.dumps({"jsonrpc": "2.0", "id": "bad-2", "method": "textDocument/completion"}).encode()
    with pytest.raises(JsonRpcInvalidParams):
        await asyncio.wait_for(send_raw(client, no_params, "bad-2"), 10)
    send_raw(client, b"{this is not json")
    send_raw(
        client, json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"bogus": 1}}).encode()
    )
    with pytest.raises(JsonRpcMethodNotFound):
        await client.protocol.send_request_async("aigcCode/noSuchMethod", {})
    # didChange for a document that is not open: logged, not fatal.
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri="file:///project/ghost.py", version=2),
            content_changes=[T.TextDocumentContentChangeWholeDocument(text="x")],
        )
    )
    info = await status(client)
    assert info["version"]
    assert any("ghost.py" in m.message for m in client.log_messages)


async def test_configuration_change(client):
    configure(client, maxNewTokens=5, enabledLanguages=["python", "go"], temperature="hot", nonsense=True)
    info = await status(client)
    assert info["settings"]["maxNewTokens"] == 5
    assert info["settings"]["enabledLanguages"] == ["python", "go"]
    assert info["settings"]["temperature"] == 0.0  # the bad value was ignored
    await asyncio.sleep(0.1)
    messages = [m.message for m in client.log_messages]
    assert any("temperature" in m and "ignored" in m for m in messages)
    assert any("nonsense" in m for m in messages)
    # A disabled language gets no suggestions (and no model call).
    uri = "file:///project/disabled.js"
    open_doc(client, uri, "javascript", "function f() {\n  \n}\n")
    before = await last_timing(client)
    result = await inline(client, uri, 1, 2)
    assert not result.items
    assert await last_timing(client) == before
    # Pull model: an empty didChangeConfiguration makes the server ask workspace/configuration.
    client.set_configuration({"maxNewTokens": 6}, section="aigcCode")
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    for _ in range(50):
        if (await status(client))["settings"]["maxNewTokens"] == 6:
            break
        await asyncio.sleep(0.05)
    assert (await status(client))["settings"]["maxNewTokens"] == 6
    configure(client)


async def test_settings_pushed_just_before_a_request_apply_to_it(client):
    """didChangeConfiguration is handled in a task; a completion request written right behind it
    (no await between the two) is answered under the new settings, not the old ones."""
    for _ in range(600):
        if (await status(client))["ready"]:
            break
        await asyncio.sleep(0.1)
    uri = "file:///project/ordered.js"
    open_doc(client, uri, "javascript", "function area(w, h) {\n  \n}\n")
    before = await last_timing(client)
    settings = {"aigcCode": {**BASE, "enabledLanguages": ["python"]}}
    notification = {"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", "params": {"settings": settings}}
    position = {"line": 1, "character": 2}
    request = {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 2}}
    frames = [
        notification,
        {"jsonrpc": "2.0", "id": 90001, "method": T.TEXT_DOCUMENT_INLINE_COMPLETION, "params": request},
    ]
    answer: concurrent.futures.Future = concurrent.futures.Future()
    client.protocol._request_futures[90001] = answer
    client.protocol.writer.write(b"".join(frame(json.dumps(m).encode()) for m in frames))  # one write: one read
    assert not plain(await asyncio.wrap_future(answer))["items"]
    assert await last_timing(client) == before  # javascript was off: no model call
    configure(client)
    await inline(client, uri, 1, 2)
    assert (await last_timing(client))["uri"] == uri  # on again: the same request ran the pipeline


async def test_cancel_request_stops_generation(client):
    for _ in range(600):  # the model loaded (run alone, this is the session's first test)
        if (await status(client))["ready"]:
            break
        await asyncio.sleep(0.1)
    uri = "file:///project/long.py"
    open_doc(client, uri, "python", "def f(x):\n    \n")
    # The server holds the request for the debounce, so the cancel surely finds it unanswered (the tiny
    # model may end a suggestion on its own within milliseconds, and an answer already sent stands).
    configure(client, maxNewTokens=4000, debounceMs=300)
    pending = asyncio.ensure_future(inline(client, uri, 1, 4, msg_id="long-1"))
    await asyncio.sleep(0.1)
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id="long-1"))
    started = time.monotonic()
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(pending, 15)
    assert time.monotonic() - started < 5
    # The worker is free again at once: the generation stopped, it did not run to the end.
    configure(client, maxNewTokens=2)
    started = time.monotonic()
    await inline(client, uri, 0, 9)
    assert time.monotonic() - started < 8
    assert (await last_timing(client))["queue_ms"] < 5000


async def test_newer_request_supersedes_older(client):
    uri = "file:///project/super.py"
    open_doc(client, uri, "python", "def g(y):\n    \n")
    configure(client, maxNewTokens=3000)
    first = asyncio.ensure_future(inline(client, uri, 1, 4))
    await asyncio.sleep(0.8)
    configure(client, maxNewTokens=2)
    second = await asyncio.wait_for(inline(client, uri, 0, 9), 15)
    older = await asyncio.wait_for(first, 5)
    assert not older.items and isinstance(second, T.InlineCompletionList)


async def test_debounce_drops_a_request_overtaken_by_typing(client):
    uri = "file:///project/debounce.py"
    open_doc(client, uri, "python", "def h(z):\n    \n")
    configure(client, debounceMs=400)
    before = await last_timing(client)
    pending = asyncio.ensure_future(inline(client, uri, 1, 4))
    await asyncio.sleep(0.1)
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                T.TextDocumentContentChangePartial(range=T.Range(T.Position(1, 4), T.Position(1, 4)), text="r")
            ],
        )
    )
    result = await asyncio.wait_for(pending, 10)
    assert not result.items
    assert await last_timing(client) == before  # the model never ran for it
    configure(client)


async def test_shutdown_and_exit(client):
    await client.shutdown_session()
    assert client._server.returncode == 0
