"""Soak the real server: >= 10,000 mixed messages with rapid edits, cancellations and junk.

Checks: the process never dies, resident memory stays bounded (start/peak/end reported), every
request is answered, and no suggestion is stale — a non-empty answer to a request whose
document was edited well before the answer arrived (`stale_margin_ms`) counts as stale. Some
requests are followed by a pause (the user waits), so that non-empty answers occur too.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from aigc_code.bench.lspclient import RawClient, frame, rss_mb, server_cmd

DOCS = {
    "file:///soak/app.py": ("python", "import os\n\n\ndef main():\n    path = os.getcwd()\n    \n    return path\n"),
    "file:///soak/app.js": ("javascript", "const fs = require('fs');\n\nfunction main() {\n  \n}\n"),
    "file:///soak/main.go": ("go", 'package main\n\nimport "fmt"\n\nfunc main() {\n\t\n}\n'),
}
ALPHABET = "abcdefghijklmnopqrstuvwxyz_ ().:=\n    "


def _position(text: str, rng: random.Random) -> tuple[int, dict]:
    index = rng.randrange(len(text) + 1)
    line = text.count("\n", 0, index)
    character = index - (text.rfind("\n", 0, index) + 1)
    return index, {"line": line, "character": character}


def _random_change(text: str, rng: random.Random) -> tuple[str, dict]:
    """A keystroke: mostly one inserted character, sometimes 1-3 deleted ones."""
    index, pos = _position(text, rng)
    if rng.random() < 0.8 or index == len(text):
        insert = rng.choice(ALPHABET)
        return text[:index] + insert + text[index:], {"range": {"start": pos, "end": pos}, "text": insert}
    end = min(len(text), index + rng.randint(1, 3))
    end_pos = {"line": text.count("\n", 0, end), "character": end - (text.rfind("\n", 0, end) + 1)}
    return text[:index] + text[end:], {"range": {"start": pos, "end": end_pos}, "text": ""}


def _collect(client, outstanding: dict, last_edit: dict, counts: dict, stale_margin_ms: float) -> None:
    """Read the answers that arrived; count errors, suggestions and stale ones."""
    now = time.time()
    for msg in client.drain():
        msg_id = msg.get("id")
        if msg_id not in outstanding or "method" in msg:
            continue
        req = outstanding.pop(msg_id)
        counts["answered"] += 1
        if "error" in msg:
            counts["errors"] += 1
            counts["content_modified_or_cancelled"] += msg["error"]["code"] in (-32800, -32801)
            continue
        result = msg.get("result") or {}
        items = result.get("items", []) if isinstance(result, dict) else result
        if items:
            counts["non_empty"] += 1
            edited = last_edit.get(req["uri"], 0)
            if edited > req["sent"] and (now - edited) * 1000 > stale_margin_ms:
                counts["stale"] += 1


def _request(
    client, rng: random.Random, uri: str, text: str, outstanding: dict, counts: dict, pause_rate: float, collect
) -> None:
    """An inline (85%) or plain completion request at a random position; sometimes wait for it."""
    _, pos = _position(text, rng)
    method = "textDocument/inlineCompletion" if rng.random() < 0.85 else "textDocument/completion"
    msg_id = next(client.ids)
    outstanding[msg_id] = {"uri": uri, "sent": time.time()}
    params = {"textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": 2}}
    client.send(frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})))
    counts["requests"] += 1
    if rng.random() < pause_rate:  # the user stops typing and waits for the suggestion
        counts["pauses"] += 1
        deadline = time.time() + 30
        while msg_id in outstanding and time.time() < deadline and client.alive():
            time.sleep(0.002)
            collect()


FIRST_REQUEST = {
    "textDocument": {"uri": next(iter(DOCS))},
    "position": {"line": 0, "character": 0},
    "context": {"triggerKind": 1},
}


def _start_session(model: str | None, tiny: bool):
    """The server, initialized, with every document open and the model loaded (one request answered)."""
    if tiny:
        from aigc_code.testing import make_tiny_model

        model = str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    from aigc_code.loading import resolve_model_path

    client = RawClient(server_cmd(model or resolve_model_path(None)))
    init = {
        "processId": None,
        "rootUri": None,
        "capabilities": {},
        "initializationOptions": {"aigcCode": {"maxNewTokens": 16}},
    }
    client.request("initialize", init, timeout=300)
    client.notify("initialized", {})
    texts, versions = {}, {}
    for uri, (lang, text) in DOCS.items():
        texts[uri], versions[uri] = text, 1
        item = {"uri": uri, "languageId": lang, "version": 1, "text": text}
        client.notify("textDocument/didOpen", {"textDocument": item})
    client.request("textDocument/inlineCompletion", FIRST_REQUEST, timeout=300)
    return client, texts, versions


def soak(
    model: str | None = None,
    messages: int = 10_000,
    seed: int = 0,
    stale_margin_ms: float = 100.0,
    max_outstanding: int = 16,
    tiny: bool = False,
    pause_rate: float = 0.05,
) -> dict:
    """`model=None` soaks with the embedded default model; `tiny=True` with a random tiny model."""
    rng = random.Random(seed)
    client, texts, versions = _start_session(model, tiny)
    pid = client.proc.pid
    rss_start = rss_peak = rss_mb(pid)
    outstanding: dict[int, dict] = {}  # id -> {uri, sent}
    last_edit: dict[str, float] = {}
    counts = {
        "sent": 0,
        "edits": 0,
        "requests": 0,
        "cancels": 0,
        "junk": 0,
        "config": 0,
        "reopen": 0,
        "pauses": 0,
        "answered": 0,
        "errors": 0,
        "non_empty": 0,
        "stale": 0,
        "content_modified_or_cancelled": 0,
    }
    start = time.time()

    def collect() -> None:
        _collect(client, outstanding, last_edit, counts, stale_margin_ms)

    while counts["sent"] < messages:
        collect()
        if not client.alive():
            break
        uri = rng.choice(list(DOCS))
        roll = rng.random()
        if roll < 0.5:
            texts[uri], change = _random_change(texts[uri], rng)
            versions[uri] += 1
            client.notify(
                "textDocument/didChange",
                {"textDocument": {"uri": uri, "version": versions[uri]}, "contentChanges": [change]},
            )
            last_edit[uri] = time.time()
            counts["edits"] += 1
        elif roll < 0.8:
            if len(outstanding) >= max_outstanding:
                time.sleep(0.005)
                continue
            _request(client, rng, uri, texts[uri], outstanding, counts, pause_rate, collect)
        elif roll < 0.9:
            if outstanding:
                client.notify("$/cancelRequest", {"id": rng.choice(list(outstanding))})
                counts["cancels"] += 1
            else:
                continue
        elif roll < 0.95:
            junk = rng.choice(
                [
                    b"{not json",
                    b"[]",
                    b'{"jsonrpc":"2.0","id":{},"method":"x"}',
                    b'{"jsonrpc":"2.0","id":1.5e300,"method":"textDocument/inlineCompletion","params":7}',
                ]
            )
            client.send(frame(junk))
            counts["junk"] += 1
        elif roll < 0.98:
            client.notify(
                "workspace/didChangeConfiguration",
                {"settings": {"aigcCode": {"maxNewTokens": rng.choice([4, 8, 16]), "n": rng.choice([1, 2])}}},
            )
            counts["config"] += 1
        else:
            lang = DOCS[uri][0]
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            versions[uri] += 1
            client.notify(
                "textDocument/didOpen",
                {"textDocument": {"uri": uri, "languageId": lang, "version": versions[uri], "text": texts[uri]}},
            )
            last_edit[uri] = time.time()
            counts["reopen"] += 1
        counts["sent"] += 1
        if counts["sent"] % 500 == 0:
            rss_peak = max(rss_peak, rss_mb(pid))
    deadline = time.time() + 120
    while outstanding and time.time() < deadline and client.alive():
        collect()
        time.sleep(0.02)
    alive = client.alive()
    rss_end = rss_mb(pid) if alive else float("nan")
    rss_peak = max(rss_peak, rss_end) if alive else rss_peak
    final_ok = alive and "result" in client.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": next(iter(DOCS))},
            "position": {"line": 0, "character": 0},
            "context": {"triggerKind": 1},
        },
        timeout=120,
    )
    client.close()
    return {
        **counts,
        "unanswered": len(outstanding),
        "crashed": not alive,
        "final_request_ok": final_ok,
        "seconds": round(time.time() - start, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "rss_end_mb": round(rss_end, 1),
        "ok": alive and final_ok and not outstanding and counts["stale"] == 0,
    }
