"""The OpenAI-compatible backend against in-test HTTP servers that speak like vLLM, llama.cpp's
servers or a plain OpenAI endpoint: FIM layouts, token healing, explicit sampling values, n > 1
on a server that ignores it, an empty stream (prompt over the context), usage-less streams, and
`aigcCode/status` / error reporting over a real LSP session while the endpoint goes down and up."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lspkit import free_port
from lsprotocol import types as T

from aigc_code.errors import BackendError
from aigc_code.fim_format import checkpoint_fim_format, parse_fim_format
from aigc_code.generation import GenerationConfig
from aigc_code.loading import DEFAULT_MODEL_DIR
from aigc_code.remote import OpenAIBackend
from aigc_code.remote_healing import heal_grammar, strip_heal

PIECE = re.compile(r"\s+|\w+|[^\w\s]")  # the stub's "tokenizer": whitespace runs, words, single marks


class Engine(BaseHTTPRequestHandler):
    """/v1/models, /v1/completions (SSE or JSON) and the flavour's own endpoints; behaviour set on the server."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if self.path == "/info" and srv.flavour == "tgi":
            return self._json(200, {"model_id": srv.model_id, "max_total_tokens": 4096, "max_input_tokens": 4095})
        if self.path == "/v1/models":
            entry = {"id": srv.model_id, "object": "model", "owned_by": srv.owner}
            if srv.flavour == "vllm":
                entry["max_model_len"] = srv.n_ctx or 2048
            return self._json(200, {"object": "list", "data": [entry]})
        self._json(404, {"detail": "Not Found"})

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append({"path": self.path, "body": body})
        if self.path == "/extras/tokenize" and srv.flavour == "llama-cpp-python":
            return self._json(
                200, {"tokens": [srv.vocab.setdefault(p, len(srv.vocab)) for p in PIECE.findall(body["input"])]}
            )
        if self.path == "/extras/detokenize" and srv.flavour == "llama-cpp-python":
            words = {i: p for p, i in srv.vocab.items()}
            return self._json(200, {"text": "".join(words[i] for i in body["tokens"])})
        if self.path == "/tokenize" and srv.flavour == "vllm":
            return self._json(
                200, {"tokens": [srv.vocab.setdefault(p, len(srv.vocab)) for p in PIECE.findall(body["prompt"])]}
            )
        if self.path == "/detokenize" and srv.flavour == "vllm":
            words = {i: p for p, i in srv.vocab.items()}
            return self._json(200, {"prompt": "".join(words[i] for i in body["tokens"])})
        if self.path == "/tokenize" and srv.flavour == "tgi":
            return self._json(
                200,
                [
                    {"id": i, "text": m.group(), "start": m.start(), "stop": m.end()}
                    for i, m in enumerate(PIECE.finditer(body["inputs"]))
                ],
            )
        if self.path != "/v1/completions":
            return self._json(404, {"detail": "Not Found"})
        self._complete(body)

    def _complete(self, body):
        srv = self.server
        used = len(PIECE.findall(body["prompt"])), body.get("max_tokens", 16)
        if srv.n_ctx and sum(used) > srv.n_ctx:  # as the real servers refuse a prompt over the context
            if srv.flavour == "llama-cpp-python" or srv.silent_overflow:  # 0.3.36: HTTP 200 and an empty stream
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                return self.wfile.write(b"data: [DONE]\n\n")
            message = (
                f"This model's maximum context length is {srv.n_ctx} tokens. However, you requested "
                f"{sum(used)} tokens ({used[0]} in the messages, {used[1]} in the completion)."
            )
            return self._json(400, {"object": "error", "message": message, "code": 400})
        n = 1 if srv.ignore_n else body.get("n", 1)
        texts = [srv.texts[(len(srv.requests) + i) % len(srv.texts)] for i in range(n)]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if not srv.empty:
            for i, text in enumerate(texts):
                for piece in PIECE.findall(text):
                    self._event({"choices": [{"index": i, "text": piece, "finish_reason": None}]})
                self._event({"choices": [{"index": i, "text": "", "finish_reason": "length"}]})
            if body.get("stream_options", {}).get("include_usage"):
                self._event({"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 7}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, chunk):
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()

    def _json(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_engine(flavour: str = "openai", port: int = 0, **kw) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Engine)
    server.daemon_threads = True
    server.flavour = flavour
    server.owner = {"vllm": "vllm", "llama-cpp-python": "me"}.get(flavour, "organization-owner")
    server.model_id = kw.get("model_id", "served-model")
    server.texts = kw.get("texts", ["return a + b\n"])
    server.ignore_n = kw.get("ignore_n", False)
    server.empty = kw.get("empty", False)
    server.n_ctx = kw.get("n_ctx")
    server.silent_overflow = kw.get("silent_overflow", False)
    server.requests, server.vocab = [], {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return server


@pytest.fixture
def engine_factory():
    servers = []

    def make(flavour="openai", **kw):
        servers.append(start_engine(flavour, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def completions(srv):
    return [r["body"] for r in srv.requests if r["path"] == "/v1/completions"]


GREEDY = GenerationConfig(max_new_tokens=16, temperature=0.0)


# -- FIM layouts ------------------------------------------------------------------------------


def test_fim_presets_checkpoint_layout_and_template_stops(tmp_path):
    assert parse_fim_format("starcoder-spm").prompt("P", "S") == ("<fim_prefix><fim_suffix>S<fim_middle>P", None)
    assert parse_fim_format("qwen-psm").prompt("P", "S")[0] == "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"
    assert "<fim_pad>" in parse_fim_format("starcoder-spm").stops
    custom = parse_fim_format("<PRE> {prefix} <SUF>{suffix} <MID>")
    assert custom.prompt("P", "S") == ("<PRE> P <SUF>S <MID>", None) and custom.stops == ["<PRE>", "<SUF>", "<MID>"]
    with pytest.raises(BackendError, match="unknown FIM format 'nope-spm'"):
        parse_fim_format("nope-spm")
    # The shipped model declares suffix-first (aigc_code.json) and has StarCoder's tokens.
    assert checkpoint_fim_format(str(DEFAULT_MODEL_DIR)) == "starcoder-spm"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    (tmp_path / "m.gguf.aigc_code.json").write_text('{"fim_family": "qwen", "fim_layout": "spm"}')
    assert checkpoint_fim_format(str(gguf)) == "qwen-spm" and checkpoint_fim_format(str(tmp_path / "x")) is None


def test_auto_fim_uses_the_served_checkpoints_layout(engine_factory):
    srv = engine_factory(model_id=str(DEFAULT_MODEL_DIR), texts=["a + b"])
    backend = OpenAIBackend(srv.url, fim_format="auto", heal=False)
    result = backend.complete("return ", "\n", GREEDY)
    assert completions(srv)[-1]["prompt"] == "<fim_prefix><fim_suffix>\n<fim_middle>return "
    assert backend.fim_format == "starcoder-spm" and result.text == "a + b"


def test_custom_template_stop_strings_cut_the_completion(engine_factory):
    srv = engine_factory(texts=["x = 1 <SUF> junk"])
    backend = OpenAIBackend(srv.url, fim_format="<PRE>{prefix}<SUF>{suffix}<MID>", heal=False)
    assert backend.complete("y = 2\n", "", GREEDY).text == "x = 1 "


# -- token healing ----------------------------------------------------------------------------


def test_healing_with_the_servers_tokenizer_and_grammar(engine_factory):
    srv = engine_factory("llama-cpp-python", texts=["\n    return a + b\n"])
    backend = OpenAIBackend(srv.url, fim_format="starcoder")
    result = backend.complete("def add(a, b):\n    ", "", GREEDY)
    body = completions(srv)[-1]
    assert body["prompt"] == "<fim_prefix>def add(a, b):<fim_suffix><fim_middle>"  # last token "\n    " taken back
    assert body["grammar"] == heal_grammar("\n    ") and body["grammar"].startswith('root ::= "\\x0a    " rest')
    assert result.text == "return a + b\n"  # written once, not twice


@pytest.mark.parametrize("flavour", ["llama-cpp-python", "vllm", "openai"])
def test_a_stop_inside_the_healed_text_is_not_sent_to_the_server(engine_factory, flavour):
    """A one-line completion at the start of an indented line heals "\\n    " under the stop "\\n":
    sent to the server, that stop would end every output on the healed characters (empty
    suggestions, found by the repository benchmark through llama.cpp). The client cuts at it; on
    llama.cpp the grammar ends the output at the first newline after the heal."""
    srv = engine_factory(flavour, texts=["\n    x = 1\n    y = 2\n"])
    backend = OpenAIBackend(srv.url, fim_format="starcoder")
    one_line = GenerationConfig(max_new_tokens=16, temperature=0.0, stop=["\n", "<|end|>"])
    assert backend.complete('def f():\n    """Doc.\n    ', "", one_line).text == "x = 1"
    body = completions(srv)[-1]
    assert body["prompt"].endswith('"""Doc.<fim_suffix><fim_middle>') and body["stop"] == ["<|end|>"]
    if flavour == "llama-cpp-python":
        assert body["grammar"] == heal_grammar("\n    ", "\n")
        assert body["grammar"].endswith("rest ::= [^\\x00\\x0a]* ([\\x0a] [ \\t]*)?\n")
    backend.complete("x = f(", "", one_line)  # nothing healed: the stop goes to the server
    assert completions(srv)[-1]["stop"] == ["\n", "<|end|>"]


@pytest.mark.parametrize("flavour", ["vllm", "tgi"])
def test_healing_with_vllm_and_tgi_tokenizers(engine_factory, flavour):
    srv = engine_factory(flavour, texts=["\n    return a\n"])
    backend = OpenAIBackend(srv.url, fim_format="starcoder")
    assert backend.complete("def f(a):\n    ", "", GREEDY).text == "return a\n"
    assert completions(srv)[-1]["prompt"] == "<fim_prefix>def f(a):<fim_suffix><fim_middle>"
    assert "grammar" not in completions(srv)[-1] and any(r["path"] == "/tokenize" for r in srv.requests)
    assert backend.info.flavour == flavour and backend.max_context == {"vllm": 2048, "tgi": 4096}[flavour]


def test_healing_without_a_tokenizer_takes_back_trailing_whitespace(engine_factory):
    srv = engine_factory(texts=["\n  return x;\n}"])
    backend = OpenAIBackend(srv.url, fim_format="starcoder")
    result = backend.complete("function f(x) {\n  ", "\n", GREEDY)
    assert completions(srv)[-1]["prompt"] == "<fim_prefix>function f(x) {<fim_suffix>\n<fim_middle>"
    assert "grammar" not in completions(srv)[-1] and result.text == "return x;\n}"
    assert strip_heal("\n\t\tx", "\n\t") == "\tx" and strip_heal("\n", "\n\t") == "" and strip_heal("y", "\n") == "y"


# -- sampling parameters, usage, context --------------------------------------------------------


def test_explicit_sampling_values_per_flavour(engine_factory):
    vllm = engine_factory("vllm")
    backend = OpenAIBackend(vllm.url, fim_format="starcoder", heal=False)
    assert backend.max_context == 2048  # /v1/models max_model_len
    result = backend.complete("x", "", GREEDY)
    body = completions(vllm)[-1]
    assert {k: body[k] for k in ("repetition_penalty", "presence_penalty", "frequency_penalty", "top_k", "min_p")} == {
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": -1,
        "min_p": 0.0,
    }
    assert body["model"] == "served-model" and body["stream_options"] == {"include_usage": True}
    assert (result.prompt_tokens, result.generated_tokens) == (42, 7)  # the server's usage, when it sends one

    llama = engine_factory("llama-cpp-python")
    body = (OpenAIBackend(llama.url, heal=False).complete("x", "", GREEDY), completions(llama)[-1])[1]
    assert (
        body["repeat_penalty"] == 1.0 and body["top_k"] == 0 and body["min_p"] == 0.0 and "stream_options" not in body
    )


def test_streams_without_usage_still_count_tokens(engine_factory):
    srv = engine_factory("llama-cpp-python", texts=["return a + b"])
    result = OpenAIBackend(srv.url, heal=False).complete("def add(a, b):\n    ", "", GREEDY)
    assert result.generated_tokens == len(PIECE.findall("return a + b"))  # one streamed chunk a token
    assert result.prompt_tokens > 0


def test_empty_stream_is_an_error_about_the_context(engine_factory):
    srv = engine_factory("llama-cpp-python", empty=True)
    backend = OpenAIBackend(srv.url, heal=False, max_context=512)
    with pytest.raises(
        BackendError,
        match=r"no text and no finish reason: the prompt \(about \d+ tokens\) is probably "
        r"longer than the server's context \(512\)",
    ):
        backend.complete("x = 1\n" * 400, "", GREEDY)
    assert backend.max_context == 512


def test_n_greater_than_one_on_a_server_that_returns_one_choice(engine_factory):
    srv = engine_factory("llama-cpp-python", texts=["alpha", "beta", "gamma"], ignore_n=True)
    backend = OpenAIBackend(srv.url, heal=False)
    config = GenerationConfig(max_new_tokens=8, temperature=0.8, n=3, seed=7)
    result = backend.complete("x = ", "", config)
    assert len(result.candidates) == 3 and len({c.text for c in result.candidates}) == 3
    assert [b["n"] for b in completions(srv)] == [3, 1, 1] and [b["seed"] for b in completions(srv)[1:]] == [8, 9]
    assert len(backend.pending_warnings) == 1 and "returned 1 of n=3 choices" in backend.pending_warnings[0]
    backend.complete("y = ", "", config)  # known now: n requests straight away, no second warning
    assert [b["n"] for b in completions(srv)[3:]] == [1, 1, 1] and len(backend.pending_warnings) == 1


# -- status and error reporting over LSP -----------------------------------------------------------


def test_status_and_errors_follow_the_endpoint_over_lsp():
    from pygls.exceptions import JsonRpcInternalError
    from pytest_lsp import make_test_lsp_client

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1"

    async def session():
        client = make_test_lsp_client()
        await client.start_io(
            sys.executable, "-m", "aigc_code.server", "serve", "--backend", "openai", "--endpoint", endpoint
        )
        await client.initialize_session(T.InitializeParams(capabilities=T.ClientCapabilities()))
        uri = "file:///w/a.py"
        client.text_document_did_open(
            T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, "def f(a):\n    \n"))
        )
        params = T.InlineCompletionParams(
            context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
            text_document=T.TextDocumentIdentifier(uri),
            position=T.Position(1, 4),
        )

        def reported():
            return sum("cannot reach" in m.message for m in client.log_messages)

        async def status():
            return await client.protocol.send_request_async("aigcCode/status", None)

        for _ in range(50):  # the backend loads in the worker
            if (await status()).backend not in ("loading", "not loaded"):
                break
            await asyncio.sleep(0.1)
        down = await status()
        assert down.ready is False and down.backend.startswith("error: cannot reach the completion endpoint")
        for _ in range(2):
            with pytest.raises(JsonRpcInternalError, match="cannot reach"):
                await client.text_document_inline_completion_async(params)
        assert reported() == 1  # once while it stays down

        srv = start_engine("openai", port=port, texts=["return a\n"])
        try:
            up = await status()
            assert up.ready is True and up.backend.startswith("openai-compatible endpoint")
            result = await client.text_document_inline_completion_async(params)
            assert [i.insert_text for i in result.items] == ["return a"]
            assert any("answers again" in m.message for m in client.log_messages)
        finally:
            srv.shutdown()
            srv.server_close()
        client.text_document_did_change(
            T.DidChangeTextDocumentParams(
                T.VersionedTextDocumentIdentifier(version=2, uri=uri),
                [T.TextDocumentContentChangeWholeDocument(text="def g(b):\n    \n")],
            )
        )
        with pytest.raises(JsonRpcInternalError, match="cannot reach"):
            await client.text_document_inline_completion_async(params)
        assert reported() == 2 and (await status()).ready is False  # the second outage is reported too
        await client.shutdown_session()
        await client.stop()

    asyncio.run(asyncio.wait_for(session(), 90))


def test_server_is_asked_again_after_it_was_down():
    port = free_port()
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", fim_format="starcoder")
    with pytest.raises(BackendError, match="cannot reach"):
        backend.complete("def f():\n    ", "", GREEDY)
    assert backend.info is None  # nothing learnt from a dead endpoint
    srv = start_engine("llama-cpp-python", port=port, texts=["\n    pass\n"])
    try:
        assert backend.complete("def f():\n    ", "", GREEDY).text == "pass\n"
        assert backend.info.flavour == "llama-cpp-python" and "grammar" in completions(srv)[-1]
    finally:
        srv.shutdown()
        srv.server_close()


# -- prompts over the server's context --------------------------------------------------------

DENSE = "\tif (a) {\n\t\tb();\n\t}\n" * 30  # ~1.25 characters a token by the stub's tokenizer (3.5 estimated)


@pytest.mark.parametrize("flavour", ["llama-cpp-python", "vllm"])
def test_a_prompt_over_the_context_is_cut_to_fit_and_the_estimate_learns(engine_factory, flavour):
    """The character estimate lets through a prompt the server counts as too long (llama-cpp-python:
    an empty stream, counted on its tokenize endpoint; vLLM: HTTP 400 with its count): it is sent
    once more, cut to fit with the text nearest the cursor kept, and the next prompt is budgeted
    by the server's ratio (one request)."""
    srv = engine_factory(flavour, n_ctx=300, texts=["x = 1"])
    backend = OpenAIBackend(srv.url, max_context=300, heal=False)
    assert backend.tokens.count_tokens(DENSE) + 16 < 300 < len(PIECE.findall(DENSE))
    result = backend.complete(DENSE + "\tc()", "\n}\n" + DENSE, GREEDY)
    first, second = completions(srv)
    assert result.text == "x = 1" and len(second["prompt"]) < len(first["prompt"])
    assert "\tc()<fim_suffix>\n}\n" in second["prompt"]  # the cursor's surroundings survive the cut
    assert backend.tokens.chars_per_token < 1.5 and "refused a prompt" in backend.pending_warnings[0]
    backend.complete(DENSE + "\tc()", "\n}\n" + DENSE, GREEDY)
    assert len(completions(srv)) == 3  # cut by the learned estimate before it was sent


def test_an_uncounted_refusal_still_teaches_the_estimate(engine_factory):
    """A server that refuses without a count and has no tokenize endpoint: the prompt was over what
    the context leaves beside the generation, at least; the estimate learns that much."""
    srv = engine_factory("openai", n_ctx=300, silent_overflow=True, texts=["x = 1"])
    backend = OpenAIBackend(srv.url, max_context=300, heal=False)
    prompt = (DENSE * 2)[-600:]
    assert backend.complete(prompt, "", GREEDY).text == "x = 1" and len(completions(srv)) == 2
    first = backend.tokens.chars_per_token
    assert first < 3.5
    assert backend.complete(prompt, "", GREEDY).text == "x = 1"  # cut by the estimate, refused, cut again
    assert backend.tokens.chars_per_token < first  # each refusal lowers the estimate further


def test_the_context_size_is_learned_from_the_refusal_when_not_known(engine_factory):
    srv = engine_factory("openai", n_ctx=300, texts=["x = 1"])
    backend = OpenAIBackend(srv.url, heal=False)
    assert backend.max_context is None
    assert backend.complete(DENSE * 3, "", GREEDY).text == "x = 1" and backend.max_context == 300


def test_a_prompt_that_cannot_fit_is_one_clear_error(engine_factory):
    srv = engine_factory("llama-cpp-python", n_ctx=40, texts=["x = 1"])
    backend = OpenAIBackend(srv.url, max_context=40, heal=False)
    with pytest.raises(BackendError, match="longer than the server's context"):
        backend.complete(DENSE, "", GenerationConfig(max_new_tokens=64))


def test_complete_command_through_a_remote_backend(engine_factory, tmp_path):
    """`aigc-code complete` takes serve's backend options: the same flag names everywhere."""
    import subprocess

    srv = engine_factory("vllm", texts=["b\n"])
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return a + \n")
    base = [sys.executable, "-m", "aigc_code", "complete", str(src), "--line", "2", "--column", "16"]
    remote = ["--backend", "openai", "--endpoint", srv.url, "--fim-format", "qwen", "--max-context", "1024"]
    done = subprocess.run([*base, *remote, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["completion"] == "b" and "openai-compatible endpoint" in out["backend"]
    assert completions(srv)[-1]["prompt"].startswith("<|fim_prefix|>")
    down = remote[:2] + ["--endpoint", f"http://127.0.0.1:{free_port()}/v1"]
    refused = subprocess.run([*base, *down], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: cannot reach the completion endpoint")
