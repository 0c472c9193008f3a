"""LSP framing (server/transport.py; the LSP benchmark's client reads with it too): the push
parser on golden byte streams, in any chunking, and the real server reading its messages from a
regular file (the executor reader)."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from aigc_code.server.transport import MAX_BODY_BYTES, MAX_HEADER_LINE, FrameParser, Oversized

from aigc_code.bench.lspclient import frame, server_cmd

HELLO = b'{"jsonrpc": "2.0", "method": "hello"}'

GOLDEN = [
    ("one frame", frame(HELLO), [HELLO]),
    ("two frames", frame(b"{}") + frame(HELLO), [b"{}", HELLO]),
    ("extra headers", b"Content-Length: 2\r\nContent-Type: application/json\r\n\r\n{}", [b"{}"]),
    ("bare newlines", b"content-length:2\n\n{}", [b"{}"]),
    ("garbage line, then a frame", b"not a header\r\nX-Junk: 1\r\n\r\n" + frame(HELLO), [HELLO]),
    ("a header found inside a garbage line", b"junk Content-Length: 2 junk\r\n\r\n{}", [b"{}"]),
    ("blank line with no length reads nothing", b"\r\n\r\n" + frame(b"{}"), [b"{}"]),
    ("noise and a blank line before two frames", b"noise\r\n\r\n" + frame(b"{}") + frame(HELLO), [b"{}", HELLO]),
    ("negative length is no length", b"Content-Length: -5\r\n\r\n" + frame(b"{}"), [b"{}"]),
    ("empty body", b"Content-Length: 0\r\n\r\n" + frame(b"{}"), [b"", b"{}"]),
    ("body not complete yet", b"Content-Length: 10\r\n\r\n{}", []),
    (
        "over-long header line dropped whole",
        b"x" * (MAX_HEADER_LINE + 10) + b"Content-Length: 9\r\n" + frame(b"{}"),
        [b"{}"],
    ),
]


def feed_in_chunks(data: bytes, sizes) -> list:
    parser, out = FrameParser(), []
    i = 0
    while i < len(data):
        n = next(sizes)
        out += parser.feed(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("name,data,expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_streams_whole_and_byte_by_byte(name, data, expected):
    assert list(FrameParser().feed(data)) == expected
    assert feed_in_chunks(data, iter(lambda: 1, None)) == expected


def test_random_chunking_gives_the_same_messages():
    rng = random.Random(7)
    bodies = [
        json.dumps({"jsonrpc": "2.0", "id": i, "method": "m", "params": {"t": "é" * rng.randint(0, 300)}}).encode()
        for i in range(40)
    ]
    stream = b"".join((b"noise\r\n" if rng.random() < 0.2 else b"") + frame(b) for b in bodies)
    for _ in range(20):
        assert feed_in_chunks(stream, iter(lambda: rng.randint(1, 700), None)) == bodies


def test_an_oversized_body_is_dropped_as_it_arrives_and_reported_once():
    parser = FrameParser()
    declared = MAX_BODY_BYTES + 1
    out = list(parser.feed(b"Content-Length: %d\r\n\r\n" % declared))
    sent = 0
    chunk = b"x" * (1 << 20)
    while sent + len(chunk) < declared:
        out += parser.feed(chunk)
        sent += len(chunk)
        assert len(parser.buffer) <= len(chunk)  # nothing of it is kept
    out += parser.feed(b"x" * (declared - sent) + frame(b"{}"))
    assert out == [Oversized(declared), b"{}"]


def test_server_reads_messages_from_a_regular_file(tiny_model, tmp_path):
    """stdin that the event loop cannot watch (a file) goes through the executor reader."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "shutdown"},
        {"jsonrpc": "2.0", "method": "exit"},
    ]
    script = tmp_path / "session.lsp"
    script.write_bytes(b"".join(frame(json.dumps(m)) for m in messages))
    with script.open("rb") as stdin:
        proc = subprocess.run(server_cmd(tiny_model), stdin=stdin, capture_output=True, timeout=120)
    replies = [json.loads(b) for b in FrameParser().feed(proc.stdout)]
    answered = {r["id"]: r for r in replies if "id" in r}
    assert "capabilities" in answered[1]["result"] and answered[2]["result"] is None
    assert proc.returncode == 0
