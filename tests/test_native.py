"""The native (C) decode step: same logits and cache rows as the torch fast path, same engine output, fallbacks."""

from __future__ import annotations

import os

import pytest
import torch
from test_fastdecode import TINY, VARIANTS, _model, assert_same_greedy

from aigc_code.fastdecode import FastLM, build_fast_lm
from aigc_code.native import NATIVE_ENV, load_library
from aigc_code.native import build as native_build

pytestmark = pytest.mark.skipif(native_build.compiler() is None, reason="no C compiler")


@pytest.fixture(scope="module", autouse=True)
def _built():
    """The build runs here (cached under ~/.cache/aigc-code/native), and must succeed on a machine with cc."""
    old = os.environ.pop(NATIVE_ENV, None)
    assert load_library() is not None, native_build._loaded.get("error")
    yield
    if old is not None:
        os.environ[NATIVE_ENV] = old


def _pair(model) -> tuple[FastLM, FastLM]:
    """The same model's fast path with the native step and with the torch step."""
    native, torch_step = FastLM(model), FastLM(model, use_native=False)
    assert native.native is not None and torch_step.native is None
    return native, torch_step


def _feed(fast: FastLM, ids: torch.Tensor, chunks: list[int], keep: int = 0):
    cache, out, start = fast.new_cache(), [], 0
    with torch.inference_mode():
        for size in chunks:
            out.append(fast(input_ids=ids[:, start : start + size], cache=cache, logits_to_keep=keep).logits)
            start += size
    return out, cache


@pytest.mark.parametrize("name", list(VARIANTS))
def test_native_steps_match_the_torch_step_and_write_the_same_cache_rows(name):
    kind, extra = VARIANTS[name]
    native, torch_step = _pair(_model(kind, **extra))
    ids = torch.randint(0, TINY["vocab_size"], (1, 60))
    chunks = [23, 1, 1, 1, 9, 1, 16, 1, 7]  # prefill (torch), single steps and drafts (native) at several positions
    got, cache = _feed(native, ids, chunks)
    ref, ref_cache = _feed(torch_step, ids, chunks)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert cache.length == ref_cache.length == 60
    for mine, theirs in zip(cache.keys + cache.values, ref_cache.keys + ref_cache.values, strict=True):
        torch.testing.assert_close(mine[:, :, :60], theirs[:, :, :60], atol=1e-5, rtol=1e-5)


def test_native_step_matches_hugging_face_and_keeps_only_the_last_logits():
    model = _model("qwen3", head_dim=24)
    native, _ = _pair(model)
    ids = torch.randint(0, TINY["vocab_size"], (1, 30))
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        cache = native.new_cache()
        native(input_ids=ids[:, :20], cache=cache, logits_to_keep=1)
        last = native(input_ids=ids[:, 20:30], cache=cache, logits_to_keep=1).logits  # 10 tokens, native
        assert last.shape == (1, 1, TINY["vocab_size"])
        torch.testing.assert_close(last[0, 0], ref[0, 29], atol=1e-4, rtol=1e-4)
        cache.crop(-4)  # a rejected draft rolled back, then decoded again
        again = native(input_ids=ids[:, 26:27], cache=cache).logits
    torch.testing.assert_close(again[0, 0], ref[0, 26], atol=1e-4, rtol=1e-4)


def test_the_shipped_model_steps_match():
    from aigc_code.loading import load_model, resolve_model_path

    model = load_model(resolve_model_path(None)).model
    native, torch_step = _pair(model)
    ids = torch.randint(0, model.config.vocab_size, (1, 200))
    chunks = [150, 1, 1, 9, 1, 30, 1, 1, 1, 5]
    got, cache = _feed(native, ids, chunks)
    ref, ref_cache = _feed(torch_step, ids, chunks)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache.keys[-1][:, :, :200], ref_cache.keys[-1][:, :, :200], atol=1e-5, rtol=1e-5)


