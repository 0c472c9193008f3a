"""LSP latency benchmark: replay a scripted typing session over real files through the real
server over stdio, and report inline-completion latency next to the model's own time.

For each file the "user" opens it cut halfway, then types the rest of the next lines one
character at a time (incremental didChange, KEYSTROKE_S apart). At word boundaries the client asks for an inline
completion and waits for the answer; when the suggestion agrees with what the user goes on to
type, the user accepts the agreeing part in one edit (as an editor's Tab does), so the cache
path is exercised as it is in real use.

Reported: p50/p95 of the latency of every inline completion, of those that ran the model, the
model's own time (`aigcCode/lastTiming`: backend wall time), and the server
overhead = (latency - model time) / latency, and the same difference as a share of model time.
Latency is measured on the wire, from the request's bytes being written to the answer's last byte
being read (`JsonRpcClient.timed_request`); the latency after this client's own JSON decoding is
printed beside it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aigc_code.bench.lspclient import frame, read_frames
from aigc_code.languages import language_for_path

BOUNDARY = set(" \t\n.(,:=[{")
# seconds between typed characters: a very fast typist (~100 words a minute is ~0.1 s a character).
# The request still follows its keystroke's didChange at once, as an editor sends them.
KEYSTROKE_S = 0.03
REPLY_TIMEOUT_S = 120.0  # a request unanswered this long ends the benchmark with an error, not a hang


def default_files() -> list[Path]:
    """A few real files: from the Python standard library and from this repository."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    package = Path(__file__).resolve().parent.parent
    candidates = [
        stdlib / "textwrap.py",
        stdlib / "json" / "decoder.py",
        stdlib / "heapq.py",
        package / "pipeline.py",
        package / "prompt.py",
        package / "cache.py",
    ]
    return [p for p in candidates if p.is_file()]


@dataclass
class Sample:
    file: str
    latency_ms: float
    model_ms: float
    server_ms: float
    cache_hit: bool
    mode: str
    suggestions: int
    client_ms: float = 0.0  # latency_ms plus this client's own decoding of the answer
    answered_ms: float = 0.0  # request written -> the server's response written (its stamp, one clock); 0: none


