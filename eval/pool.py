"""The harness side of the sandbox: a pool of pre-started workers (see worker.py)."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from aigc_code.eval.toolchains import WORKER_ENV, default_cache_dir


class WorkerError(RuntimeError):
    pass


_PYTHON: str | None = None


def worker_python() -> str:
    """The interpreter that runs the workers (and so the Python programs): $AIGC_EVAL_PYTHON, else,
    as root, the system python3 when its standard library is world-readable (the sandbox uid
    imports from it), else this interpreter."""
    global _PYTHON
    if _PYTHON:
        return _PYTHON
    choice = os.environ.get("AIGC_EVAL_PYTHON") or sys.executable
    if not os.environ.get("AIGC_EVAL_PYTHON") and os.getuid() == 0 and not _world_readable(os.__file__):
        for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(cand, os.X_OK):
                probe = subprocess.run(
                    [cand, "-I", "-c", "import os,sys; print(sys.version_info >= (3, 9)); print(os.__file__)"],
                    capture_output=True,
                    text=True,
                    env=dict(WORKER_ENV),
                )
                lines = probe.stdout.split()
                if probe.returncode == 0 and lines[:1] == ["True"] and _world_readable(lines[1]):
                    choice = cand
                    break
    _PYTHON = choice
    return choice


def _world_readable(path: str) -> bool:
    """Can any user read ``path`` (every directory above it searchable, the file readable)?"""
    p = Path(path).resolve()
    if not p.exists() or not p.stat().st_mode & 0o004:
        return False
    return all(d.stat().st_mode & 0o001 for d in p.parents)


class _Worker:
    def __init__(self, cache_dir: Path):
        script = str(Path(__file__).with_name("worker.py"))
        argv = [worker_python(), "-I", script, "--cache-dir", str(cache_dir)]
        if os.environ.get("AIGC_SANDBOX_UID_BASE"):
            argv += ["--uid-base", os.environ["AIGC_SANDBOX_UID_BASE"]]
        if os.environ.get("AIGC_SANDBOX_NAMESPACES") == "0":
            argv += ["--namespaces", "0"]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(WORKER_ENV),  # nothing of the harness's environment (secrets) passes on
            close_fds=True,
        )
        hello = self.proc.stdout.readline()
        if not hello:
            self.proc.wait()
            raise WorkerError(f"sandbox worker failed to start (exit {self.proc.returncode})")
        self.info = json.loads(hello)

    def call(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError("sandbox worker died")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WorkerPool:
    """``workers`` sandbox workers; ``submit(job)`` returns a Future of the worker's result."""

    def __init__(self, workers: int = 2, cache_dir: Path | None = None):
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.isolation: dict | None = None
        # Start the first worker now: fail early and learn what isolation we get.
        first = _Worker(self.cache_dir)
        self.isolation = first.info["isolation"]
        self._threads = [
            threading.Thread(
                target=self._loop, args=(first if i == 0 else None,), daemon=True, name=f"sandbox-worker-{i}"
            )
            for i in range(max(1, workers))
        ]
        self._workers.append(first)
        for t in self._threads:
            t.start()

    def _loop(self, worker: _Worker | None) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            job, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if worker is None:
                    worker = _Worker(self.cache_dir)
                    with self._lock:
                        self._workers.append(worker)
                fut.set_result(worker.call(job))
            except Exception as e:  # noqa: BLE001
                if worker is not None and worker.proc.poll() is not None:
                    worker = None  # restart on next job
                fut.set_exception(e)
        if worker is not None:
            worker.close()

    def worker_infos(self) -> list[dict]:
        """The hello message of every worker started so far (pid, isolation)."""
        with self._lock:
            return [w.info for w in self._workers]

    def submit(self, job: dict) -> concurrent.futures.Future:
        job = dict(job, id=next(self._ids))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((job, fut))
        return fut

    def close(self, abort: bool = False) -> None:
        """Stop the workers. ``abort``: cancel queued jobs and kill the workers now (Ctrl-C);
        their running programs die with them (parent-death signal)."""
        if abort:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[1].cancel()
            with self._lock:
                for w in self._workers:
                    if w.proc.poll() is None:
                        w.proc.kill()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=2 if abort else 60)
        with self._lock:
            for w in self._workers:
                if w.proc.poll() is None:
                    w.proc.kill()
                w.proc.wait()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)
