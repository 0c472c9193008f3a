"""The server's start-up behaviour, over real JSON-RPC: the model loads in the background right after
`initialize` (before `initialized`, before any completion request; stdio and --tcp), `aigcCode/status`
says "loading" until the model is loaded and warmed up, and inline items replace the auto-closed
bracket after the cursor (the range from aigc_code/brackets.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lspkit import connect_tcp, free_port, plain
from lsprotocol import types as T
from pytest_lsp import make_test_lsp_client

SERVE = [sys.executable, "-m", "aigc_code.server", "serve"]


async def backend_states(client, timeout_s: float = 90.0) -> list[str]:
    """Poll aigcCode/status until the backend is no longer loading; every distinct state seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = plain(await client.protocol.send_request_async("aigcCode/status", None))["backend"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state not in ("loading", "not loaded"):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"the backend did not load within {timeout_s} s: {seen}")


def test_model_loads_after_initialize_before_any_request(tiny_model):
    async def session():
        client = make_test_lsp_client()
        await client.start_io(*SERVE, "--model", str(tiny_model))
        t0 = time.monotonic()
        # `initialize` only: no `initialized`, no document, no completion request.
        params = T.InitializeParams(capabilities=T.ClientCapabilities())
        client.capabilities = params.capabilities
        await client.protocol.send_request_async(T.INITIALIZE, params)
        states = await backend_states(client)
        loaded_after = time.monotonic() - t0
        assert states[-1].startswith("local model"), states
        assert all(s == "loading" for s in states[:-1]), states  # never a description before the load finished
        # the client's log says when it became ready, with the load time
        for _ in range(50):
            if any(m.message.startswith("aigc-code: ready: local model") for m in client.log_messages):
                break
            await asyncio.sleep(0.05)
        assert any("loaded in" in m.message for m in client.log_messages), [m.message for m in client.log_messages]
        client.protocol.notify(T.INITIALIZED, T.InitializedParams())
        # `initialized` does not load it a second time
        await asyncio.sleep(0.3)
        assert plain(await client.protocol.send_request_async("aigcCode/status", None))["backend"] == states[-1]
        await client.shutdown_session()
        await client.stop()
        return loaded_after

    loaded_after = asyncio.run(asyncio.wait_for(session(), 120))
    assert loaded_after < 90


# ---------------------------------------------------------------------------------------------
# --tcp and the bracket range, against an OpenAI-compatible stub (deterministic suggestion text)


class Stub(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self._json({"data": [{"id": "stub"}]})

    def do_POST(self):
        json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._json({"choices": [{"index": 0, "text": self.server.text, "finish_reason": "stop"}]})

    def _json(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    server.text = '"ready")'
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


async def inline_items(client, uri: str, line: int, character: int):
    result = await client.text_document_inline_completion_async(
        T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
            text_document=T.TextDocumentIdentifier(uri),
            position=T.Position(line, character),
        )
    )
    return result.items


def test_tcp_loads_after_initialize_and_range_replaces_auto_closed_bracket(stub):
    port = free_port()
    proc = subprocess.Popen(
        SERVE + ["--tcp", "--port", str(port), "--backend", "openai", "--endpoint", stub.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def session():
        client = make_test_lsp_client()
        await connect_tcp(client, port)
        params = T.InitializeParams(
            capabilities=T.ClientCapabilities(), initialization_options={"aigcCode": {"debounceMs": 0}}
        )
        client.capabilities = params.capabilities
        await client.protocol.send_request_async(T.INITIALIZE, params)
        states = await backend_states(client)
        assert states[-1].startswith("openai-compatible endpoint"), states
        client.protocol.notify(T.INITIALIZED, T.InitializedParams())
        uri = "file:///w/bracket.js"
        text = "function f(n) {\n  console.log()\n}\n"
        client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "javascript", 1, text)))
        stub.text = '"ready")'
        items = await inline_items(client, uri, 1, 14)  # `  console.log(|)`: the editor auto-closed the `)`
        assert items, "no suggestion"
        item, line = items[0], text.split("\n")[1]
        rng = item.range
        assert (rng.start.line, rng.start.character, rng.end.line) == (1, 14, 1)
        # applied over its range, the suggestion leaves the line valid: `console.log("ready")`, not `...("ready"))`
        assert line[: rng.start.character] + item.insert_text + line[rng.end.character :] == '  console.log("ready")'
        await client.shutdown_async(None)
        client.exit(None)
        await asyncio.sleep(0.2)

    try:
        asyncio.run(asyncio.wait_for(session(), 90))
        time.sleep(0.3)
        assert proc.poll() is None  # the client left; the server waits for the next one
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
