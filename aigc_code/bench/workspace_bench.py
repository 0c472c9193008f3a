"""Measure the workspace index on a real folder: build time and memory, query latency, copy quality.

`run(root)` builds a `WorkspaceIndex` over `root` and times copy-candidate lookups and chunk
retrieval at random cursor positions. `heldout(root)` measures copy candidates alone on held-out
code: it copies the folder's source files under a scratch directory, removes one line from each of N
files there, indexes the copy and counts how often the top candidate equals the removed line (cursor
after the line's indentation). Usage: `python -m aigc_code.bench.workspace_bench ROOT [--heldout N]`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aigc_code.workspace import IndexLimits, WorkspaceIndex


def _rss_kb(field: str = "VmRSS") -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cursor_positions(index: WorkspaceIndex, n: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(path, text, offset) at the indentation end of random non-blank lines of indexed files."""
    docs = list(index._docs.values())
    out = []
    for _ in range(n * 3):
        if len(out) >= n or not docs:
            break
        doc = rng.choice(docs)
        lines = doc.text.split("\n")
        number = rng.randrange(len(lines))
        line = lines[number]
        if not line.strip():
            continue
        offset = int(doc.line_starts[number]) + len(line) - len(line.lstrip())
        out.append((doc.path, doc.text, offset))
    return out


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None}
    arr = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p95_ms": round(float(np.percentile(arr, 95)), 3)}


def run(
    root: str | Path | list[str | Path], queries: int = 200, seed: int = 0, limits: IndexLimits = IndexLimits()
) -> dict:
    """Build the index over `root` (or several folders), then time `queries` copy lookups and retrievals at
    random cursor positions (after the indentation of random lines); prints and returns the numbers."""
    gc.collect()
    rss0, hwm0 = _rss_kb(), _rss_kb("VmHWM")
    index = WorkspaceIndex(root if isinstance(root, list) else [root], limits)
    cpu0 = time.process_time()
    report = index.build()
    build_cpu = time.process_time() - cpu0
    gc.collect()
    result = {
        "root": str(root),
        "build_seconds": report["seconds"],
        "build_cpu_seconds": round(build_cpu, 2),  # wall time above includes waiting for a busy CPU
        "files": report["files"],
        "bytes": report["bytes"],
        "skipped": report["skipped"],
        "rss_delta_mb": round((_rss_kb() - rss0) / 1024, 1),
        "peak_rss_delta_mb": round(max(0, _rss_kb("VmHWM") - max(hwm0, rss0)) / 1024, 1),
        "index_arrays_mb": round((index.stats()["line_index_bytes"] + index.stats()["block_index_bytes"]) / 2**20, 1),
    }
    positions = _cursor_positions(index, queries, random.Random(seed))
    times: dict[str, list[float]] = {"copy": [], "retrieve": [], "copy_cpu": [], "retrieve_cpu": []}
    for path, text, offset in positions:
        before, after = text[:offset], text[offset:]
        window = before[-1500:]
        for name, call in (
            ("copy", functools.partial(index.copy_candidates, path, before, after)),
            ("retrieve", functools.partial(index.retrieve, path, "", window, exclude=window)),
        ):
            w0, c0 = time.perf_counter(), time.thread_time()
            call()
            times[name].append(time.perf_counter() - w0)
            times[name + "_cpu"].append(time.thread_time() - c0)
    for name, values in times.items():
        result[name] = _percentiles(values)
    result["queries"] = len(positions)
    print(json.dumps(result, indent=2))
    return result


def _pick_line(lines: list[str], rng: random.Random) -> int | None:
    choices = [i for i, line in enumerate(lines) if len(line.strip()) >= 2 and i > 0]
    return rng.choice(choices) if choices else None


def _typed_prefix(line: str, rng: random.Random, midline: bool) -> str:
    """What is already typed of a held-out line: its indentation, or (midline) up to a random word end."""
    indent = line[: len(line) - len(line.lstrip())]
    if not midline:
        return indent
    ends = [m.end() for m in re.finditer(r"\w+\W*", line.rstrip()) if m.end() < len(line.rstrip())]
    return line[: rng.choice(ends)] if ends else indent


