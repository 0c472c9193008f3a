"""Engine behaviour on tiny real models: FIM layout, stops, candidates, streaming, cancellation, KV reuse."""

from __future__ import annotations

import threading
import time

import pytest

from aigc_code.engine import CancellationToken, GenerationConfig, load_engine
from aigc_code.fim import KNOWN_FIM, detect_fim

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize("fim", KNOWN_FIM, ids=lambda f: f"{f.family}:{f.prefix}")
def test_detect_fim_families(fim):
    vocab = {tok: i for i, tok in enumerate((fim.prefix, fim.suffix, fim.middle, *fim.eot, "hello"))}
    assert detect_fim(vocab) == fim


def test_codegemma_is_told_from_qwen_and_stops_at_file_separator():
    markers = {"<|fim_prefix|>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3}
    assert detect_fim({**markers, "<|file_sep|>": 4}).family == "qwen"
    gemma = detect_fim({**markers, "<|file_separator|>": 4})
    assert gemma.family == "codegemma" and "<|file_separator|>" in gemma.eot


def test_detect_fim_none_without_markers():
    assert detect_fim({"<fim_prefix>": 1, "hello": 2}) is None


def test_fim_prompt_layout(tiny_engine):
    prompt = tiny_engine.build_prompt("x = 1\ny = ", "\nz = 3\n")
    tok = tiny_engine.tokenizer
    specials = [tok.convert_ids_to_tokens(i) for i in prompt.ids if i in tok.all_special_ids]
    assert specials == ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    assert prompt.ids[-1] == tok.convert_tokens_to_ids("<fim_middle>")
    prefix = "x = 1\ny = "
    assert prefix.endswith(prompt.heal)
    kept = prefix[: len(prefix) - len(prompt.heal)]
    assert tok.decode(prompt.ids) == f"<fim_prefix>{kept}<fim_suffix>\nz = 3\n<fim_middle>"


def test_prefix_only_prompt_without_fim_tokens(tiny_model_nofim):
    engine = load_engine(tiny_model_nofim)
    assert engine.fim is None
    prompt = engine.build_prompt("x = 1\ny = ", "\nz = 3\n")
    assert engine.tokenizer.decode(prompt.ids) + prompt.heal == "x = 1\ny = "
    result = engine.complete("x = 1\ny = ", "\nz = 3\n", GenerationConfig(max_new_tokens=5))
    assert result.generated_tokens <= 5


def test_token_healing_reproduces_removed_text(tiny_engine):
    prompt = tiny_engine.build_prompt("def f():\n    retu", "")
    assert prompt.heal and "def f():\n    retu".endswith(prompt.heal)
    result = tiny_engine.run(prompt, GenerationConfig(max_new_tokens=6))
    raw = tiny_engine.tokenizer.decode(result.candidates[0].token_ids)
    # generation was constrained to spell out the healed characters before anything else
    assert raw.startswith(prompt.heal) or prompt.heal.startswith(raw)
    if raw.startswith(prompt.heal):
        assert result.text == raw[len(prompt.heal) :].rstrip("\ufffd")


def test_greedy_is_deterministic_and_reports_timings(tiny_engine):
    cfg = GenerationConfig(max_new_tokens=12)
    a = tiny_engine.complete(PREFIX, SUFFIX, cfg)
    b = tiny_engine.complete(PREFIX, SUFFIX, cfg)
    assert a.text == b.text
    assert a.prompt_tokens > 0 and 0 < a.generated_tokens <= 12
    assert a.total_ms >= a.prompt_ms > 0
    assert len(a.candidates[0].token_logprobs) == len(a.candidates[0].token_ids)
    assert all(lp <= 0 for lp in a.candidates[0].token_logprobs)


def test_kv_reuse_gives_identical_output(tiny_model):
    plain = load_engine(tiny_model, reuse_kv=False)
    reusing = load_engine(tiny_model, reuse_kv=True)
    cfg = GenerationConfig(max_new_tokens=10)
    reusing.complete(PREFIX + "x = a", SUFFIX, cfg)  # warm the cache with a shared prefix
    warm = reusing.complete(PREFIX + "return", SUFFIX, cfg)
    assert warm.reused_tokens > 0
    assert warm.text == plain.complete(PREFIX + "return", SUFFIX, cfg).text
    # an edit in the middle of the document invalidates everything after it
    edited = "import os\n" + PREFIX + "return"
    assert reusing.complete(edited, SUFFIX, cfg).text == plain.complete(edited, SUFFIX, cfg).text


def test_stop_sequences_cut_the_text(tiny_engine):
    free = tiny_engine.complete(PREFIX, SUFFIX, GenerationConfig(max_new_tokens=24)).text
    assert len(free) > 4
    stop = free[2:4]
    cut = tiny_engine.complete(PREFIX, SUFFIX, GenerationConfig(max_new_tokens=24, stop=[stop]))
    assert stop not in cut.text
    assert cut.candidates[0].finish_reason == "stop"
    assert free.startswith(cut.text)


def test_n_candidates_with_sampling(tiny_engine):
    cfg = GenerationConfig(max_new_tokens=8, n=4, temperature=1.0, seed=7)
    result = tiny_engine.complete(PREFIX, SUFFIX, cfg)
    assert len(result.candidates) == 4
    assert len({c.text for c in result.candidates}) > 1
    again = tiny_engine.complete(PREFIX, SUFFIX, cfg)
    assert [c.text for c in again.candidates] == [c.text for c in result.candidates]  # seeded


def test_cancellation_from_another_thread(tiny_engine):
    cancel = CancellationToken()
    threading.Timer(0.2, cancel.cancel).start()
    start = time.perf_counter()
    result = tiny_engine.complete("import os\n", "", GenerationConfig(max_new_tokens=100_000, stop=[]), cancel=cancel)
    # cancelled, or the model's context ran out first (the engine never generates past it)
    assert result.candidates[0].finish_reason in ("cancelled", "eos", "length")
    assert result.prompt_tokens + result.generated_tokens <= tiny_engine.max_context
    assert time.perf_counter() - start < 10
    already = CancellationToken()
    already.cancel()
    result = tiny_engine.complete("import os\n", "", GenerationConfig(max_new_tokens=100, stop=[]), cancel=already)
    assert result.candidates[0].finish_reason == "cancelled" and result.generated_tokens <= 1


def test_time_budget(tiny_engine):
    result = tiny_engine.complete("import os\n", "", GenerationConfig(max_new_tokens=100_000, time_budget_s=0.001))
    assert result.candidates[0].finish_reason in ("time", "eos")
    assert result.total_ms < 5000


def test_long_prompt_is_truncated_to_context(tiny_engine):
    long_prefix = "x = 1\n" * 3000
    result = tiny_engine.complete(long_prefix, "y = 2\n" * 500, GenerationConfig(max_new_tokens=4))
    assert result.prompt_tokens <= tiny_engine.max_context


@pytest.mark.parametrize(
    "prefix", [PREFIX, "x = [1, 2, 3]\nx = [1, 2, 3]\nx = [1, 2", "import os\nimport sys\nimport "]
)
def test_prompt_lookup_decoding_is_identical_to_plain_greedy(tiny_model, prefix):
    engine = load_engine(tiny_model, reuse_kv=False)
    plain = engine.complete(prefix, SUFFIX, GenerationConfig(max_new_tokens=40, prompt_lookup=0))
    fast = engine.complete(prefix, SUFFIX, GenerationConfig(max_new_tokens=40, prompt_lookup=8))
    assert fast.candidates[0].token_ids == plain.candidates[0].token_ids
    assert fast.text == plain.text
    assert fast.candidates[0].finish_reason == plain.candidates[0].finish_reason


def test_int8_quantized_engine_generates(tiny_model):
    engine = load_engine(tiny_model, quantize="int8")
    result = engine.complete(PREFIX, SUFFIX, GenerationConfig(max_new_tokens=6))
    assert 0 < result.generated_tokens <= 6
    assert "DynamicQuantizedLinear" in repr(engine.model)


def test_left_truncation_is_stable_across_keystrokes(tiny_engine):
    long_prefix = "".join(f"value_{i} = compute({i})\n" for i in range(400))
    a = tiny_engine.build_prompt(long_prefix + "res", "", 32)
    b = tiny_engine.build_prompt(long_prefix + "result", "", 32)
    assert len(a.ids) <= tiny_engine.max_context and len(b.ids) <= tiny_engine.max_context
    common = next(
        (i for i, (x, y) in enumerate(zip(a.ids, b.ids, strict=False)) if x != y), min(len(a.ids), len(b.ids))
    )
    assert common > len(a.ids) - 16  # only the last few tokens differ: the KV cache can be reused


def test_spm_layout_puts_the_suffix_first_and_reuses_the_whole_prefix(tiny_model):
    engine = load_engine(tiny_model)
    engine.fim_layout = "spm"
    tok = engine.tokenizer
    prompt = engine.build_prompt("x = 1\ny = ", "\nz = 3\n")
    assert tok.decode(prompt.ids).startswith("<fim_prefix><fim_suffix>\nz = 3\n<fim_middle>x = 1")
    cfg = GenerationConfig(max_new_tokens=6)
    engine.complete(PREFIX, SUFFIX, cfg)
    typed = engine.complete(PREFIX + "ret", SUFFIX, cfg)
    assert typed.reused_tokens >= typed.prompt_tokens - 3  # only the newly typed characters are encoded
    fresh = load_engine(tiny_model, reuse_kv=False)
    fresh.fim_layout = "spm"
    assert fresh.complete(PREFIX + "ret", SUFFIX, cfg).text == typed.text


def test_threads_environment_variable_sets_torch_threads(tiny_model):
    import os
    import subprocess
    import sys

    code = (
        "import torch; from aigc_code.engine import load_engine; "
        f"load_engine({str(tiny_model)!r}); print(torch.get_num_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AIGC_CODE_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"
