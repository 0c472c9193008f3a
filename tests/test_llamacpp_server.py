"""Against a real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`) serving the
shipped model exported to GGUF by `aigc_code.gguf.export_gguf`:

- through the LSP (a real pytest-lsp client), greedy suggestions from `serve --backend openai`
  equal those of `serve` with the local engine on the same weights (Python, JS, Go; at an
  indentation, where token healing matters, and after code on a line);
- n > 1 (the server returns one choice), a prompt longer than `--n_ctx` (HTTP 200, empty stream)
  and usage-less streams, on the real server.

Skipped, with the reason, where llama-cpp-python is not installed (CI does not build it) or
llama.cpp's `convert_hf_to_gguf.py` cannot be found (see aigc_code/gguf.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from importlib.util import find_spec

import pytest
from lspkit import free_port
from lsprotocol import types as T

from aigc_code.errors import BackendError
from aigc_code.generation import GenerationConfig
from aigc_code.loading import DEFAULT_MODEL_DIR

if find_spec("llama_cpp") is None:
    pytest.skip(
        "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]==0.3.36' "
        "(compiles llama.cpp, ~30 min on 2 cores)",
        allow_module_level=True,
    )
_missing = [
    m for m in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings") if find_spec(m) is None
]
if _missing:
    pytest.skip(
        f"llama-cpp-python's server extra is not installed (no {', '.join(_missing)}): "
        "pip install 'llama-cpp-python[server]==0.3.36'",
        allow_module_level=True,
    )

N_CTX = 512

# (language id, extension, text, cursor (line, character))
PROBES = [
    (
        "python",
        "py",
        "import os\n\n\ndef list_files(path):\n    names = []\n    for name in os.listdir(path):\n        \n"
        "    return names\n",
        (6, 8),
    ),
    (
        "python",
        "py",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        \n",
        (5, 8),
    ),
    ("python", "py", "def add(a, b):\n    return a +\n", (1, 14)),
    # one line at the start of an indented line: the healed "\n    " holds the stop "\n"
    (
        "python",
        "py",
        'import os\n\n\ndef mode(path):\n    """Return the mode of the file at path.\n\n    The mode is\n    \n'
        '    """\n    return os.stat(path).st_mode\n',
        (7, 4),
    ),
    ("javascript", "js", "function sum(xs) {\n  let total = 0;\n  \n}\n", (2, 2)),
    ("go", "go", 'package main\n\nimport "fmt"\n\nfunc main() {\n\tname := "world"\n\t\n}\n', (6, 1)),
]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from aigc_code.gguf import GGUFError, export_gguf, find_converter

    try:
        find_converter()
    except GGUFError as exc:
        pytest.skip(str(exc))
    return export_gguf(DEFAULT_MODEL_DIR, tmp_path_factory.mktemp("gguf") / "default.gguf", dtype="f32")


@pytest.fixture(scope="module")
def llama_server(gguf_file, tmp_path_factory):
    import httpx

    port = free_port()
    # a file, not a pipe: the server prints a traceback for every refused prompt, and a pipe nobody
    # reads fills up and stops the server
    log = tmp_path_factory.mktemp("llama-server") / "stderr.log"
    stderr = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        stderr.close()


async def suggestions(args: list[str], options: dict, env: dict | None = None) -> list[list[str]]:
    from pytest_lsp import make_test_lsp_client

    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "aigc_code.server", "serve", *args, env=env)
    await client.initialize_session(
        T.InitializeParams(capabilities=T.ClientCapabilities(), initialization_options={"aigcCode": options})
    )
    out = []
    try:
        for i, (language, ext, text, (line, character)) in enumerate(PROBES):
            uri = f"file:///project/probe{i}.{ext}"
            client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, language, 1, text)))
            result = await client.text_document_inline_completion_async(
                T.InlineCompletionParams(
                    context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
                    text_document=T.TextDocumentIdentifier(uri),
                    position=T.Position(line, character),
                )
            )
            out.append([item.insert_text for item in (result.items if result else [])])
            client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    finally:
        await client.shutdown_session()
        await client.stop()
    return out


def test_llamacpp_greedy_suggestions_equal_the_local_engines_over_lsp(llama_server):
    options = {"maxNewTokens": 32, "temperature": 0, "workspaceIndex": False}
    env = {**os.environ, "AIGC_CODE_MAX_CONTEXT": str(N_CTX)}

    async def both():
        local = await suggestions(["--model", str(DEFAULT_MODEL_DIR)], options)
        remote = await suggestions(
            ["--backend", "openai", "--endpoint", llama_server], {**options, "fimFormat": "auto"}, env
        )
        return local, remote

    local, remote = asyncio.run(asyncio.wait_for(both(), 240))
    assert remote == local
    assert sum(bool(s and s[0].strip()) for s in local) >= 3, local  # real suggestions, not all empty


def test_llamacpp_n_context_and_usage(llama_server):
    from aigc_code.remote import OpenAIBackend

    backend = OpenAIBackend(llama_server, fim_format="auto")
    result = backend.complete(
        "def add(a, b):\n    ", "\n", GenerationConfig(max_new_tokens=8, temperature=0.9, n=2, seed=1)
    )
    assert len(result.candidates) == 2 and "returned 1 of n=2" in backend.pending_warnings[0]
    assert result.prompt_tokens > 0 and 0 < result.generated_tokens <= 16  # no usage in its stream: counted here
    assert backend.info.flavour == "llama-cpp-python" and backend.fim_format == "starcoder-spm"
    with pytest.raises(BackendError, match="longer than the server's context"):
        backend.complete("x = 1\n" * 600, "", GenerationConfig(max_new_tokens=8))


def test_llamacpp_dense_code_over_the_context_is_cut_to_fit(llama_server):
    """Go with tabs tokenizes at ~2.4 characters a token, the estimate at 3.5: the real server
    refuses the prompt (an empty stream, then it drops the kept-alive connection); the backend
    counts it on the server, cuts it to fit, completes, and budgets the next prompt by that count."""
    from aigc_code.remote import OpenAIBackend

    body = '\tif err := run(ctx, cfg); err != nil {\n\t\tt.Fatalf("run: %s", err.Error())\n\t}\n'
    prefix = "func TestRun(t *testing.T) {\n" + body * 16 + "\t"  # 541 tokens, estimated 361
    backend = OpenAIBackend(llama_server, fim_format="auto", max_context=N_CTX)
    assert backend.tokens.count_tokens(prefix) + 64 < N_CTX  # the estimate says it fits
    result = backend.complete(prefix, "\n}\n", GenerationConfig(max_new_tokens=64))
    assert result.candidates and backend.tokens.chars_per_token < 3.0
    assert any("refused a prompt" in w for w in backend.pending_warnings)
    backend.pending_warnings.clear()
    backend.complete(prefix, "\n}\n", GenerationConfig(max_new_tokens=64))
    assert not backend.pending_warnings  # cut before it was sent