def _retrieval_hit(index: WorkspaceIndex, path: str, before: str, after: str, answer: str) -> bool:
    """Whether a chunk retrieved for the code above the cursor contains the held-out line (the prompt
    window, 30 lines above the cursor and the line below, excluded as the pipeline would)."""
    above = before.split("\n")
    query = "\n".join(above[-20:])
    window = "\n".join(above[-30:]) + "\n".join(after.split("\n")[:2])
    wanted = (above[-1] + answer).strip()
    chunks = index.retrieve(path, "", query, max_chunks=4, exclude=window)
    return any(wanted in (line.strip() for line in c.text.split("\n")) for c in chunks)


def heldout(root: str | Path, n: int = 200, seed: int = 0, scratch: str | None = None, midline: bool = False) -> dict:
    """Top-1 copy-candidate exact match on one removed line in each of `n` files of a copy of `root`
    (cursor after the line's indentation, or with `midline` after a random word of it)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="ws-heldout-") as tmp:
        copy_root = Path(tmp) / "repo"
        shutil.copytree(root, copy_root, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        probe = WorkspaceIndex([copy_root])
        probe.build()
        paths = sorted(probe._by_path)
        rng.shuffle(paths)
        cases = []
        for path in paths[:n]:
            text = Path(path).read_text(encoding="utf-8")
            lines = text.split("\n")
            number = _pick_line(lines, rng)
            if number is None:
                continue
            removed = lines[number]
            Path(path).write_text("\n".join(lines[:number] + lines[number + 1 :]), encoding="utf-8")
            typed = _typed_prefix(removed, rng, midline)
            before = "\n".join(lines[:number]) + "\n" + typed
            after = "\n" + "\n".join(lines[number + 1 :])
            cases.append((path, before, after, removed[len(typed) :].rstrip()))
        index = WorkspaceIndex([copy_root])
        index.build()
        hits = proposed = retrieved = 0
        for path, before, after, answer in cases:
            found = index.copy_candidates(path, before, after, max_candidates=1)
            proposed += bool(found)
            hits += bool(found) and found[0].text == answer
            retrieved += _retrieval_hit(index, path, before, after, answer)
    result = {
        "root": str(root),
        "cases": len(cases),
        "exact": hits,
        "exact_rate": round(hits / max(1, len(cases)), 3),
        "proposed": proposed,
        "precision": round(hits / max(1, proposed), 3),
        "cursor": "midline" if midline else "indent",
        "retrieval_hit_rate": round(retrieved / max(1, len(cases)), 3),
    }
    print(json.dumps(result))
    return result


def heldout_rounds(root: str | Path, n: int, seeds: int, midline: bool = False) -> dict:
    """`heldout` repeated with `seeds` different seeds, summed."""
    rounds = [heldout(root, n, seed, midline=midline) for seed in range(seeds)]
    cases, exact, proposed = (sum(r[k] for r in rounds) for k in ("cases", "exact", "proposed"))
    retrieved = sum(r["retrieval_hit_rate"] * r["cases"] for r in rounds)
    total = {"root": str(root), "cases": cases, "exact": exact, "exact_rate": round(exact / max(1, cases), 3)}
    total.update(proposed=proposed, precision=round(exact / max(1, proposed), 3), seeds=seeds)
    total["cursor"] = rounds[0]["cursor"] if rounds else ""
    total["retrieval_hit_rate"] = round(retrieved / max(1, cases), 3)
    print(json.dumps(total))
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workspace_bench", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--together", action="store_true", help="index all ROOTS as one workspace")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--max-files", type=int, default=IndexLimits.max_files)
    parser.add_argument("--heldout", type=int, default=0, help="measure copy exact match on N held-out lines instead")
    parser.add_argument("--seeds", type=int, default=1, help="held-out rounds (a different line per file each)")
    parser.add_argument("--midline", action="store_true", help="held-out cursor after a random word of the line")
    args = parser.parse_args(argv)
    for root in args.roots:
        if not Path(root).is_dir():
            print(f"error: not a folder: {root}", file=sys.stderr)
            return 1
    if args.together:
        run(list(args.roots), args.queries, limits=IndexLimits(max_files=args.max_files))
        return 0
    for root in args.roots:
        if args.heldout:
            heldout_rounds(root, args.heldout, args.seeds, args.midline)
        else:
            run(root, args.queries, limits=IndexLimits(max_files=args.max_files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
