"""`aigc-code serve --tcp`: one server session per client, clients one after another (and at the
same time) on one loaded model; `exit` ends a session without a traceback; a port in use is one
error line before anything says "listening"."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

from lspkit import connect_tcp, free_port
from lsprotocol import types as T
from pytest_lsp import make_test_lsp_client

SERVE = [sys.executable, "-m", "aigc_code.server", "serve"]


async def connect(port: int):
    client = make_test_lsp_client()
    await connect_tcp(client, port)
    return client


async def one_session(port: int, name: str) -> list[str]:
    client = await connect(port)
    await client.initialize_session(
        T.InitializeParams(
            capabilities=T.ClientCapabilities(), initialization_options={"aigcCode": {"maxNewTokens": 4}}
        )
    )
    uri = f"file:///w/{name}.py"
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, "def f(a):\n    ")))
    result = await client.text_document_inline_completion_async(
        T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
            text_document=T.TextDocumentIdentifier(uri),
            position=T.Position(1, 4),
        )
    )
    status = await client.protocol.send_request_async("aigcCode/status", None)
    await client.shutdown_async(None)
    client.exit(None)
    await asyncio.sleep(0.2)
    return [status.documents, len(result.items) if result else 0]


def test_tcp_serves_clients_one_after_another_and_at_once(tiny_model):
    port = free_port()
    proc = subprocess.Popen(
        [*SERVE, "--tcp", "--port", str(port), "--model", str(tiny_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = asyncio.run(asyncio.wait_for(one_session(port, "a"), 120))
        second = asyncio.run(asyncio.wait_for(one_session(port, "b"), 120))

        async def together():
            return await asyncio.gather(one_session(port, "c"), one_session(port, "d"))

        both = asyncio.run(asyncio.wait_for(together(), 120))
        assert first[0] == second[0] == 1  # each session sees only its own documents
        assert [s[0] for s in both] == [1, 1]
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "Traceback" not in err and "SystemExit" not in err, err[-3000:]
        assert err.count("connected") == 4 and err.count("left") == 4
    finally:
        if proc.poll() is None:
            proc.kill()


def test_port_in_use_is_one_error_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*SERVE, "--tcp", "--port", str(port), "--backend", "openai", "--endpoint", "http://127.0.0.1:9/v1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "listening" not in done.stderr and "Traceback" not in done.stderr
