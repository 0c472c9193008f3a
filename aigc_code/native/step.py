"""The native decode step bound to one FastLM: its tensors' addresses in a C struct, one ctypes call a step.

`NativeStep(fast, lib)` points decode.c at the FastLM's own weight tensors (not copied here: a
FastLM built for the native step keeps its matrices row-major, see `FastLM.row_major`) and is
called with a StaticCache, whose key/value rows it writes in place. One call at a time per
NativeStep (its scratch buffer is shared, and ctypes releases the GIL during the call): the
engine's lock sees to that. `unsupported_reason(fast)` says when it cannot run (not fp32, not CPU,
int8). Its first one-token steps calibrate decode.c's prefetch hint (`prefetch`: "stream" or "cached").
"""

from __future__ import annotations

import ctypes
import statistics
import time

import torch

from aigc_code.native.build import load_library

MAX_TOKENS = 16  # a step, or a step plus prompt-lookup drafts; longer feeds (prefill) go to torch's GEMMs
STREAM, CACHED = 1, 0  # decode.c's `stream` values: non-temporal prefetch, or prefetch into L2
# Which hint is faster depends on the CPU's caches (2.5x either way on two machines), so the first one-token
# steps are timed in blocks of one hint each, and the faster hint is kept for good. Blocks, not alternate
# steps: a step leaves the weights where its hint put them, which skews the next step's timing (measured:
# alternating picked the slower hint), so each block's first steps are not counted.
CALIBRATION = (STREAM, CACHED, STREAM, CACHED)
BLOCK_STEPS, SETTLE_STEPS = 8, 3
MATRICES = ("qkv", "o", "gate_up", "down")
LAYER_FIELDS = ("norm1", "qkv", "qkv_bias", "q_norm", "k_norm", "o", "o_bias", "norm2", "gate_up", "down")


class _Layer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in LAYER_FIELDS]


class _Model(ctypes.Structure):
    _fields_ = [
        *[(name, ctypes.c_int32) for name in ("layers", "hidden", "heads", "kv_heads", "head_dim", "inter", "vocab")],
        ("cache_rows", ctypes.c_int32),
        ("stream", ctypes.c_int32),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
        *[(name, ctypes.c_void_p) for name in ("embed", "final_norm", "head", "head_bias", "cos", "sin")],
        ("layer", ctypes.POINTER(_Layer)),
    ]


def unsupported_reason(fast) -> str | None:
    """Why the native step cannot run this FastLM (None: it can)."""
    if fast.quantized:
        return "quantized weights"
    if fast.dtype != torch.float32:
        return f"dtype {fast.dtype} (fp32 only)"
    if fast.device.type != "cpu":
        return f"device {fast.device.type}"
    if fast.heads % fast.kv_heads or fast.head_dim % 2:
        return "heads not a multiple of kv heads, or an odd head_dim"
    return None


def _ptr(tensor: torch.Tensor | None) -> int | None:
    if tensor is None:
        return None
    if not tensor.is_contiguous() or tensor.dtype != torch.float32:
        raise ValueError("the native step needs contiguous fp32 tensors")
    return tensor.data_ptr()


