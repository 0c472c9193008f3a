"""The engine's fast path (aigc_code.fastdecode): same logits as Hugging Face, same greedy output, HF fallback."""

from __future__ import annotations

import os

import pytest
import torch

from aigc_code.fastdecode import FAST_ENV, FastLM, StaticCache, build_fast_lm, unsupported_reason

TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 320, "max_position_embeddings": 256}  # fmt: skip


def _model(kind: str, **extra):
    import transformers

    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**TINY, **extra})).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: make them matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


VARIANTS = {
    "llama-gqa-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-bias-llama3-rope": ("llama", {"attention_bias": True, "num_key_value_heads": 4, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}}),
    "qwen2-bias": ("qwen2", {"tie_word_embeddings": True}),
    "qwen3-qk-norm": ("qwen3", {"head_dim": 24, "tie_word_embeddings": False}),
}  # fmt: skip


def _hf_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def _fast_logits(fast: FastLM, ids, chunks):
    """Feed `ids` in chunks (prefill, drafts, single steps) and collect every position's logits."""
    cache, out, start = fast.new_cache(), [], 0
    with torch.inference_mode():
        for size in chunks:
            out.append(fast(input_ids=ids[:, start : start + size], cache=cache).logits.float())
            start += size
    return torch.cat(out, dim=1), cache


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_hugging_face_in_every_feeding_pattern(name):
    kind, extra = VARIANTS[name]
    model = _model(kind, **extra)
    assert unsupported_reason(model) is None
    fast = build_fast_lm(model)
    ids = torch.randint(0, TINY["vocab_size"], (1, 40))
    ref = _hf_logits(model, ids)
    got, cache = _fast_logits(fast, ids, [17, 1, 1, 9, 5, 1, 6])
    assert cache.get_seq_length() == 40
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_prefill_keeps_only_the_last_logits_and_crop_rewinds():
    model = _model("llama")
    fast = build_fast_lm(model)
    ids = torch.randint(0, TINY["vocab_size"], (1, 30))
    ref = _hf_logits(model, ids)
    cache = fast.new_cache()
    with torch.inference_mode():
        last = fast(input_ids=ids[:, :25], cache=cache, logits_to_keep=1).logits
        assert last.shape == (1, 1, model.config.vocab_size)
        torch.testing.assert_close(last[0, 0], ref[0, 24], atol=2e-5, rtol=1e-4)
        fast(input_ids=ids[:, :5], cache=cache)  # a rejected draft: 5 wrong tokens ...
        cache.crop(-5)  # ... rolled back exactly as DynamicCache.crop does
        assert cache.get_seq_length() == 25
        again = fast(input_ids=ids[:, 25:], cache=cache).logits
    torch.testing.assert_close(again[0], ref[0, 25:], atol=2e-5, rtol=1e-4)


def test_batched_candidates_after_repeat_interleave():
    model = _model("qwen2")
    fast = build_fast_lm(model)
    ids = torch.randint(0, TINY["vocab_size"], (1, 12))
    nxt = torch.tensor([[3], [7]])
    with torch.inference_mode():
        cache = fast.new_cache()
        fast(input_ids=ids, cache=cache, logits_to_keep=1)
        cache.batch_repeat_interleave(2)
        got = fast(input_ids=nxt, cache=cache).logits[:, -1]
        ref = torch.stack([model(input_ids=torch.cat([ids, t.view(1, 1)], 1)).logits[0, -1] for t in nxt])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_fixed_size_blocks_match_the_eager_path():
    """The compilable / CUDA-graph step (fixed shapes, whole-cache attention under a mask), run uncompiled."""
    model = _model("qwen3", head_dim=24)
    eager, blocked = build_fast_lm(model), build_fast_lm(model)
    blocked.compile_blocks(sizes=(1, 9), compiler=None)
    ids = torch.randint(0, TINY["vocab_size"], (1, 36))
    chunks = [20, 1, 9, 4, 1, 1]  # 4 is padded to a 9-block
    ref, _ = _fast_logits(eager, ids, chunks)
    got, cache = _fast_logits(blocked, ids, chunks)
    assert cache.get_seq_length() == 36
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_int8_fast_path_matches_the_quantized_hf_model():
    from aigc_code.loading import quantize_int8

    model = quantize_int8(_model("llama"), torch.device("cpu"), "int8")
    fast = build_fast_lm(model)
    assert fast is not None and fast.quantized
    ids = torch.randint(0, TINY["vocab_size"], (1, 20))
    ref = _hf_logits(model, ids)  # dynamic int8 scales depend on the batch: feed it the same way
    got, _ = _fast_logits(fast, ids, [20])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_bf16_logits_are_close():
    model = _model("llama").to(torch.bfloat16)
    fast = build_fast_lm(model)
    ids = torch.randint(0, TINY["vocab_size"], (1, 24))
    ref = _hf_logits(model, ids)
    got, _ = _fast_logits(fast, ids, [16, 1, 7])
    assert (got - ref).abs().max().item() < 0.1 * ref.abs().max().item()