def test_both_prefetch_hints_compute_the_same_and_calibration_keeps_one():
    from aigc_code.native import step as native_step

    native, _ = _pair(_model("qwen2"))
    ids = torch.randint(0, TINY["vocab_size"], (1, 12))
    results = {}
    for hint in (native_step.STREAM, native_step.CACHED):
        native.native._timings = None  # calibration off: this hint for every step
        native.native.model.stream = hint
        results[hint] = _feed(native, ids, [4] + [1] * 8)[0]
    for a, b in zip(results[native_step.STREAM], results[native_step.CACHED], strict=True):
        assert torch.equal(a, b)  # a prefetch hint changes where data is cached, never the arithmetic

    fresh = FastLM(_model("llama"))
    hints = []
    with torch.inference_mode():
        cache = fresh.new_cache()
        fresh(input_ids=ids[:, :3], cache=cache)  # a 3-token feed is not timed
        assert fresh.native._timings == []
        for _ in range(len(native_step.CALIBRATION) * native_step.BLOCK_STEPS):
            fresh(input_ids=ids[:, :1], cache=cache)
            hints.append(fresh.native.model.stream)
    assert hints[:-1] == [h for h in native_step.CALIBRATION for _ in range(native_step.BLOCK_STEPS)][:-1]
    assert fresh.native._timings is None and fresh.native.prefetch in ("stream", "cached")


def test_batched_and_long_feeds_use_the_torch_step():
    native, torch_step = _pair(_model("llama"))
    ids = torch.randint(0, TINY["vocab_size"], (1, 12))
    with torch.inference_mode():
        cache, ref_cache = native.new_cache(), torch_step.new_cache()
        native(input_ids=ids, cache=cache, logits_to_keep=1)
        torch_step(input_ids=ids, cache=ref_cache, logits_to_keep=1)
        cache.batch_repeat_interleave(2)
        ref_cache.batch_repeat_interleave(2)
        nxt = torch.tensor([[3], [7]])
        assert not native.native.accepts(nxt, cache)
        torch.testing.assert_close(
            native(input_ids=nxt, cache=cache).logits, torch_step(input_ids=nxt, cache=ref_cache).logits
        )


def test_disabled_or_unsupported_models_run_the_torch_step(monkeypatch):
    from aigc_code.loading import quantize_int8

    monkeypatch.setenv(NATIVE_ENV, "0")
    assert build_fast_lm(_model("llama")).native is None
    monkeypatch.delenv(NATIVE_ENV)
    bf16 = build_fast_lm(_model("llama").to(torch.bfloat16))
    int8 = build_fast_lm(quantize_int8(_model("llama"), torch.device("cpu"), "int8"))
    for fast in (bf16, int8):
        assert fast.native is None and not fast.row_major
        out, cache = _feed(fast, torch.randint(0, TINY["vocab_size"], (1, 10)), [8, 1, 1])
        assert cache.length == 10 and out[-1].shape == (1, 1, TINY["vocab_size"])


