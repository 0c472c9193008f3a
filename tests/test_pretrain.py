"""Pretraining on a tiny corpus: tokenizer, FIM batches, resume, kill-and-resume, damaged checkpoints."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aigc_code import checkpoint
from aigc_code.errors import CheckpointError
from aigc_code.fim import DEFAULT_FIM, random_split
from aigc_code.pretrain.train import ModelShape, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(hidden=32, layers=2, heads=2, intermediate=64, context=64, vocab_size=400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    records = []
    for path in sorted((REPO / "aigc_code").glob("*.py")):
        records.append({"lang": "python", "path": str(path), "text": path.read_text()})
    js = "function add(a, b) {\n  return a + b;\n}\n\nmodule.exports = { add };\n" * 30
    records.append({"lang": "javascript", "path": "add.js", "text": js})
    with open(out / "train.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with open(out / "val.jsonl", "w") as f:
        for r in records[3:5] + records[-1:]:
            f.write(json.dumps(r) + "\n")
    return out


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(shape=ModelShape(**TINY), batch_size=2, warmup_steps=2, eval_windows=2, **kw)


def test_random_split_covers_text():
    rng = random.Random(0)
    text = "def f(x):\n    return x\n\nprint(f(1))\n"
    for _ in range(200):
        prefix, middle, suffix = random_split(text, rng)
        assert prefix + middle + suffix == text
    assert DEFAULT_FIM.psm("a", "c", "b") == "<fim_prefix>a<fim_suffix>c<fim_middle>b"


def test_train_resume_accumulates(corpus, tmp_path):
    run = tmp_path / "run"
    state = train(corpus, run, tiny_cfg(), resume=True, max_steps=3)
    assert state["step"] == 3 and state["tokens"] == 3 * 2 * 64
    first = checkpoint.read_state(checkpoint.latest(run / "checkpoint"))
    assert set(first["history"][-1]["val_loss"]) == {"python", "javascript"}
    state = train(corpus, run, tiny_cfg(), resume=True, max_steps=2)
    assert state["step"] == 5 and state["runs"] == 2 and state["tokens"] == 5 * 2 * 64
    assert (run / "checkpoint.old" / "COMPLETE").exists()  # the previous good checkpoint is kept


def test_damaged_checkpoint_is_refused_and_previous_kept(corpus, tmp_path):
    run = tmp_path / "run"
    train(corpus, run, tiny_cfg(), max_steps=1)
    train(corpus, run, tiny_cfg(), max_steps=1)
    weights = run / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated.*checkpoint\.old is intact"):
        train(corpus, run, tiny_cfg(), max_steps=1)
    assert not checkpoint.problem(run / "checkpoint.old")


def _train_cmd(corpus: Path, run: Path, checkpoint_minutes: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aigc_code",
        "pretrain",
        "train",
        "--corpus",
        str(corpus),
        "--out",
        str(run),
        "--steps",
        "100000",
        "--checkpoint-minutes",
        checkpoint_minutes,
        "--batch-size",
        "2",
        "--hidden",
        "32",
        "--layers",
        "2",
        "--heads",
        "2",
        "--context",
        "64",
        "--vocab-size",
        "400",
    ]


def test_killed_run_resumes_from_last_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    cmd = _train_cmd(corpus, run, "0.005")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            ckpt = run / "checkpoint"
            if (ckpt / "COMPLETE").exists() and checkpoint.read_state(ckpt)["step"] >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpt = checkpoint.latest(run / "checkpoint")
    before = checkpoint.read_state(ckpt)["step"]
    state = train(corpus, run, tiny_cfg(), resume=True, max_steps=1)
    assert state["step"] == before + 1 and state["runs"] == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_finishes_its_step_and_saves(corpus, tmp_path, sig):
    """Ctrl-C or SIGTERM mid-run: the step in progress finishes, a checkpoint is written (none was
    due for 100 minutes), exit status 130; the next run resumes from it."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(corpus, run, "100"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while not re.search(r"\b([3-9]|\d\d+)step", "".join(seen)):
            assert time.time() < deadline and proc.poll() is None, "".join(seen)[-2000:]
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    log = "".join(seen)
    step = checkpoint.read_state(checkpoint.latest(run / "checkpoint"))["step"]
    assert step >= 3 and f"{sig.name}: stopped after step {step}, checkpoint saved" in log
    state = train(corpus, run, tiny_cfg(), resume=True, max_steps=1)
    assert state["step"] == step + 1 and state["runs"] == 2


def test_continue_from_an_exported_model(corpus, tmp_path):
    from aigc_code.pretrain.export import export_model

    first = tmp_path / "run1"
    train(corpus, first, tiny_cfg(), max_steps=2)
    shipped = export_model(first, corpus, tmp_path / "shipped")
    state = train(corpus, tmp_path / "run2", tiny_cfg(), max_steps=1, start_from=shipped)
    assert state["step"] == 3 and state["tokens"] == 3 * 2 * 64 and state["runs"] == 2


def test_continuing_on_a_corpus_without_a_learned_language_is_refused(corpus, tmp_path):
    """A corpus built before some sources were installed (no Go, no Rust) would train those
    languages out of the model: `pretrain train` refuses, and says how to fix the corpus."""
    run = tmp_path / "run"
    train(corpus, run, tiny_cfg(), resume=True, max_steps=1)
    python_only = tmp_path / "python-only"
    python_only.mkdir()
    for split in ("train", "val"):
        lines = (corpus / f"{split}.jsonl").read_text().splitlines()
        kept = [x for x in lines if json.loads(x)["lang"] == "python"]
        (python_only / f"{split}.jsonl").write_text("\n".join(kept) + "\n")
    with pytest.raises(CheckpointError, match="has no javascript files, which this model was trained on"):
        train(python_only, run, tiny_cfg(), resume=True, max_steps=1)
