"""Small helpers the LSP tests share: a free port, waiting for a TCP server, plain values."""

from __future__ import annotations

import asyncio
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def connect_tcp(client, port: int, attempts: int = 300) -> None:
    """Start `client` on 127.0.0.1:port once the server listens (it may still be loading)."""
    for _ in range(attempts):
        try:
            await client.start_tcp("127.0.0.1", port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listened on port {port}")


def plain(value):
    """pygls hands custom results back as namedtuples: turn them into dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
