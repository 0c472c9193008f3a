"""``DIR/samples.jsonl``: an append-only log of every generation and execution result.

Each record is one JSON line, written with flush + fsync as soon as it is known:

  {"kind": "generation", "language", "task_id", "sample", "completion", ...}
  {"kind": "execution",  "language", "task_id", "sample", "status", "passed", ...}

A run killed at any moment loses at most the line being written. On open, a torn last line
(no trailing newline) is cut off, so the file again ends on a record boundary; records are
keyed by (language, task_id, sample) and the first record of a kind for a key wins, so a
resumed run neither loses nor duplicates work. The one exception: an execution that was
``skipped`` (toolchain missing) or hit a sandbox ``error`` is retried by a later run, and a
later verdict for the key replaces it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

Key = tuple[str, str, int]
RETRYABLE = ("skipped", "error")  # execution statuses a later run tries again


def _put(target: dict, rec: dict) -> None:
    key = key_of(rec)
    old = target.get(key)
    if old is None or (
        rec["kind"] == "execution" and old.get("status") in RETRYABLE and rec.get("status") not in RETRYABLE
    ):
        target[key] = rec


def key_of(rec: dict) -> Key:
    return rec["language"], rec["task_id"], int(rec["sample"])


def read_records(path: Path) -> tuple[dict[Key, dict], dict[Key, dict], int]:
    """(generations, executions, number of unreadable lines) -- read-only, tolerates a torn tail."""
    gens: dict[Key, dict] = {}
    execs: dict[Key, dict] = {}
    bad = 0
    if not path.exists():
        return gens, execs, 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                bad += 1  # torn last line
                continue
            try:
                rec = json.loads(raw)
                _put({"generation": gens, "execution": execs}[rec["kind"]], rec)
            except (ValueError, KeyError, TypeError):
                bad += 1
    return gens, execs, bad


class SampleStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired = self._cut_torn_tail()
        self.generations, self.executions, self.bad_lines = read_records(self.path)
        self._f = open(self.path, "ab")
        self._lock = threading.Lock()

    def _cut_torn_tail(self) -> bool:
        if not self.path.exists():
            return False
        with open(self.path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return False
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return False
            # find the last newline, reading backwards in blocks
            pos, keep = size, 0
            while pos > 0:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep = pos + i + 1
                    break
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return True

    def append(self, rec: dict) -> None:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            _put(self.generations if rec["kind"] == "generation" else self.executions, rec)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
