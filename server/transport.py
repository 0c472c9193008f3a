"""JSON-RPC framing that survives hostile input (replaces pygls' reader loop).

pygls' own loop drops a message it cannot parse without answering, and trusts Content-Length
and line lengths. `FrameParser` (fed by the event loop as bytes arrive, `FramedPipe`, or by a
read loop, `run_framed`) and `dispatch`:
  * skips garbage lines and finds a `Content-Length:` header even inside a garbage line (resync);
  * caps header lines and bodies (a huge declared length is read and discarded in chunks);
  * answers what cannot be handled with the JSON-RPC error it deserves: -32700 parse error,
    -32600 invalid request (not an object, bad id/jsonrpc/method), -32602 invalid params
    (params that do not match the method's schema), -32603 for an internal failure —
    unknown methods get -32601 from pygls itself;
  * never lets one message end the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(-?\d+)", re.IGNORECASE)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
REQUEST_CANCELLED = -32800
log = logging.getLogger(__name__)


class LimitedStdinReader:
    """stdin read in the executor, for what the event loop cannot watch (a regular file, a terminal)."""

    def __init__(self, stdin, executor):
        self.stdin, self.executor = stdin, executor

    async def read(self, n: int) -> bytes:
        """What is there, up to `n` bytes (waits for at least one; b"" at EOF)."""
        read = getattr(self.stdin, "read1", self.stdin.read)
        return await asyncio.get_running_loop().run_in_executor(self.executor, read, n)


def _same_file(a, b) -> bool:
    try:
        x, y = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return True
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _pipe_of_its_own(stdin, stdout) -> bool:
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not _same_file(stdin, stdout)


async def serve_stdin(stop_event, stdin, stdout, executor, protocol) -> None:
    """Read LSP frames from stdin until EOF or `stop_event`. A pipe or socket of its own is read
    by the event loop itself (`FramedPipe`: a message is dispatched as its bytes arrive, with no
    thread hand-off; the executor reader costs three, ~0.1-0.3 ms each, on every keystroke). A
    regular file, a terminal, or stdin sharing stdout's file (non-blocking mode would leak into the
    writes) keep the executor reader."""
    if _pipe_of_its_own(stdin, stdout):
        loop = asyncio.get_running_loop()
        pipe = FramedPipe(stop_event, protocol)
        try:
            await loop.connect_read_pipe(lambda: pipe, stdin)
        except (OSError, ValueError):
            pass
        else:
            await pipe.closed
            return
    await run_framed(stop_event, LimitedStdinReader(stdin, executor), protocol)


def error_message(msg_id: Any, code: int, message: str) -> dict:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def send_error(protocol, msg_id: Any, code: int, message: str) -> None:
    protocol._send_data(error_message(msg_id, code, message))


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (int, str)) and not isinstance(value, bool))


def dispatch(protocol, body: bytes) -> None:
    """Validate one message body and hand it to pygls, answering anything it cannot take."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        send_error(protocol, None, PARSE_ERROR, f"Parse error: {str(exc)[:200]}")
        return
    if not isinstance(data, dict):
        send_error(protocol, None, INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
        return
    msg_id = data.get("id")
    if not _valid_id(msg_id):
        send_error(protocol, None, INVALID_REQUEST, "Invalid Request: id must be a string, number or null")
        return
    is_request = "id" in data and "method" in data
    if data.get("jsonrpc") != "2.0":
        send_error(protocol, msg_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
        return
    if "method" in data and not isinstance(data["method"], str):
        send_error(protocol, msg_id, INVALID_REQUEST, "Invalid Request: method must be a string")
        return
    if "method" not in data and "id" not in data:
        send_error(protocol, None, INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a response")
        return
    if "params" in data and not isinstance(data["params"], (dict, list)) and data["params"] is not None:
        if is_request:
            send_error(protocol, msg_id, INVALID_PARAMS, "Invalid params: params must be an object or array")
        return
    try:
        message = protocol.structure_message(data)
    except Exception as exc:
        if is_request:
            reason = "do not match the method's schema" if isinstance(exc, JsonRpcInvalidParams) else "cannot be read"
            send_error(protocol, msg_id, INVALID_PARAMS, f"Invalid params for {data['method']}: the params {reason}")
        else:
            log.warning("dropped a malformed %s notification", str(data.get("method"))[:80])
        return
    try:
        protocol.handle_message(message)
    except Exception as exc:  # a handler bug must not end the loop
        log.exception("failed to handle %s", str(data.get("method"))[:80])
        if is_request:
            send_error(protocol, msg_id, INTERNAL_ERROR, f"Internal error: {type(exc).__name__}")


@dataclass
class Oversized:
    """A message whose declared length is over MAX_BODY_BYTES: read and dropped."""

    length: int


class FrameParser:
    """LSP framing as a push parser: `feed` bytes as they come, get each message body (`bytes`)
    once it is complete, or an `Oversized` once a body over the limit has been dropped.

    Header lines are at most MAX_HEADER_LINE bytes (a longer one is dropped whole); lines that
    are not headers are skipped, and `Content-Length:` is found even inside one (resync); a blank
    line without a preceding Content-Length reads nothing."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.length: int | None = None  # Content-Length of the header being read
        self.want: int | None = None  # bytes of the body being read
        self.discard = 0  # bytes of an oversized body still to drop
        self.dropping = 0  # its declared length
        self.in_long_line = False  # dropping an over-long header line up to its end

    def feed(self, data: bytes) -> Iterator[bytes | Oversized]:
        self.buffer += data
        while True:
            if self.discard:
                k = min(self.discard, len(self.buffer))
                del self.buffer[:k]
                self.discard -= k
                if self.discard:
                    return
                yield Oversized(self.dropping)
            elif self.want is not None:
                if len(self.buffer) < self.want:
                    return
                with memoryview(self.buffer) as view:  # one copy of a big body, not two
                    body = bytes(view[: self.want])
                del self.buffer[: self.want]
                self.want = None
                yield body
            elif not self._header_line():
                return

    def _header_line(self) -> bool:
        """Consume one header line; False when no whole line is buffered yet."""
        nl = self.buffer.find(b"\n")
        if nl < 0:
            if len(self.buffer) > MAX_HEADER_LINE:
                del self.buffer[:]
                self.in_long_line, self.length = True, None
            return False
        line = bytes(self.buffer[: nl + 1])
        del self.buffer[: nl + 1]
        if self.in_long_line or len(line) > MAX_HEADER_LINE:
            self.in_long_line, self.length = False, None
        elif not line.strip():
            if self.length is not None:
                n, self.length = self.length, None
                if n > MAX_BODY_BYTES:
                    self.discard = self.dropping = n
                else:
                    self.want = n
        elif match := _CONTENT_LENGTH.search(line):
            value = int(match.group(1))
            self.length = value if value >= 0 else None
        return True


def _dispatch_frames(parser: FrameParser, data: bytes, stop_event, protocol) -> None:
    """Dispatch each message `data` completes, until `stop_event` (after `exit`, nothing more)."""
    for item in parser.feed(data):
        if stop_event.is_set():
            return
        if isinstance(item, Oversized):
            message = f"Invalid Request: message of {item.length} bytes is over the limit"
            send_error(protocol, None, INVALID_REQUEST, message)
        else:
            dispatch(protocol, item)


class FramedPipe(asyncio.Protocol):
    """stdin read by the event loop: each message is dispatched from `data_received`."""

    def __init__(self, stop_event, protocol) -> None:
        self.stop_event, self.protocol = stop_event, protocol
        self.parser = FrameParser()
        self.transport: asyncio.ReadTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        _dispatch_frames(self.parser, data, self.stop_event, self.protocol)
        if self.stop_event.is_set() and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def run_framed(stop_event, reader, protocol) -> None:
    """Read LSP frames from `reader` (anything with `async read(n)`: an asyncio stream, the
    executor reader) until EOF or `stop_event`, dispatching each body."""
    parser = FrameParser()
    while not stop_event.is_set():
        data = await reader.read(1 << 16)
        if not data:
            break
        _dispatch_frames(parser, data, stop_event, protocol)
