"""A raw JSON-RPC/LSP client over a subprocess's stdio: sends bytes no real client would send.

Used by the fuzz tests and `aigc-code bench soak`.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from aigc_code.server.transport import FrameParser


def frame(body: bytes | str) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


def read_frames(fd: int) -> Iterator[tuple[bytes, float]]:
    """Message bodies from a server's stdout as they arrive, cut by the server's own framing
    (`FrameParser`), each with the moment its last byte was read; ends when the output does."""
    parser = FrameParser()
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            return
        if not data:
            return
        arrived = time.perf_counter()
        for body in parser.feed(data):
            if isinstance(body, bytes):
                yield body, arrived


class RawClient:
    def __init__(self, cmd: list[str], env=None, cwd=None):
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd
        )
        self.messages: queue.Queue = queue.Queue()
        self.ids = itertools.count(1000)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for body, _ in read_frames(self.proc.stdout.fileno()):
            self.messages.put(json.loads(body))
        self.messages.put(None)

    def send(self, data: bytes) -> None:
        with self.lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def notify(self, method: str, params) -> None:
        self.send(frame(json.dumps({"jsonrpc": "2.0", "method": method, "params": params})))

    def request(self, method: str, params, timeout: float = 30.0) -> dict:
        msg_id = next(self.ids)
        self.send(frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})))
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, timeout)

    def wait_for(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                msg = self.messages.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if msg is None:
                raise AssertionError("server closed its output (crashed?)")
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching message within {timeout} s")

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                msg = self.messages.get_nowait()
            except queue.Empty:
                return out
            if msg is not None:
                out.append(msg)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def server_cmd(model) -> list[str]:
    return [sys.executable, "-m", "aigc_code", "serve", "--model", str(model), "--log-level", "WARNING"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