@pytest.mark.parametrize(
    ("kind", "extra", "why"),
    [
        ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0}, "sliding-window"),
        ("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "rope type"),
        ("llama", {"mlp_bias": True}, "MLP biases"),
        ("llama", {"hidden_act": "gelu"}, "activation"),
    ],
)
def test_unsupported_configs_fall_back_to_hugging_face(kind, extra, why):
    model = _model(kind, **extra)
    assert why in unsupported_reason(model)
    assert build_fast_lm(model) is None


def test_other_architectures_and_adapters_fall_back():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    assert "not one of" in unsupported_reason(gpt2)

    class Wrapped(torch.nn.Module):  # what a peft model looks like to the check
        def get_base_model(self):
            return gpt2

    assert "adapter" in unsupported_reason(Wrapped())


def test_static_cache_crop_follows_dynamic_cache_semantics():
    cache = StaticCache(1, 1, 1, 8, 2, torch.float32, torch.device("cpu"))
    cache.length = 6
    cache.crop(-2)
    assert cache.get_seq_length() == 4
    cache.crop(10)
    assert cache.get_seq_length() == 4
    cache.crop(1)
    assert cache.get_seq_length() == 1


# -- through the engine ------------------------------------------------------------------------
def _engines(path):
    from aigc_code.engine import Engine
    from aigc_code.loading import load_model

    loaded = load_model(path)
    fast = Engine(loaded)
    old = os.environ.get(FAST_ENV)
    os.environ[FAST_ENV] = "0"
    try:
        plain = Engine(loaded)
    finally:
        os.environ.pop(FAST_ENV) if old is None else os.environ.__setitem__(FAST_ENV, old)
    assert fast._fast is not None and plain._fast is None
    return fast, plain


PREFIXES = ["def add(a, b):\n    return a + b\n\ndef add(a, b):\n    ", "import os\nfor i in range(10):\n    pri",
            "class Foo:\n    def __init__(self):\n        self.x = 1\n        self.x"]  # fmt: skip


def assert_same_greedy(one, other, lookup: int) -> None:
    """Two engines over the same weights complete PREFIXES with the same tokens and log-probs."""
    from aigc_code.generation import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=24, prompt_lookup=lookup)
    for prefix in PREFIXES:
        a, b = one.complete(prefix, "\n\nprint(1)\n", cfg), other.complete(prefix, "\n\nprint(1)\n", cfg)
        assert a.candidates[0].token_ids == b.candidates[0].token_ids
        assert a.text == b.text
        assert a.candidates[0].token_logprobs == pytest.approx(b.candidates[0].token_logprobs, abs=1e-4)


@pytest.mark.parametrize("lookup", [0, 8])
def test_engine_greedy_output_is_unchanged(tiny_model, lookup):
    assert_same_greedy(*_engines(tiny_model), lookup)


def test_engine_keystrokes_reuse_the_static_cache(tiny_model):
    from aigc_code.engine import load_engine
    from aigc_code.generation import GenerationConfig

    fast, _ = _engines(tiny_model)
    fresh = load_engine(tiny_model, reuse_kv=False)
    cfg = GenerationConfig(max_new_tokens=16)
    text = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"
    reused = 0
    for k in range(20, len(text), 9):
        a, b = fast.complete(text[:k], "", cfg), fresh.complete(text[:k], "", cfg)
        assert a.candidates[0].token_ids == b.candidates[0].token_ids
        reused += a.reused_tokens
    assert reused > 0
    assert isinstance(fast._kv[1], StaticCache)


def test_engine_n_candidates_and_stops_on_the_fast_path(tiny_model):
    from aigc_code.generation import GenerationConfig

    fast, plain = _engines(tiny_model)
    cfg = GenerationConfig(max_new_tokens=12, n=3, temperature=0.8, seed=3)
    a, b = fast.complete("def f(x):\n    ", "", cfg), plain.complete("def f(x):\n    ", "", cfg)
    assert [c.token_ids for c in a.candidates] == [c.token_ids for c in b.candidates]
    stop = GenerationConfig(max_new_tokens=30, stop=["\n"], prompt_lookup=0)
    result = fast.complete("x = 1\ny = 2\nz = ", "", stop)
    assert "\n" not in result.text and result.candidates[0].finish_reason in ("stop", "eos", "length")
