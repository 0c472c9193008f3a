"""Every way a checkpoint or adapter can be unusable gives a clear ModelLoadError / CLI line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from aigc_code.engine import GenerationConfig, load_engine
from aigc_code.errors import ModelLoadError
from aigc_code.loading import base_fingerprint
from aigc_code.testing import make_tiny_model


def copy_model(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*--model"):
        load_engine(tmp_path / "nope")


def test_partial_checkpoint(tmp_path, tiny_model):
    model = copy_model(tiny_model, tmp_path)
    (model / "model.safetensors").unlink()
    (model / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="missing a tokenizer.*weights"):
        load_engine(model)


def test_invalid_config_json(tmp_path, tiny_model):
    model = copy_model(tiny_model, tmp_path)
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json is not valid JSON"):
        load_engine(model)


def test_corrupt_safetensors(tmp_path, tiny_model):
    model = copy_model(tiny_model, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="cannot load model weights"):
        load_engine(model)


def test_tokenizer_model_mismatch(tmp_path, tiny_model):
    model = copy_model(tiny_model, tmp_path)
    bigger = make_tiny_model(tmp_path / "bigger", vocab_size=900)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bigger / name, model / name)
    with pytest.raises(ModelLoadError, match="tokenizer/model mismatch"):
        load_engine(model)


def make_adapter(base_dir, out, seed=0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
    fingerprint = base_fingerprint(base)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(out)
    (out / "base_model.json").write_text(json.dumps(fingerprint))
    return out


def test_adapter_loads_and_changes_output(tmp_path, tiny_model):
    adapter = make_adapter(tiny_model, tmp_path / "adapter")
    cfg = GenerationConfig(max_new_tokens=12)
    base = load_engine(tiny_model).complete("def f(x):\n", "", cfg)
    tuned_engine = load_engine(tiny_model, adapter=adapter)
    assert str(adapter) in tuned_engine.name
    tuned = tuned_engine.complete("def f(x):\n", "", cfg)
    assert tuned.candidates[0].token_ids != base.candidates[0].token_ids


def test_adapter_for_another_base_model(tmp_path, tiny_model):
    other = make_tiny_model(tmp_path / "other", hidden=48)
    adapter = make_adapter(other, tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="trained for another base model"):
        load_engine(tiny_model, adapter=adapter)
    (adapter / "base_model.json").unlink()  # without our fingerprint, peft's shape check still catches it
    with pytest.raises(ModelLoadError, match="does not fit this model"):
        load_engine(tiny_model, adapter=adapter)


def test_not_an_adapter(tmp_path, tiny_model):
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        load_engine(tiny_model, adapter=tmp_path)


def test_cli_bad_model_path_exits_with_one_line(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def f():\n    return 1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aigc_code",
            "complete",
            str(src),
            "--line",
            "2",
            "--column",
            "5",
            "--model",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--model" in lines[0]


def test_cli_complete_with_tiny_model_json(tmp_path, tiny_model):
    src = tmp_path / "a.py"
    src.write_text("import os\n\ndef f():\n    return os.getcwd()\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aigc_code",
            "complete",
            str(src),
            "--line",
            "4",
            "--column",
            "5",
            "--model",
            str(tiny_model),
            "--json",
            "--max-new-tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["language"] == "python" and out["timings"]["prompt_tokens"] > 0
    assert out["timings"]["generated_tokens"] <= 8


def test_cli_position_out_of_range(tmp_path, tiny_model):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "aigc_code", "complete", str(src), "--line", "40", "--model", str(tiny_model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "line 40 is out of range" in proc.stderr
