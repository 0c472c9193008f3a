"""A small OpenAI-compatible ``/v1/completions`` server that answers HumanEval-X prompts with their
canonical solutions: the harness's own test double for vLLM / TGI / llama.cpp (threading
``http.server``, streaming SSE or plain JSON, a fixed latency per request).

It recognises a plain prompt (``setup + prompt``), a StarCoder FIM prompt of a left-to-right
problem, and a FIM prompt of an infilling task (prefix and suffix cut from a canonical program,
possibly after context lines the LSP pipeline put in front); anything else gets ``wrong``.
It records the most requests it had in flight at once.

Run ``python -m aigc_code.eval.stub_server --port 8011 --delay 0.2`` to measure the harness
against a server of known speed.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aigc_code.eval.problems import LANGUAGES, load_humaneval_x

from aigc_code.fim import DEFAULT_FIM


class StubState:
    def __init__(
        self, delay_s: float = 0.0, stream: bool = True, wrong: str = "    return None\n", languages=tuple(LANGUAGES)
    ):
        self.delay_s, self.stream, self.wrong = delay_s, stream, wrong
        self.programs = [
            (p.setup + p.prompt, p.canonical_solution or "") for lang in languages for p in load_humaneval_x(lang)
        ]
        self.by_stripped = {head.rstrip(): (head, sol) for head, sol in self.programs}
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.requests = 0

    def answer(self, prompt: str) -> str:
        head, sol = self.by_stripped.get(prompt.rstrip(), ("", ""))
        if head and (head + sol).startswith(prompt):  # the client may have taken trailing whitespace back (healing)
            return (head + sol)[len(prompt) :]
        if prompt.startswith(DEFAULT_FIM.prefix) and DEFAULT_FIM.middle in prompt:
            body = prompt[len(DEFAULT_FIM.prefix) :].rsplit(DEFAULT_FIM.middle, 1)[0]
            prefix, _, suffix = body.partition(DEFAULT_FIM.suffix)
            return self._middle(prefix, suffix)
        return self.wrong

    def _middle(self, prefix: str, suffix: str) -> str:
        for head, solution in self.programs:
            at = prefix.rfind(head.rstrip())  # the client may have healed the whitespace away
            if at < 0:
                continue
            rest = (head + solution)[len(prefix) - at :]
            if not (head + solution).startswith(prefix[at:]):
                continue
            tail = suffix.rstrip()  # the pipeline may end the document differently
            end = rest.find(tail) if tail else len(rest)
            if end >= 0:
                return rest[:end]
        return self.wrong


def make_handler(state: StubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path.rstrip("/").endswith("/v1/models"):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "stub-model"}]}).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # always: keep-alive framing
            if not self.path.rstrip("/").endswith("/v1/completions"):
                self._send(404, b'{"error": "not found"}')
                return
            payload = json.loads(raw or b"{}")
            with state.lock:
                state.in_flight += 1
                state.requests += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(state.delay_s)
                text = state.answer(str(payload.get("prompt", "")))
            finally:  # done before the answer leaves: the client may send its next request at once
                with state.lock:
                    state.in_flight -= 1
            if state.stream and payload.get("stream"):
                self._stream(text)
                return
            body = {
                "object": "text_completion",
                "model": payload.get("model"),
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": len(payload.get("prompt", "")) // 4,
                    "completion_tokens": max(1, len(text) // 4),
                },
            }
            self._send(200, json.dumps(body).encode())

        def _stream(self, text: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)] or [""]
            for k, piece in enumerate(pieces):
                choice = {"index": 0, "text": piece, "finish_reason": "stop" if k == len(pieces) - 1 else None}
                self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


class StubServer:
    """``with StubServer(delay_s=0.05) as s: s.url`` -- the server on a free port in a thread."""

    def __init__(self, port: int = 0, **kw):
        self.state = StubState(**kw)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each request takes")
    ap.add_argument("--no-stream", action="store_true", help="answer with one JSON body even when asked to stream")
    args = ap.parse_args(argv)
    server = StubServer(args.port, delay_s=args.delay, stream=not args.no_stream)
    print(f"stub OpenAI server on {server.url} (delay {args.delay:g} s)", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
