"""`aigc-code bench engine`: every runner on the same prompt ids, ratios, JSON; llama.cpp when installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest

from tests.conftest import AIGC_CODE, REPO

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def test_bench_engine_rows_ratios_and_identity(tiny_model, tmp_path, monkeypatch):
    import aigc_code.bench.engine as bench

    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    result = bench.bench_engine(["shipped"], ["fp32", "int8"], model=str(tiny_model), prompt_tokens=40,
                                new_tokens=6, rounds=1, runs=1, threads=1)  # fmt: skip
    rows = {(r["dtype"], r["runner"]): r for r in result["rows"]}
    for dtype in ("fp32", "int8"):
        for runner in ("aigc-code", "aigc-code+lookup", "aigc-code (HF forward)", "transformers"):
            row = rows[(dtype, runner)]
            assert row["tokens"] == 6 and row["decode_tok_s"] > 0 and row["ttft_ms"] > 0
        # greedy: the fast path decodes exactly what transformers' generate decodes
        assert rows[(dtype, "aigc-code (HF forward)")]["same_tokens_as_transformers"]
    assert rows[("fp32", "aigc-code")]["same_tokens_as_transformers"]
    assert rows[("fp32", "aigc-code+lookup")]["same_tokens_as_transformers"]
    llama = rows[("fp32", "llama.cpp")]
    if HAVE_LLAMA_CPP:
        assert llama["skipped"] is None and llama["tokens"] == 6
        ratio = next(r for r in result["ratios"] if r["runner"] == "aigc-code" and r["dtype"] == "fp32")
        assert ratio["decode_vs_llama.cpp"] > 0 and ratio["ttft_vs_llama.cpp"] > 0
    else:
        assert llama["skipped"] == "skipped: llama-cpp-python not installed"
    table = bench.format_table(result)
    assert "aigc-code+lookup" in table and "load average" in table
    json.dumps(result)


def test_prompt_ids_are_real_code_of_the_asked_length(tiny_model):
    from aigc_code.bench.engine import prompt_ids
    from aigc_code.loading import load_tokenizer

    tok = load_tokenizer(tiny_model)
    ids = prompt_ids(tok, 120)
    assert len(ids) == 120 and "def " in tok.decode(ids)


def test_unknown_dtype_and_model_are_errors():
    from aigc_code.bench.engine import resolve_models, supported_dtypes

    with pytest.raises(ValueError, match="unknown dtype"):
        supported_dtypes(["fp64"])
    with pytest.raises(ValueError, match="unknown model"):
        resolve_models(["7b"], None)


def test_cli_writes_json_and_prints_the_table(tiny_model, tmp_path):
    out = tmp_path / "engine.json"
    cmd = [*AIGC_CODE, "bench", "engine", "--model", str(tiny_model), "--models", "shipped", "--dtypes", "fp32",
           "--prompt-tokens", "24", "--new-tokens", "4", "--rounds", "1", "--runs", "1", "--no-llama-cpp",
           "--no-hf-engine", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "decode tok/s" in proc.stdout and "skipped: --no-llama-cpp" in proc.stdout
    data = json.loads(out.read_text())
    assert {r["runner"] for r in data["rows"]} == {"aigc-code", "aigc-code+lookup", "transformers", "llama.cpp"}
    bad = subprocess.run([*AIGC_CODE, "bench", "engine", "--dtypes", "fp64", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown dtype")
