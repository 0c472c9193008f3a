"""The shipped default model: it loads with no arguments and completes real code (Python, JavaScript)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aigc_code.loading import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]


def test_model_card_and_weights_ship_with_the_package():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "aigc_code.json"):
        assert (DEFAULT_MODEL_DIR / name).is_file(), name
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 50 * 1024 * 1024
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    for lang in ("python", "javascript", "go", "rust", "java", "c", "cpp", "typescript"):
        assert f"| {lang} |" in card


def complete(path: str, line: int, column: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aigc_code",
            "complete",
            path,
            "--line",
            str(line),
            "--column",
            str(column),
            "--json",
            "--max-new-tokens",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_default_model_completes_python():
    out = complete("examples/stats.py", 14, 5)
    assert out["language"] == "python"
    assert out["completion"].strip(), out


def test_default_model_completes_javascript():
    out = complete("examples/server.js", 6, 7)
    assert out["language"] == "javascript"
    assert out["completion"].strip(), out
