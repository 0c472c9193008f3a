"""CI-grade behaviour of ``eval run``: the model is recorded and a resume cannot mix models, the prompt
convention is recorded, progress shows when output is redirected, Ctrl-C exits 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from aigc_code.eval.cli import app
from typer.testing import CliRunner

runner = CliRunner()
CLI = [sys.executable, "-c", "from aigc_code.eval.cli import app; app()"]


def test_model_from_the_environment_is_recorded_and_a_resume_cannot_mix_models(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--languages", "python", "--limit", "1", "--max-new-tokens", "4", "--out", str(out), "-q"]
    monkeypatch.setenv("AIGC_CODE_MODEL", str(tiny_model))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["model"] == str(tiny_model.resolve()) and len(cfg["model_fingerprint"]) == 16
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == str(tiny_model.resolve()) and report["prompt_format"] == "plain"
    assert f"- model: `{tiny_model.resolve()}`" in (out / "report.md").read_text()
    monkeypatch.delenv("AIGC_CODE_MODEL")  # now the embedded default model: another model
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert res.output.startswith("error: ") and "model:" in res.output and "different settings" in res.output


def test_a_changed_checkpoint_is_another_model(tiny_model, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        str(model),
        "--languages",
        "python",
        "--limit",
        "1",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
        "-q",
    ]
    assert runner.invoke(app, args).exit_code == 0
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "aigc_note": "retrained"}))
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "model_fingerprint" in res.output


def test_plain_prompt_is_the_default_and_fim_is_recorded_when_asked(tiny_model, tmp_path):
    prompts = {}
    for fmt in ("plain", "fim"):
        out = tmp_path / fmt
        res = runner.invoke(
            app,
            [
                "run",
                "--model",
                str(tiny_model),
                "--languages",
                "python",
                "--limit",
                "1",
                "--max-new-tokens",
                "2",
                "--prompt-format",
                fmt,
                "--out",
                str(out),
                "-q",
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads((out / "report.json").read_text())["prompt_format"] == fmt
        gen = next(json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines() if '"generation"' in x)
        prompts[fmt] = gen["prompt_tokens"]
    assert prompts["fim"] == prompts["plain"] + 3  # <fim_prefix> ... <fim_suffix><fim_middle>


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path):
    res = subprocess.run(
        [*CLI, "run", "--reference", "--languages", "python", "--limit", "12", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("[") and " s] " in x]
    assert lines and lines[-1].endswith("generate 12/12, execute 12/12"), res.stdout
    assert "\x1b[" not in res.stdout.split("┏")[0]  # no terminal control codes before the table
    assert "overall" in res.stdout


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    args = [
        *CLI,
        "run",
        "--reference",
        "--languages",
        "python,js",
        "--limit",
        "60",
        "--out",
        str(out),
        "-q",
        "--allow-skip",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; run the same command again to resume" in err and "Traceback" not in err
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "report.json").read_text())["languages"]["python"]["pass@1"] == 1.0