@dataclass
class BenchResult:
    samples: list[Sample] = field(default_factory=list)
    accepted_chars: int = 0
    typed_chars: int = 0
    startup_s: float = 0.0

    def add(self, other: BenchResult) -> None:
        """Pool another run's requests into this one (startup: the slowest run's)."""
        self.samples += other.samples
        self.accepted_chars += other.accepted_chars
        self.typed_chars += other.typed_chars
        self.startup_s = max(self.startup_s, other.startup_s)

    def summary(self) -> dict:
        model_runs = [s for s in self.samples if s.model_ms > 0]
        lat = [s.latency_ms for s in self.samples]
        lat_model = [s.latency_ms for s in model_runs]
        model = [s.model_ms for s in model_runs]
        overhead = [(s.latency_ms - s.model_ms) / s.latency_ms for s in model_runs if s.latency_ms > 0]
        over_model = [(s.latency_ms - s.model_ms) / s.model_ms for s in model_runs]
        in_server = [s.server_ms - s.model_ms for s in model_runs]  # handler + pipeline, without the model
        transport = [s.latency_ms - s.server_ms for s in model_runs]  # JSON-RPC both ways, both sides
        total_lat = sum(lat_model)
        return {
            "requests": len(self.samples),
            "model_requests": len(model_runs),
            "cache_hits": sum(s.cache_hit for s in self.samples),
            "no_completion": sum(s.mode == "none" for s in self.samples),
            "latency_p50_ms": _pct(lat, 0.5),
            "latency_p95_ms": _pct(lat, 0.95),
            "model_latency_p50_ms": _pct(lat_model, 0.5),
            "model_latency_p95_ms": _pct(lat_model, 0.95),
            "client_latency_p50_ms": _pct([s.client_ms for s in model_runs], 0.5),
            "model_time_p50_ms": _pct(model, 0.5),
            "model_time_p95_ms": _pct(model, 0.95),
            "server_non_model_p50_ms": _pct(in_server, 0.5),
            "transport_p50_ms": _pct(transport, 0.5),
            "overhead_ratio_p50": _median(overhead),
            "overhead_ratio_total": (total_lat - sum(model)) / total_lat if total_lat else 0.0,
            "overhead_vs_model_p50": _median(over_model),
            **_server_side(model_runs),
            "accepted_chars": self.accepted_chars,
            "typed_chars": self.typed_chars,
            "startup_s": self.startup_s,
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _server_side(model_runs: list[Sample]) -> dict:
    """The server's side of the pipe: request written -> its answer written (the server's stamp),
    which leaves out this client's own wake-up to read the answer."""
    stamped = [s for s in model_runs if s.answered_ms > 0]
    return {
        "answered_p50_ms": _pct([s.answered_ms for s in stamped], 0.5),
        "client_wake_p50_ms": _pct([s.latency_ms - s.answered_ms for s in stamped], 0.5),
        "server_overhead_vs_model_p50": _median([(s.answered_ms - s.model_ms) / s.model_ms for s in stamped]),
        "server_stamped": len(stamped),
    }


class JsonRpcClient:
    """A lean LSP client over a subprocess's stdio: plain dicts and `json`, as an editor's client
    costs (a few tens of microseconds a message). pygls' client converts every message through
    its schema classes, ~1 ms a round trip in Python, which is the client's cost, not the server's.

    A reader thread waits in `os.read` on the server's stdout and stamps each answer the moment
    its last byte is read; `timed_request` measures on the wire, from the request's bytes being
    written to the answer's bytes being read, as a network latency is measured. What this client
    does after that (wake its event loop, decode the JSON: ~0.2 ms in a cold Python) is its own time."""

    def __init__(self, proc: subprocess.Popen, loop: asyncio.AbstractEventLoop):
        self.proc, self.loop = proc, loop
        self.ids = 0
        self.pending: dict[int, asyncio.Future] = {}
        threading.Thread(target=self._read, name="bench-lsp-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            for body, arrived in read_frames(self.proc.stdout.fileno()):
                self.loop.call_soon_threadsafe(self._deliver, body, arrived)
            self.loop.call_soon_threadsafe(self._close)
        except RuntimeError:  # the benchmark is over: its event loop is closed
            return

    def _close(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the server closed its output"))
        self.pending.clear()

    def _deliver(self, body: bytes, arrived: float) -> None:
        message = json.loads(body)
        if "method" in message and "id" in message:  # a request from the server: no client features
            self._write({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "id" in message and message["id"] in self.pending:
            future = self.pending.pop(message["id"])
            if not future.done():
                future.set_result((message, arrived))

    def _write(self, message: dict) -> float:
        """Write one message; returns the moment its bytes went out."""
        data = frame(json.dumps(message))
        sent = time.perf_counter()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return sent

    def notify(self, method: str, params) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def timed_request(self, method: str, params=None) -> tuple[object, float, float]:
        """The request's result, its latency on the wire in ms, and when its bytes went out
        (time.perf_counter(), s)."""
        self.ids += 1
        future = self.loop.create_future()
        self.pending[self.ids] = future
        sent = self._write({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params})
        try:
            reply, arrived = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{method}: no reply from the server in {REPLY_TIMEOUT_S:.0f} s") from None
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result"), (arrived - sent) * 1000, sent

    async def request(self, method: str, params=None):
        return (await self.timed_request(method, params))[0]


def _position(text: str, index: int) -> dict:
    line = text.count("\n", 0, index)
    start = text.rfind("\n", 0, index) + 1
    return {"line": line, "character": len(text[start:index].encode("utf-16-le")) // 2}


class _Session:
    def __init__(self, client: JsonRpcClient, result: BenchResult, keystroke_s: float = KEYSTROKE_S):
        self.client = client
        self.result = result
        self.version = 1
        self.keystroke_s = keystroke_s

    def insert(self, uri: str, text: str, index: int, new: str) -> str:
        pos = _position(text, index)
        self.version += 1
        self.client.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": self.version},
                "contentChanges": [{"range": {"start": pos, "end": pos}, "text": new}],
            },
        )
        return text[:index] + new + text[index:]

    async def complete(self, uri: str, name: str, text: str, index: int) -> str:
        params = {"context": {"triggerKind": 2}, "textDocument": {"uri": uri}, "position": _position(text, index)}
        start = time.perf_counter()
        answer, latency, sent = await self.client.timed_request("textDocument/inlineCompletion", params)
        client_ms = (time.perf_counter() - start) * 1000
        timing = await self.client.request("aigcCode/lastTiming") or {}
        items = (answer or {}).get("items", []) if isinstance(answer, dict) else answer or []
        answered = float(timing.get("answered_at_ms", 0.0)) - sent * 1000
        self.result.samples.append(
            Sample(
                name,
                latency,
                float(timing.get("model_ms", 0.0)),
                float(timing.get("total_ms", 0.0)),
                bool(timing.get("cache_hit", False)),
                str(timing.get("mode", "")),
                len(items),
                client_ms,
                answered if 0 < answered <= latency else 0.0,  # the server's clock is this machine's
            )
        )
        first = items[0]["insertText"] if items else ""
        return first if isinstance(first, str) else first.get("value", "")

    async def replay(self, path: Path, requests: int, type_chars: int) -> None:
        real = path.read_text(encoding="utf-8")
        language = language_for_path(path) or "plaintext"
        uri = path.resolve().as_uri()
        cut = real.find("\n", len(real) // 2) + 1
        end = real.find("\n", cut + type_chars) + 1 or len(real)
        # The lines to type are missing (an empty line stands in for them); the rest follows.
        text = real[:cut] + "\n" + real[end:]
        index = cut
        item = {"uri": uri, "languageId": language, "version": self.version, "text": text}
        self.client.notify("textDocument/didOpen", {"textDocument": item})
        made = 0
        pos = cut
        while pos < end and made < requests:
            if self.keystroke_s:  # a typist's pace between keystrokes; the request follows its keystroke at once
                await asyncio.sleep(self.keystroke_s)
            ch = real[pos]
            text = self.insert(uri, text, index, ch)
            index += 1
            pos += 1
            self.result.typed_chars += 1
            if ch not in BOUNDARY:
                continue
            suggestion = await self.complete(uri, path.name, text, index)
            made += 1
            upcoming = real[pos:end]
            agree = 0
            while agree < min(len(suggestion), len(upcoming)) and suggestion[agree] == upcoming[agree]:
                agree += 1
            if agree:
                text = self.insert(uri, text, index, upcoming[:agree])
                index += agree
                pos += agree
                self.result.accepted_chars += agree
        self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


async def _wait_ready(client: JsonRpcClient, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while True:
        backend = (await client.request("aigcCode/status") or {}).get("backend", "")
        if backend.startswith("error"):
            raise RuntimeError(f"the server could not load its backend: {backend}")
        if backend not in ("loading", "not loaded"):
            return
        if time.perf_counter() > deadline:
            raise RuntimeError("the server's backend did not become ready in time")
        await asyncio.sleep(0.1)


async def _run(
    files: list[Path], server_cmd: list[str], settings: dict, requests: int, type_chars: int, ready_timeout_s: float
) -> BenchResult:
    result = BenchResult()
    started = time.perf_counter()
    proc = subprocess.Popen(server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    client = JsonRpcClient(proc, asyncio.get_running_loop())
    try:
        await client.request("initialize", {"capabilities": {}, "initializationOptions": {"aigcCode": settings}})
        client.notify("initialized", {})
        await _wait_ready(client, ready_timeout_s)
        result.startup_s = time.perf_counter() - started
        session = _Session(client, result)
        await session.replay(files[0], 2, 40)  # warm-up, not counted
        result.samples.clear()
        result.accepted_chars = result.typed_chars = 0
        for path in files:
            await session.replay(path, requests, type_chars)
        await client.request("shutdown")
        client.notify("exit", None)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return result


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of the machine so far from /proc/stat (Linux), None elsewhere. Steal is
    time a virtual machine's CPUs were ready but the host ran something else: on a shared host the
    model and the server slow down together, and run-to-run differences follow it."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:9]]
    return (values[7] if len(values) > 7 else 0), sum(values)


def bench_lsp(
    files: list[str | Path] | None = None,
    model: str | None = None,
    backend: str = "local",
    endpoint: str | None = None,
    requests_per_file: int = 15,
    type_chars: int = 400,
    max_new_tokens: int = 32,
    context_tokens: int = 512,
    ready_timeout_s: float = 600.0,
    runs: int = 1,
    echo=print,
) -> dict:
    """Run the benchmark `runs` times (a fresh server each time) and return (and print, through
    `echo`) the summary over all requests, with each run's overhead ratio beside it."""
    paths = [Path(f) for f in files] if files else default_files()
    if not paths:
        raise ValueError("no files to replay")
    cmd = [sys.executable, "-m", "aigc_code.server", "serve", "--log-level", "WARNING", "--backend", backend]
    if model:
        cmd += ["--model", str(model)]
    if endpoint:
        cmd += ["--endpoint", endpoint]
    settings = {"maxNewTokens": max_new_tokens, "contextTokens": context_tokens, "temperature": 0.0}
    pooled, per_run, per_run_model, per_run_server = BenchResult(), [], [], []
    cpu_before = _cpu_jiffies()
    for _ in range(max(1, runs)):
        result = asyncio.run(_run(paths, cmd, settings, requests_per_file, type_chars, ready_timeout_s))
        run_summary = result.summary()
        per_run.append(run_summary["overhead_ratio_p50"])
        per_run_model.append(run_summary["overhead_vs_model_p50"])
        per_run_server.append(run_summary["server_overhead_vs_model_p50"])
        pooled.add(result)
    cpu_after = _cpu_jiffies()
    summary = pooled.summary()
    summary["runs"] = len(per_run)
    summary["overhead_ratio_p50_per_run"] = per_run
    summary["overhead_vs_model_p50_per_run"] = per_run_model
    summary["server_overhead_vs_model_p50_per_run"] = per_run_server
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        summary["cpu_steal_share"] = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    if echo is not None:
        echo(format_summary(summary, paths))
    return summary


def format_summary(s: dict, paths: list[Path]) -> str:
    return "\n".join(
        [
            f"files: {', '.join(p.name for p in paths)}",
            f"inline completions: {s['requests']} ({s['model_requests']} ran the model, {s['cache_hits']} from the cache, "
            f"{s['no_completion']} no-completion positions)",
            f"latency (wire, all):        p50 {s['latency_p50_ms']:8.1f} ms   p95 {s['latency_p95_ms']:8.1f} ms",
            f"latency (wire, model ran):  p50 {s['model_latency_p50_ms']:7.1f} ms   p95 {s['model_latency_p95_ms']:8.1f} ms"
            f"   (p50 {s['client_latency_p50_ms']:.1f} ms after this client decodes the answer)",
            f"model time (backend):       p50 {s['model_time_p50_ms']:8.1f} ms   p95 {s['model_time_p95_ms']:8.1f} ms",
            f"server overhead: {100 * s['overhead_ratio_p50']:.1f}% of latency (median), {100 * s['overhead_ratio_total']:.1f}% overall,"
            f" {100 * s['overhead_vs_model_p50']:.1f}% of model time (median)"
            f" (p50: {s['server_non_model_p50_ms']:.1f} ms in the server beside the model, "
            f"{s['transport_p50_ms']:.1f} ms JSON-RPC both ways)",
            *_server_side_lines(s),
            f"accepted {s['accepted_chars']} of {s['accepted_chars'] + s['typed_chars']} characters; server ready in {s['startup_s']:.1f} s",
            *_run_lines(s),
        ]
    )


def _server_side_lines(s: dict) -> list[str]:
    if not s.get("server_stamped"):
        return []
    return [
        f"on the server's side of the pipe (request written -> its answer written, {s['server_stamped']} stamped):"
        f" p50 {s['answered_p50_ms']:.1f} ms, overhead {100 * s['server_overhead_vs_model_p50']:.1f}% of model time"
        f" (median); this client woke {s['client_wake_p50_ms']:.2f} ms (p50) after the answer was written"
    ]


def _run_lines(s: dict) -> list[str]:
    lines = []
    if s.get("runs", 1) > 1:
        ratios = ", ".join(f"{100 * r:.1f}%" for r in s["overhead_ratio_p50_per_run"])
        of_model = ", ".join(f"{100 * r:.1f}%" for r in s["overhead_vs_model_p50_per_run"])
        server_side = ", ".join(f"{100 * r:.1f}%" for r in s["server_overhead_vs_model_p50_per_run"])
        lines.append(
            f"runs: {s['runs']} (a fresh server each); overhead at p50 per run: {ratios} of latency, {of_model} of model time;"
            f" on the server's side: {server_side} of model time"
        )
    if "cpu_steal_share" in s:
        lines.append(
            f"host CPU steal during the runs: {100 * s['cpu_steal_share']:.1f}% of the machine's CPU time"
            " (time this VM's CPUs waited for the host; it slows model and server alike)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """`python -m aigc_code.bench.lsp ...` is `aigc-code bench lsp ...`: one set of options."""
    from typer.main import get_command

    from aigc_code.bench.cli import app

    get_command(app).main(["lsp", *(sys.argv[1:] if argv is None else argv)], prog_name="aigc-code bench")


if __name__ == "__main__":
    main()