def test_a_failed_build_falls_back_or_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(native_build, "_loaded", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    assert load_library() is None
    fast = build_fast_lm(_model("llama"))
    assert fast.native is None and not fast.row_major
    monkeypatch.setenv(NATIVE_ENV, "1")
    with pytest.raises(native_build.NativeBuildError):
        load_library()


def test_the_library_is_cached_and_written_atomically(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cc = native_build.compiler()
    path = native_build.compile_library(cc, native_build.PORTABLE_FLAGS)
    assert path.parent == tmp_path / "aigc-code" / "native" and path.suffix == ".so"
    stamp = path.stat().st_mtime_ns
    assert native_build.compile_library(cc, native_build.PORTABLE_FLAGS) == path
    assert path.stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(path.parent.glob("*.partial"))
    assert native_build.library_path(cc, native_build.NATIVE_FLAGS) != path  # flags are part of the key


# -- through the engine ------------------------------------------------------------------------
def _engines(path):
    from aigc_code.engine import Engine
    from aigc_code.loading import load_model

    loaded = load_model(path)
    native = Engine(loaded)
    os.environ[NATIVE_ENV] = "0"
    try:
        plain = Engine(loaded)
    finally:
        os.environ.pop(NATIVE_ENV)
    assert native._fast.native is not None and plain._fast.native is None
    return native, plain


@pytest.mark.parametrize("lookup", [0, 8])
def test_engine_greedy_output_is_unchanged(tiny_model, lookup):
    assert_same_greedy(*_engines(tiny_model), lookup)


def test_engine_on_the_shipped_model_decodes_the_same_with_kv_reuse():
    from aigc_code.generation import GenerationConfig
    from aigc_code.loading import resolve_model_path

    native, plain = _engines(resolve_model_path(None))
    text = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\ndef main():\n"
    reused = 0
    for lookup in (0, 8):
        cfg = GenerationConfig(max_new_tokens=32, prompt_lookup=lookup)
        for k in range(30, len(text), 17):  # keystrokes: the kept cache is extended natively
            a, b = native.complete(text[:k], "", cfg), plain.complete(text[:k], "", cfg)
            assert a.candidates[0].token_ids == b.candidates[0].token_ids
            reused += a.reused_tokens
    assert reused > 0


def test_huge_page_buffers_are_zeroed_aligned_copies():
    from aigc_code.native.memory import PAGE, huge_zeros, pack

    zeros = huge_zeros(PAGE // 4 * 3)
    assert zeros.data_ptr() % PAGE == 0 and not zeros.any()
    parts = [torch.randn(1000, 300), torch.randn(7), torch.randn(300, 1000).t()]
    for part, copy in zip(parts, pack(parts), strict=True):
        assert torch.equal(part, copy) and copy.is_contiguous() and copy.data_ptr() % 64 == 0
    cache = build_fast_lm(_model("llama")).new_cache()
    assert not any(k.any() for k in cache.keys + cache.values)


def test_large_models_pack_only_the_fused_copies(monkeypatch):
    import aigc_code.fastdecode as fastdecode

    model = _model("qwen2")
    monkeypatch.setattr(fastdecode, "PACK_BYTES", 0)  # as if the model were past 256 MB
    native, torch_step = _pair(model)
    attn = model.model.layers[0].self_attn
    assert native.layers[0].o.data_ptr() == attn.o_proj.weight.data_ptr()  # o stays a view: no copy
    assert native.head_rows is model.lm_head.weight
    ids = torch.randint(0, TINY["vocab_size"], (1, 20))
    got, _ = _feed(native, ids, [17, 1, 1, 1])
    ref, _ = _feed(torch_step, ids, [17, 1, 1, 1])
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(ref, 1), atol=1e-4, rtol=1e-4)


def test_the_portable_build_computes_the_same_logits():
    """The fallback build (no -march=native) is the same code on plain x86-64/other CPUs' baseline."""
    import ctypes

    from aigc_code.native.step import NativeStep

    model = _model("llama", tie_word_embeddings=True)
    native, torch_step = _pair(model)
    lib = ctypes.CDLL(str(native_build.compile_library(native_build.compiler(), native_build.PORTABLE_FLAGS)))
    native.native = NativeStep(native, lib)
    ids = torch.randint(0, TINY["vocab_size"], (1, 24))
    got, _ = _feed(native, ids, [20, 1, 3])
    ref, _ = _feed(torch_step, ids, [20, 1, 3])
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(ref, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama-gqa-tied", "qwen3-qk-norm"])
def test_a_draft_gives_bit_identical_logits_to_single_steps(name):
    """Same code per token whatever the feed size: prompt lookup cannot change greedy output, even at near-ties."""
    kind, extra = VARIANTS[name]
    native = FastLM(_model(kind, **extra))
    ids = torch.randint(0, TINY["vocab_size"], (1, 30))
    steps, _ = _feed(native, ids, [20] + [1] * 10)
    draft, _ = _feed(native, ids, [20, 10])
    assert torch.equal(torch.cat(steps[1:], 1), draft[1])
