"""A run killed at any moment resumes from samples.jsonl without losing or duplicating work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aigc_code.eval.runner import EvalError, RunConfig, run_eval

LANGS = ["python", "javascript"]
LIMIT = 25
CLI = [sys.executable, "-c", "from aigc_code.eval.cli import app; app()"]


def _config(**kw) -> RunConfig:
    return RunConfig(languages=list(LANGS), reference=True, limit=LIMIT, workers=2, **kw)


def _numbers(report: dict) -> dict:
    return {
        lang: (r["samples"], r["passed_samples"], r.get("pass@1"), r["statuses"])
        for lang, r in report["languages"].items()
    }


def _keys(path: Path) -> Counter:
    keys: Counter = Counter()
    with open(path, "rb") as f:
        for line in f:
            assert line.endswith(b"\n")
            rec = json.loads(line)
            keys[(rec["kind"], rec["language"], rec["task_id"], rec["sample"])] += 1
    return keys


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "full"
    report = run_eval(_config(), out, progress=False, log=lambda m: None)
    return out, report


def test_reference_run_is_complete(complete_run):
    out, report = complete_run
    for lang in LANGS:
        r = report["languages"][lang]
        assert r["samples"] == LIMIT and r["statuses"].get("pending") is None
    keys = _keys(out / "samples.jsonl")
    assert len(keys) == 2 * LIMIT * len(LANGS) and set(keys.values()) == {1}
    for name in ("report.json", "report.md", "passk.png", "run.json"):
        assert (out / name).stat().st_size > 0


def test_resume_after_a_torn_line(complete_run, tmp_path):
    out, report = complete_run
    torn = tmp_path / "torn"
    shutil.copytree(out, torn)
    data = (torn / "samples.jsonl").read_bytes()
    cut = data.index(b"\n", len(data) // 2) - 17  # mid-line, about half way
    (torn / "samples.jsonl").write_bytes(data[:cut])
    resumed = run_eval(_config(), torn, progress=False, log=lambda m: None)
    assert _numbers(resumed) == _numbers(report)
    keys = _keys(torn / "samples.jsonl")
    assert len(keys) == 2 * LIMIT * len(LANGS) and set(keys.values()) == {1}


def test_resume_after_kill(complete_run, tmp_path):
    out, report = complete_run
    run_dir = tmp_path / "killed"
    args = [
        *CLI,
        "run",
        "--reference",
        "--languages",
        ",".join(LANGS),
        "--limit",
        str(LIMIT),
        "--out",
        str(run_dir),
        "--quiet",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = run_dir / "samples.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.01)
    killed_midway = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines_before = samples.read_bytes().count(b"\n") if samples.exists() else 0
    if killed_midway:
        assert lines_before < 2 * LIMIT * len(LANGS)
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    resumed = json.loads((run_dir / "report.json").read_text())
    assert _numbers(resumed) == _numbers(report)
    keys = _keys(samples)
    assert len(keys) == 2 * LIMIT * len(LANGS) and set(keys.values()) == {1}


def test_resume_refuses_different_settings(complete_run):
    out, _ = complete_run
    with pytest.raises(EvalError, match="different settings"):
        run_eval(RunConfig(languages=list(LANGS), limit=LIMIT, temperature=0.5), out, progress=False)
    res = subprocess.run(
        [*CLI, "run", "--languages", "python", "--temperature", "0.5", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def test_report_command_rebuilds_the_report(complete_run, tmp_path):
    out, report = complete_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("report.json", "report.md", "passk.png"):
        (copy / name).unlink()
    res = subprocess.run([*CLI, "report", str(copy)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert _numbers(json.loads((copy / "report.json").read_text())) == _numbers(report)
    assert (copy / "passk.png").read_bytes()[:4] == b"\x89PNG"
    assert "Reference self-check" in (copy / "report.md").read_text()
