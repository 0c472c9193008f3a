"""JSON-RPC framing that survives hostile input (replaces pygls' reader loop).

pygls' own loop drops a message it cannot parse without answering, and trusts Content-Length
and line lengths. This loop:
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
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(-?\d+)", re.IGNORECASE)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
REQUEST_CANCELLED = -32800
log = logging.getLogger(__name__)


class LimitedStdinReader:
    """pygls' stdin reader, but a header line is at most MAX_HEADER_LINE bytes."""

    def __init__(self, stdin, executor):
        self.stdin, self.executor = stdin, executor

    async def readline(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stdin.readline, MAX_HEADER_LINE)

    async def readexactly(self, n: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stdin.read, n)


def _same_file(a, b) -> bool:
    try:
        x, y = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return True
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


async def stdin_reader(stdin, stdout, executor):
    """An asyncio stream over stdin when it is a pipe or socket of its own: a message costs no
    thread hand-off (the executor reader costs three, ~0.1-0.3 ms each, on every keystroke).
    A regular file, a terminal, or stdin sharing stdout's file (non-blocking mode would leak
    into the writes) keep the executor reader."""
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return LimitedStdinReader(stdin, executor)
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) or _same_file(stdin, stdout):
        return LimitedStdinReader(stdin, executor)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEADER_LINE, loop=loop)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), stdin)
    except (OSError, ValueError):
        return LimitedStdinReader(stdin, executor)
    return reader


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


async def _discard(reader, n: int) -> None:
    while n > 0:
        try:
            chunk = await reader.readexactly(min(n, 1 << 20))
        except asyncio.IncompleteReadError:
            return
        if not chunk:
            return
        n -= len(chunk)


async def run_framed(stop_event, reader, protocol) -> None:
    """Read LSP frames from `reader` until EOF or `stop_event`, dispatching each body."""
    length: int | None = None
    while not stop_event.is_set():
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):  # an over-long line on a StreamReader: skip it
            length = None
            continue
        if not line:
            break
        if not line.strip():
            if length is None:
                continue  # a blank line without a preceding Content-Length: nothing to read
            n, length = length, None
            if n > MAX_BODY_BYTES:
                await _discard(reader, n)
                send_error(protocol, None, INVALID_REQUEST, f"Invalid Request: message of {n} bytes is over the limit")
                continue
            try:
                body = await reader.readexactly(n)
            except asyncio.IncompleteReadError:
                break
            if len(body) < n:  # EOF inside a body
                break
            dispatch(protocol, body)
            continue
        match = _CONTENT_LENGTH.search(line)
        if match:
            value = int(match.group(1))
            length = value if value >= 0 else None
