"""`aigc-code finetune` / `merge` end to end on a tiny model and a tiny git repository (seconds)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_finetune_data import AWS_ID, AWS_SECRET, GITHUB, JWT, PEM, SLACK, _module, _write

from aigc_code.engine import GenerationConfig, load_engine
from aigc_code.errors import CheckpointError
from aigc_code.finetune.train import FinetuneConfig, run_finetune

REPO = Path(__file__).resolve().parents[1]

SECRETS = [AWS_ID, AWS_SECRET, GITHUB, PEM.splitlines()[1], SLACK, JWT]
IGNORED_MARKER = "ignored_marker_do_not_learn"


def _js_module(name: str, n: int) -> str:
    out = [f"// {name}: small helpers\n", "'use strict';\n"]
    for i in range(n):
        out.append(
            f"\nfunction {name}{i}(items, limit = {i + 3}) {{\n  const kept = items.filter((x) => x > {i});\n"
            f"  return kept.slice(0, limit).map((x) => x * {i + 2});\n}}\n"
        )
    out.append(f"\nmodule.exports = {{ {', '.join(f'{name}{i}' for i in range(n))} }};\n")
    return "".join(out)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    files = {f"pkg/{name}.py": _module(name, 10) for name in ("shapes", "units", "colors", "ledger", "queue", "paths")}
    files.update({f"web/{name}.js": _js_module(name, 8) for name in ("grid", "cart", "menu")})
    files.update(
        {
            ".gitignore": "local_settings.py\n",
            "local_settings.py": f"{IGNORED_MARKER} = True\n" + _module("local", 3),
            "pkg/cloud.py": f"AWS_ACCESS_KEY_ID = '{AWS_ID}'\nAWS_SECRET_ACCESS_KEY = '{AWS_SECRET}'\n"
            + _module("cloud", 3),
            "pkg/deploy_key.py": f'DEPLOY_KEY = """{PEM}"""\n' + _module("deploy", 3),
            "web/notify.js": f"const GITHUB_TOKEN = '{GITHUB}';\nconst SLACK = '{SLACK}';\nconst SESSION = '{JWT}';\n"
            + _js_module("notify", 3),
        }
    )
    _write(root, files)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    return root


def small_config(**kw) -> FinetuneConfig:
    base = dict(
        max_steps=12,
        context_length=128,
        batch_size=4,
        grad_accum=1,
        lr=3e-2,
        rank=8,
        alpha=16,
        eval_lines=6,
        eval_spans=3,
        eval_windows=4,
        checkpoint_every=5,
        pipeline_holes=3,
    )
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def finetuned(tiny_model, tiny_repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "out"
    messages: list[str] = []
    report = run_finetune(
        tiny_repo, out, base=str(tiny_model), cfg=small_config(), device="cpu", threads=1, echo=messages.append
    )  # one thread: fast and steady on a busy machine
    return out, report, messages


def test_adapter_written_and_reloads_with_changed_completions(finetuned, tiny_model):
    out, report, _ = finetuned
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "base_model.json",
        "finetune_report.json",
        "finetune_report.md",
    ):
        assert (out / name).is_file(), name
    assert report["training"]["steps"] == 12 and report["training"]["stop_reason"] == "completed"
    cfg = GenerationConfig(max_new_tokens=12)
    prefix, suffix = "def shapes_3(value, scale=5):\n    ", "\n"
    base = load_engine(tiny_model).complete(prefix, suffix, cfg)
    tuned_engine = load_engine(tiny_model, adapter=out)
    assert str(out) in tuned_engine.name
    tuned = tuned_engine.complete(prefix, suffix, cfg)
    assert tuned.candidates[0].token_ids != base.candidates[0].token_ids


def test_report_has_before_after_table(finetuned):
    out, report, _ = finetuned
    table = {row["metric"]: row for row in report["evaluation"]["table"]}
    assert set(table) == {
        "validation loss (nats/token)",
        "validation perplexity",
        "next-line exact match",
        "next-line edit similarity",
        "span exact match",
        "span edit similarity",
    }
    assert table["validation loss (nats/token)"]["tuned"] < table["validation loss (nats/token)"]["base"]
    assert report["evaluation"]["base"]["next_line"]["n"] == 6
    md = (out / "finetune_report.md").read_text()
    assert "| next-line exact match |" in md and "## Before / after" in md
    on_disk = json.loads((out / "finetune_report.json").read_text())
    assert on_disk["training"]["steps"] == 12


def test_report_measures_adapter_and_index_through_the_pipeline(finetuned):
    out, report, messages = finetuned
    rows = report["pipeline"]
    assert set(rows) == {"base, no index", "base, index", "base + adapter, no index", "base + adapter, index"}
    assert all(0 < r["n"] <= 3 and 0 <= r["exact_match"] <= 1 for r in rows.values())
    on_disk = json.loads((out / "finetune_report.json").read_text())
    assert on_disk["pipeline"] == rows
    assert "## Through the editor's pipeline" in (out / "finetune_report.md").read_text()
    assert any(m.startswith("pipeline measurement: base + adapter") for m in messages)


def test_secrets_and_ignored_files_never_reach_training(finetuned, tiny_repo, tiny_model):
    from transformers import AutoTokenizer

    from aigc_code.fim import detect_fim
    from aigc_code.finetune.data import collect
    from aigc_code.finetune.examples import PAD, ExampleBuilder, ExampleConfig

    out, report, _ = finetuned
    listed = {s["path"]: {r["rule"] for r in s["rules"]} for s in report["data"]["secrets"]}
    assert listed == {
        "pkg/cloud.py": {"aws-access-key-id", "aws-secret-access-key"},
        "pkg/deploy_key.py": {"private-key"},
        "web/notify.js": {"github-token", "slack-token", "jwt"},
    }
    reports = (out / "finetune_report.json").read_text() + (out / "finetune_report.md").read_text()
    for secret in SECRETS:
        assert secret not in reports
    # every training example of the first epochs, rebuilt exactly as the run built them
    data = collect(tiny_repo)
    used = {f.path for f in data.train + data.val}
    assert "local_settings.py" not in used and not used & set(listed)
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    builder = ExampleBuilder(data.train, tok, detect_fim(tok.get_vocab()), ExampleConfig(context=128))
    for epoch in range(3):
        text = tok.decode([int(t) for t in builder.epoch_rows(0, epoch).flatten() if t != PAD])
        assert "def shapes_" in text
        for secret in SECRETS + [IGNORED_MARKER]:
            assert secret not in text


def test_merge_output_loads_and_matches_adapter(finetuned, tiny_model, tmp_path):
    import torch

    from aigc_code.finetune.merge import MergeError, merge

    out, _, _ = finetuned
    merged = merge(out, tmp_path / "merged")  # the base is found from the adapter's report
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    plain = load_engine(merged)
    tuned = load_engine(tiny_model, adapter=out)
    ids = torch.tensor([plain.encode("def units_2(value, scale=4):\n    total = value")])
    with torch.no_grad():
        a = plain.model(input_ids=ids).logits
        b = tuned.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert plain.complete("x = ", "", GenerationConfig(max_new_tokens=4)).generated_tokens <= 4
    with pytest.raises(MergeError, match="not empty"):
        merge(out, merged)
    # the engine's per-model settings (aigc_code.json: the FIM layout) travel with the merged weights
    base_copy = tmp_path / "base"
    shutil.copytree(tiny_model, base_copy)
    (base_copy / "aigc_code.json").write_text('{"fim_layout": "spm"}')
    merged2 = merge(out, tmp_path / "merged2", base=str(base_copy))
    assert load_engine(merged2).fim_layout == "spm"


def test_resume_after_kill_continues_from_checkpoint(tiny_model, tiny_repo, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "aigc_code",
        "finetune",
        str(tiny_repo),
        "--out",
        str(out),
        "--model",
        str(tiny_model),
        "--max-steps",
        "100000",
        "--checkpoint-every",
        "3",
        "--context-length",
        "64",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--eval-lines",
        "2",
        "--eval-spans",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint" / "COMPLETE").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # an abrupt interruption: no chance to clean up
        proc.wait()
    from aigc_code import checkpoint

    state = checkpoint.read_state(checkpoint.latest(out / "checkpoint"))
    killed_at = state["step"]
    assert killed_at >= 3 and killed_at % 3 == 0 and "eval_base" in state
    messages: list[str] = []
    report = run_finetune(
        tiny_repo,
        out,
        base=None,
        cfg=FinetuneConfig(max_steps=killed_at + 2, eval_lines=2, eval_spans=1),
        resume=True,
        device="cpu",
        threads=1,
        echo=messages.append,
    )
    assert any(f"at step {killed_at}" in m and "resuming" in m for m in messages), messages
    t = report["training"]
    assert t["steps"] == killed_at + 2 and t["runs"] == 2 and t["context"] == 64  # the run's own settings kept
    assert [h["step"] for h in t["history"]][-1] == killed_at + 2
    assert report["evaluation"]["base"] == state["eval_base"]  # measured once, before training


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_model, tiny_repo, tmp_path, monkeypatch):
    """Same batches, dropout masks and optimizer state after a resume: the same adapter, to float precision."""
    from safetensors.torch import load_file

    from aigc_code.finetune import train
    from aigc_code.finetune.train import FinetuneError

    cfg = dict(
        max_steps=6,
        context_length=64,
        batch_size=2,
        grad_accum=2,
        eval_lines=1,
        eval_spans=1,
        eval_windows=1,
        checkpoint_every=100,
    )
    whole = tmp_path / "whole"
    run_finetune(
        tiny_repo, whole, base=str(tiny_model), cfg=small_config(**cfg), device="cpu", threads=1, echo=lambda m: None
    )
    real_lr_at = train.lr_at

    def ctrl_c_at_step_4(step, *args):
        if step == 4:
            raise KeyboardInterrupt
        return real_lr_at(step, *args)

    split = tmp_path / "split"
    monkeypatch.setattr(train, "lr_at", ctrl_c_at_step_4)
    with pytest.raises(FinetuneError, match="interrupted at step 4 of 6.*--resume"):
        run_finetune(
            tiny_repo,
            split,
            base=str(tiny_model),
            cfg=small_config(**cfg),
            device="cpu",
            threads=1,
            echo=lambda m: None,
        )
    monkeypatch.setattr(train, "lr_at", real_lr_at)
    run_finetune(tiny_repo, split, cfg=small_config(**cfg), resume=True, device="cpu", threads=1, echo=lambda m: None)
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(split / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch_allclose(a[key], b[key]), (key, float((a[key] - b[key]).abs().max()))


def torch_allclose(x, y) -> bool:
    import torch

    return bool(torch.allclose(x, y, atol=1e-6, rtol=1e-5))


def test_damaged_checkpoint_is_a_clear_error(finetuned, tiny_repo, tmp_path):
    src, _, _ = finetuned
    out = tmp_path / "out"
    shutil.copytree(src, out)
    for name in ("checkpoint.old", "checkpoint.tmp"):
        shutil.rmtree(out / name, ignore_errors=True)
    weights = out / "checkpoint" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="adapter_model.safetensors is truncated"):
        run_finetune(
            tiny_repo, out, cfg=FinetuneConfig(max_steps=14), resume=True, device="cpu", threads=1, echo=lambda m: None
        )
    weights.write_bytes(data)
    optimizer = out / "checkpoint" / "optimizer.pt"
    optimizer.write_bytes(b"\0" * optimizer.stat().st_size)  # same size, garbage content
    with pytest.raises(CheckpointError, match="optimizer.pt is corrupt"):
        run_finetune(
            tiny_repo, out, cfg=FinetuneConfig(max_steps=14), resume=True, device="cpu", threads=1, echo=lambda m: None
        )


def test_cli_one_line_error_for_missing_repo(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from aigc_code.cli import app

    result = CliRunner().invoke(
        app, ["finetune", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--model", str(tiny_model)]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error:") and "not a directory" in result.output


def test_ctrl_c_exits_130_with_the_checkpoint_saved(tiny_model, tiny_repo, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aigc_code.cli import app
    from aigc_code.finetune import train

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "lr_at", ctrl_c)
    out = tmp_path / "o"
    args = ["finetune", str(tiny_repo), "--out", str(out), "--model", str(tiny_model), "--max-steps", "3"]
    result = CliRunner().invoke(app, args + "--eval-lines 1 --eval-spans 1 --device cpu --context-length 64".split())
    assert result.exit_code == 130, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at step 0") and "--resume" in last
    assert (out / "checkpoint" / "COMPLETE").exists()
