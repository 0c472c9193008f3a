"""`aigc_code.gguf.export_gguf`: clear errors for bad input; a real conversion of the shipped model
with llama.cpp's own converter (skipped, with the reason, where the converter cannot be found),
and, where llama-cpp-python is installed, llama.cpp tokenizes a FIM prompt exactly as our engine does."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec

import pytest

from aigc_code.gguf import GGUFError, export_gguf, find_converter, gpt2_style_pre_tokenizer
from aigc_code.loading import DEFAULT_MODEL_DIR


def test_bad_input_gives_one_line_errors(tmp_path):
    with pytest.raises(GGUFError, match="unknown GGUF dtype 'f8'"):
        export_gguf(DEFAULT_MODEL_DIR, tmp_path / "m.gguf", dtype="f8")
    with pytest.raises(GGUFError, match="is not a checkpoint directory"):
        export_gguf(tmp_path, tmp_path / "m.gguf")
    with pytest.raises(GGUFError, match="is not llama.cpp's convert_hf_to_gguf.py"):
        find_converter(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "aigc_code.gguf", str(tmp_path), str(tmp_path / "m.gguf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_pre_tokenizer_mapping_only_for_plain_byte_level(tmp_path):
    assert gpt2_style_pre_tokenizer(DEFAULT_MODEL_DIR)
    tok = json.loads((DEFAULT_MODEL_DIR / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Split", "pattern": {"Regex": "x"}}, tok["pre_tokenizer"]],
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    assert not gpt2_style_pre_tokenizer(tmp_path) and not gpt2_style_pre_tokenizer(tmp_path / "missing")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    try:
        find_converter()
    except GGUFError as exc:
        pytest.skip(str(exc))
    return export_gguf(DEFAULT_MODEL_DIR, tmp_path_factory.mktemp("gguf") / "default.gguf")


def test_export_writes_gguf_and_the_fim_sidecar(exported):
    assert exported.read_bytes()[:4] == b"GGUF"
    assert json.loads(exported.with_name(exported.name + ".aigc_code.json").read_text()) == {
        "fim_family": "starcoder",
        "fim_layout": "spm",
    }


@pytest.mark.skipif(find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llamacpp_tokenizes_like_the_engine(exported):
    import llama_cpp

    from aigc_code.engine import load_engine

    engine = load_engine(DEFAULT_MODEL_DIR)
    llm = llama_cpp.Llama(str(exported), n_ctx=256, n_threads=1, verbose=False)
    prefix, suffix = "def add(a, b):\n    return a +", "\n\nprint(add(1, 2))\n"
    prompt = engine.build_prompt(prefix, suffix, 16)
    text = "<fim_prefix><fim_suffix>" + suffix + "<fim_middle>" + prefix[: len(prefix) - len(prompt.heal)]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt.ids


@pytest.mark.skipif(find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_a_qwen_checkpoint_in_llamacpp_predicts_as_the_engine(tmp_path):
    """A Qwen2.5-Coder-shaped checkpoint (random weights, Qwen's real 151,643-rank tokenizer) through
    llama.cpp's converter: the sidecar says `qwen-psm` (what `--fim-format auto` reads), llama.cpp
    reads `<|fim_prefix|>` as one special token and tokenizes the FIM prompt as the engine does,
    and its next-token logits on it are the checkpoint's."""
    import llama_cpp
    import numpy as np
    import torch

    from aigc_code.engine import load_engine
    from aigc_code.fim_format import checkpoint_fim_format
    from aigc_code.testing_checkpoints import build_checkpoint, cache_root

    try:
        find_converter()
    except GGUFError as exc:
        pytest.skip(str(exc))
    checkpoint = build_checkpoint("qwen2.5-coder", cache_root())
    gguf = export_gguf(checkpoint, tmp_path / "qwen.gguf", dtype="f32")
    assert checkpoint_fim_format(str(gguf)) == checkpoint_fim_format(str(checkpoint)) == "qwen-psm"
    engine = load_engine(checkpoint)
    prefix, suffix = "def add(a, b):\n    return a +", "\n\nprint(add(1, 2))\n"
    prompt = engine.build_prompt(prefix, suffix, 8)
    text = f"<|fim_prefix|>{prefix[: len(prefix) - len(prompt.heal)]}<|fim_suffix|>{suffix}<|fim_middle|>"
    llm = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt.ids
    assert prompt.ids[0] == 151659  # <|fim_prefix|>, one token
    llm.eval(prompt.ids)
    theirs = np.array(llm.scores[len(prompt.ids) - 1])
    with torch.no_grad():
        ours = engine.model(torch.tensor([prompt.ids])).logits[0, -1].float().numpy()
    assert int(theirs.argmax()) == int(ours.argmax()) and np.abs(theirs - ours).max() < 1e-2