class NativeStep:
    """decode.c's forward over a FastLM's tensors: `step(ids [1, T], cache, keep)` -> logits [1, T or keep, vocab]."""

    def __init__(self, fast, lib: ctypes.CDLL):
        self.lib = lib
        self.vocab = fast.vocab
        head, bias = fast.head_rows.contiguous(), getattr(fast.lm_head, "bias", None)
        self._keep = [head, bias, fast.cos, fast.sin]  # alive as long as the struct points at them
        self.layers = (_Layer * len(fast.layers))(*[self._layer(layer) for layer in fast.layers])
        self.model = _Model(
            len(fast.layers), fast.embed.shape[1], fast.heads, fast.kv_heads, fast.head_dim,
            fast.layers[0].down.shape[0], fast.vocab, fast.cache_rows, STREAM, fast.eps,
            fast.head_dim**-0.5, _ptr(fast.embed), _ptr(fast.final_norm), _ptr(head), _ptr(bias),
            _ptr(fast.cos), _ptr(fast.sin), self.layers,
        )  # fmt: skip
        if fast.cos.shape[0] < self.model.cache_rows:
            raise ValueError("rotary tables shorter than the cache")
        self._forward = lib.aigc_forward
        self._forward.restype = ctypes.c_int32
        self._forward.argtypes = [ctypes.POINTER(_Model), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        lib.aigc_work_floats.restype = ctypes.c_int64
        lib.aigc_work_floats.argtypes = [ctypes.POINTER(_Model), ctypes.c_int32]
        self.scratch = torch.empty(lib.aigc_work_floats(ctypes.byref(self.model), MAX_TOKENS), dtype=torch.float32)
        self._model_ref = ctypes.byref(self.model)
        self._timings: list[tuple[int, float]] | None = []  # (hint, seconds) while calibrating, then None

    @property
    def prefetch(self) -> str:
        """The prefetch hint in use: "stream" or "cached" (the faster of the two once calibrated)."""
        return "stream" if self.model.stream == STREAM else "cached"

    def _calibrating_hint(self, count: int) -> int | None:
        """The hint to time this call with, while calibrating one-token steps (None: not timed)."""
        if self._timings is None or count != 1:
            return None
        hint = CALIBRATION[len(self._timings) // BLOCK_STEPS]
        self.model.stream = hint
        return hint

    def _record(self, hint: int, seconds: float) -> None:
        self._timings.append((hint, seconds))
        if len(self._timings) < len(CALIBRATION) * BLOCK_STEPS:
            return
        settled = [(h, s) for i, (h, s) in enumerate(self._timings) if i % BLOCK_STEPS >= SETTLE_STEPS]
        self.model.stream = min((STREAM, CACHED), key=lambda h: statistics.median(s for k, s in settled if k == h))
        self._timings = None

    def _layer(self, layer) -> _Layer:
        """FastLM keeps matrices as [in, out] views of row-major [out, in] storage (`FastLM.row_major`)."""
        return _Layer(*[_ptr(getattr(layer, name).t() if name in MATRICES else getattr(layer, name))
                        for name in LAYER_FIELDS])  # fmt: skip

    def _cache_pointers(self, cache):
        """The cache's per-layer key/value addresses as C arrays (built once per set of cache tensors)."""
        stamp = cache.keys[0].data_ptr()
        held = getattr(cache, "native_pointers", None)
        if held is None or held[0] != stamp:
            if cache.keys[0].shape[0] != 1 or cache.max_len != self.model.cache_rows:
                raise ValueError("the native step runs one sequence on its own model's cache")
            array = ctypes.c_void_p * len(cache.keys)
            held = (stamp, array(*[_ptr(k) for k in cache.keys]), array(*[_ptr(v) for v in cache.values]))
            cache.native_pointers = held
        return held[1], held[2]

    def accepts(self, ids: torch.Tensor, cache) -> bool:
        return ids.shape[0] == 1 and ids.shape[1] <= MAX_TOKENS and cache.keys[0].shape[0] == 1

    def __call__(self, ids: torch.Tensor, cache, keep: int = 0) -> torch.Tensor:
        """Feed `ids` [1, T] at `cache.length` (the caller advances the length); logits of the last `keep` (0: all)."""
        count = ids.shape[1]
        keep = count if keep <= 0 else min(keep, count)
        if ids.dtype != torch.long or not ids.is_contiguous():
            ids = ids.to(torch.long).contiguous()
        keys, values = self._cache_pointers(cache)
        logits = torch.empty((1, keep, self.vocab), dtype=torch.float32)
        hint = self._calibrating_hint(count)
        started = time.perf_counter()
        rc = self._forward(self._model_ref, keys, values, ids.data_ptr(), count, cache.length, keep,
                           logits.data_ptr(), self.scratch.data_ptr())  # fmt: skip
        if hint is not None and rc == 0:
            self._record(hint, time.perf_counter() - started)
        if rc != 0:
            raise ValueError(f"native decode step refused its input (code {rc})")
        return logits


def native_library(fast) -> ctypes.CDLL | None:
    """The compiled step if it can run `fast` (None: unsupported model, disabled, or no compiler: torch runs)."""
    return None if unsupported_reason(fast) is not None else load_library()
