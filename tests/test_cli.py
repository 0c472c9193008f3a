"""One command-line convention: `error: ...` on one line, exit 1 for errors, 2 for usage errors,
bad values refused before any model loads, unsupported files refused like the server refuses them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CLI = [sys.executable, "-m", "aigc_code"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize(
    "args",
    [
        ("complete", "examples/stats.py", "--line", "14", "--max-new-tokens", "0"),
        ("complete", "examples/stats.py", "--line", "14", "--n", "0"),
        ("complete", "examples/stats.py", "--line", "14", "--temperature", "-1"),
        ("complete", "examples/stats.py", "--line", "14", "--quantize", "int4"),
        ("complete",),
        ("no-such-command",),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args):
    done = run(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], done.stderr


def test_files_the_server_refuses_are_refused(tmp_path):
    for name in ("notes.txt", "script.rb"):
        (tmp_path / name).write_text("puts 1\n")
        done = run("complete", str(tmp_path / name), "--line", "1")
        assert done.returncode == 1 and done.stderr.startswith("error: ") and "not a language" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
