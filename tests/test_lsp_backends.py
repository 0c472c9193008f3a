"""The OpenAI-compatible backend against a real local HTTP server (http.server in a thread),
the pipeline on top of it, and the `serve` command: --check, refusing non-loopback binds, and
TCP with a shared token."""

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
from aigc_code.server.backend import BackendHolder, backend_from_settings
from aigc_code.server.documents import Document
from aigc_code.server.settings import Settings
from lspkit import connect_tcp, free_port
from lsprotocol import types as T

from aigc_code.errors import BackendError
from aigc_code.fim_format import fim_prompt
from aigc_code.generation import CancellationToken, GenerationConfig
from aigc_code.pipeline import CompletionPipeline, CompletionRequest
from aigc_code.remote import OpenAIBackend, completions_url


class Stub(BaseHTTPRequestHandler):
    """A minimal /v1/completions server; behaviour set per test on the server object."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._json(200, {"data": [{"id": "stub-model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        mode = srv.mode
        if mode == "error":
            return self._json(500, {"error": {"message": "model exploded"}})
        if mode == "slow":
            time.sleep(2.0)
        texts = srv.texts
        if body.get("stream") and mode in ("sse", "slowstream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i, text in enumerate(texts):
                for piece in [text[: len(text) // 2], text[len(text) // 2 :]]:
                    chunk = {
                        "choices": [
                            {"index": i, "text": piece, "logprobs": {"token_logprobs": [-0.5]}, "finish_reason": None}
                        ]
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if mode == "slowstream":
                        time.sleep(0.3)
            if mode == "slowstream":
                for _ in range(20):
                    self.wfile.write(b'data: {"choices": [{"index": 0, "text": "x"}]}\n\n')
                    self.wfile.flush()
                    time.sleep(0.2)
            self.wfile.write(b"data: [DONE]\n\n")
            return
        choices = [
            {"index": i, "text": t, "finish_reason": "length", "logprobs": {"token_logprobs": [-0.1 * (i + 1)] * 3}}
            for i, t in enumerate(texts)
        ]
        self._json(200, {"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 3}})

    def _json(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    server.requests = []
    server.mode = "json"
    server.texts = ["return a + b\n"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def test_urls_and_fim_formats():
    assert completions_url("http://h:8000") == "http://h:8000/v1/completions"
    assert completions_url("http://h:8000/v1/") == "http://h:8000/v1/completions"
    assert completions_url("http://h/v1/completions") == "http://h/v1/completions"
    assert fim_prompt("starcoder", "P", "S") == ("<fim_prefix>P<fim_suffix>S<fim_middle>", None)
    assert fim_prompt("qwen", "P", "S")[0] == "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"
    assert fim_prompt("suffix", "P", "S") == ("P", "S")
    assert fim_prompt("<pre>{prefix}<suf>{suffix}<mid>", "P", "S") == ("<pre>P<suf>S<mid>", None)
    with pytest.raises(BackendError, match="unknown FIM format"):
        fim_prompt("nope", "", "")


def test_json_response_payload_and_ranking_data(stub):
    backend = OpenAIBackend(stub.url, model="m1", api_key="k", fim_format="starcoder")
    req = GenerationConfig(max_new_tokens=12, temperature=0.2, n=2, stop=["\n\n", "\ndef ", "\nclass ", "\n@", "\nif"])
    stub.texts = ["return a + b\n\ndef other():", "return a"]
    result = backend.complete("def add(a, b):\n    ", "\n", req)
    sent = stub.requests[-1]
    assert sent["path"] == "/v1/completions" and sent["auth"] == "Bearer k"
    body = sent["body"]
    assert body["prompt"] == "<fim_prefix>def add(a, b):<fim_suffix>\n<fim_middle>"  # "\n    " healed
    assert body["max_tokens"] == 12 and body["n"] == 2 and body["model"] == "m1" and body["temperature"] == 0.2
    assert len(body["stop"]) == 4 and body["logprobs"] == 1
    assert [c.text for c in result.candidates] == ["return a + b", "return a"]  # stop applied client-side too
    assert result.candidates[0].finish_reason == "stop" and result.candidates[1].finish_reason == "length"
    assert result.candidates[1].mean_logprob == pytest.approx(-0.2)
    assert result.prompt_tokens == 11 and result.generated_tokens == 3 and result.total_ms > 0


def test_streaming_and_suffix_field(stub):
    stub.mode = "sse"
    backend = OpenAIBackend(stub.url + "/completions", fim_format="suffix")
    result = backend.complete("x = ", "\n", GenerationConfig(max_new_tokens=4))
    body = stub.requests[-1]["body"]
    assert body["prompt"] == "x =" and body["suffix"] == "\n" and body["stream"] is True
    assert body["model"] == "stub-model"  # asked /v1/models, as none was configured
    assert result.candidates[0].text == "return a + b\n" and result.candidates[0].token_logprobs == [-0.5, -0.5]


def test_clear_errors(stub):
    stub.mode = "error"
    with pytest.raises(BackendError, match="HTTP 500.*model exploded"):
        OpenAIBackend(stub.url).complete("a", "", GenerationConfig())
    down = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match="cannot reach the completion endpoint .* Is the server running"):
        OpenAIBackend(down).complete("a", "", GenerationConfig())
    stub.mode = "slow"
    started = time.monotonic()
    with pytest.raises(BackendError, match="did not answer within 0.5s"):
        OpenAIBackend(stub.url, timeout_s=0.5).complete("a", "", GenerationConfig())
    assert time.monotonic() - started < 2
    with pytest.raises(BackendError, match="needs an endpoint"):
        OpenAIBackend("")


def test_cancel_between_stream_chunks(stub):
    stub.mode = "slowstream"
    backend = OpenAIBackend(stub.url)
    cancel = CancellationToken()
    threading.Timer(0.5, cancel.cancel).start()
    started = time.monotonic()
    result = backend.complete("a", "", GenerationConfig(), cancel)
    assert time.monotonic() - started < 2.5  # the stream would take ~5 s
    assert result.candidates[0].finish_reason == "cancelled"


def _request(doc: Document, line: int, col: int, settings: Settings, others=()) -> CompletionRequest:
    return CompletionRequest(
        doc=doc.snapshot(),
        path="src/" + doc.uri.rsplit("/", 1)[1],
        cursor=doc.index_at(line, col),
        settings=settings,
        others=[(o.snapshot(), "src/" + o.uri.rsplit("/", 1)[1]) for o in others],
    )


def test_pipeline_over_http_backend(stub):
    settings = Settings(backend="openai", endpoint=stub.url, max_new_tokens=16)
    pipeline = CompletionPipeline(BackendHolder(backend_from_settings).get)
    helper = Document(
        "file:///w/helpers.py", "python", 1, "def add_tax(amount, rate):\n    return amount * (1 + rate)\n"
    )
    doc = Document(
        "file:///w/main.py", "python", 1, "def total(amount, rate):\n    value = add_tax(amount, rate)\n    \n"
    )
    stub.texts = ["return value\n\ndef unrelated():\n    pass\n"]
    out = pipeline.run(_request(doc, 2, 4, settings, [helper]))
    assert [s.text for s in out.suggestions] == ["return value"]
    assert out.timing.mode == "multi" and out.timing.model_ms > 0 and not out.timing.cache_hit
    prompt = stub.requests[-1]["body"]["prompt"]
    assert "# src/helpers.py\ndef add_tax(amount, rate):" in prompt  # other open file as context
    assert stub.requests[-1]["body"]["stop"][0] == "\n\n\n"
    calls = len(stub.requests)

    # The user types "ret": answered from the cache, no HTTP call.
    doc.apply_change(
        "ret",
        type(
            "R",
            (),
            {
                "start": type("P", (), {"line": 2, "character": 4})(),
                "end": type("P", (), {"line": 2, "character": 4})(),
            },
        )(),
    )
    doc.version = 2
    doc.reparse()
    out = pipeline.run(_request(doc, 2, 7, settings))
    assert [s.text for s in out.suggestions] == ["urn value"] and out.timing.cache_hit
    assert len(stub.requests) == calls

    # Mid-identifier: no completion, no call.
    out = pipeline.run(_request(doc, 1, 6, settings))
    assert out.timing.mode == "none" and out.suggestions == [] and len(stub.requests) == calls


def test_pipeline_reports_backend_errors(stub):
    settings = Settings(backend="openai", endpoint=f"http://127.0.0.1:{free_port()}")
    pipeline = CompletionPipeline(BackendHolder(backend_from_settings).get)
    doc = Document("file:///w/a.py", "python", 1, "def f():\n    \n")
    with pytest.raises(BackendError, match="cannot reach"):
        pipeline.run(_request(doc, 1, 4, settings))


# ---------------------------------------------------------------------------------------------
# The serve command

SERVE = [sys.executable, "-m", "aigc_code.server", "serve"]


def test_check_reports_one_line(stub, tiny_model):
    ok = subprocess.run(
        SERVE + ["--check", "--backend", "openai", "--endpoint", stub.url], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and ok.stdout.startswith("ok: openai-compatible endpoint") and ok.stdout.count("\n") == 1
    assert "(model stub-model," in ok.stdout  # described after asking the server what it serves
    assert "HTTP Request" not in ok.stderr  # httpx's line for every request stays out of the log
    down = subprocess.run(
        SERVE + ["--check", "--backend", "openai", "--endpoint", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and down.stdout.startswith("error: cannot reach")
    local = subprocess.run(SERVE + ["--check", "--model", str(tiny_model)], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0 and local.stdout.startswith("ok: local model"), local.stderr[-2000:]


def test_non_loopback_bind_needs_allow_remote():
    proc = subprocess.run(
        SERVE + ["--tcp", "--host", "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr


def test_tcp_with_token(stub):
    from pygls.exceptions import JsonRpcException
    from pytest_lsp import make_test_lsp_client

    port = free_port()
    proc = subprocess.Popen(
        SERVE + ["--tcp", "--port", str(port), "--token", "s3cret", "--backend", "openai", "--endpoint", stub.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    async def session():
        client = make_test_lsp_client()
        await connect_tcp(client, port)
        params = T.InitializeParams(
            capabilities=T.ClientCapabilities(), initialization_options={"aigcCode": {"token": "wrong"}}
        )
        client.capabilities = params.capabilities
        with pytest.raises(JsonRpcException, match="not authorized"):
            await client.initialize_async(params)
        with pytest.raises(JsonRpcException, match="not authorized"):
            await client.protocol.send_request_async("aigcCode/status", None)
        params.initialization_options = {"aigcCode": {"token": "s3cret", "maxNewTokens": 5}}
        await client.initialize_session(params)
        uri = "file:///w/tcp.py"
        client.text_document_did_open(
            T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, "def f(a, b):\n    \n"))
        )
        stub.texts = ["return a + b"]
        result = await client.text_document_inline_completion_async(
            T.InlineCompletionParams(
                context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
                text_document=T.TextDocumentIdentifier(uri),
                position=T.Position(1, 4),
            )
        )
        assert [i.insert_text for i in result.items] == ["return a + b"]
        assert stub.requests[-1]["body"]["max_tokens"] == 5
        await client.shutdown_async(None)
        client.exit(None)
        await asyncio.sleep(0.2)

    try:
        asyncio.run(asyncio.wait_for(session(), 60))
        time.sleep(0.3)
        assert proc.poll() is None  # the client left; the server waits for the next one
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def test_model_load_failure_is_reported_and_server_stays_up(tmp_path):
    from pygls.exceptions import JsonRpcInternalError
    from pytest_lsp import make_test_lsp_client

    async def session():
        client = make_test_lsp_client()
        await client.start_io(*SERVE, "--model", str(tmp_path / "no-such-model"))
        await client.initialize_session(T.InitializeParams(capabilities=T.ClientCapabilities()))
        uri = "file:///w/x.py"
        client.text_document_did_open(
            T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, "def f():\n    \n"))
        )
        params = T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Automatic),
            text_document=T.TextDocumentIdentifier(uri),
            position=T.Position(1, 4),
        )
        with pytest.raises(JsonRpcInternalError, match="no-such-model does not exist"):
            await client.text_document_inline_completion_async(params)
        # the worker answers the request itself; the popup comes from the loop, possibly a moment later
        for _ in range(50):
            if any("cannot load the model" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.02)
        assert any("cannot load the model" in m.message for m in client.messages)  # window/showMessage
        assert any("does not exist" in m.message for m in client.log_messages)
        # Still answering, and a second request gets the same clear error.
        with pytest.raises(JsonRpcInternalError, match="does not exist"):
            await client.text_document_inline_completion_async(params)
        await client.shutdown_session()
        code = client._server.returncode
        await client.stop()
        return code

    assert asyncio.run(asyncio.wait_for(session(), 90)) == 0
