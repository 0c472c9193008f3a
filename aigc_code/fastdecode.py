"""A lean decoder for Llama-family checkpoints: the engine's fast path.

Hugging Face's eager modules cost tens of Python operations and module calls per layer and per
token; for small code models that overhead, not arithmetic, sets the decode speed. `FastLM`
runs the same weights (the checkpoint's own tensors, fused where that is exact: q/k/v and
gate/up) as a handful of torch ops per layer, with

- a preallocated (static) KV cache, `StaticCache`, that the engine keeps across keystrokes,
- logits only for the positions asked for (`logits_to_keep`, the last one in prefill),
- rotary embeddings as one complex multiply (q/k head dims are permuted once at build time so
  that HF's half-split rotation becomes pairwise; q.k products are unchanged),
- on CPU in fp32, 1..16-token steps (decode, prompt-lookup drafts) in one call of a small C
  kernel compiled on first use (`aigc_code.native`; AIGC_CODE_NATIVE=0 turns it off), over the
  same tensors (matrices then kept row-major) and the same cache,
- optionally a compiled single-token step (`torch.compile`, warmed at build so no compile lands
  on the first keystroke) and, on CUDA, the same step captured as a CUDA graph.

`build_fast_lm(model)` returns None for anything it does not support (the engine then uses the
HF model): only Llama / Qwen2 / Qwen3 / Mistral dense decoders with SiLU MLPs, full attention,
static rotary embeddings, no adapters. `unsupported_reason(model)` says why.
It is called like the HF model (`fast(input_ids=..., cache=..., logits_to_keep=...)`) and returns
an object with `.logits`, so the engine's decode loop works unchanged on either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aigc_code.native import NativeStep, native_library
from aigc_code.native.memory import huge_zeros, pack

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3", "mistral")
STATIC_ROPE = ("default", "linear", "llama3")
FAST_ENV = "AIGC_CODE_FAST"  # "0" turns the fast path off (debugging, A/B benchmarks)
COMPILE_ENV = "AIGC_CODE_COMPILE"  # "1"/"0": compile fixed-size steps (warmed at load); default: on CUDA only
MAX_CACHE = 4096  # tokens of static KV cache at most (the engine's context is capped to it)
HEAD_COPY_BYTES = 64 << 20  # output layers up to this size get a transposed copy (see FastLM.__init__)
PACK_BYTES = 256 << 20  # weights the native step reads, copied into huge pages up to this size (see _pack_for_native)
SLACK = 64  # cache rows past the context: room for prompt-lookup drafts fed at the very end


@dataclass
class Output:
    logits: torch.Tensor


class StaticCache:
    """Preallocated keys/values for every layer; `length` tokens are valid.

    Has the part of `transformers.DynamicCache`'s interface the engine uses (`get_seq_length`,
    `crop`, `batch_repeat_interleave`), so either can sit in the engine's KV-reuse slot.
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        if dtype == torch.float32 and torch.device(device).type == "cpu":  # one huge-page buffer (native.memory)
            rows = huge_zeros(2 * layers * batch * kv_heads * max_len * head_dim).view(2 * layers, *shape).unbind(0)
            self.keys, self.values = list(rows[:layers]), list(rows[layers:])
        else:
            self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
            self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = 0
        self.max_len = max_len
        self.native_pointers = None  # the native step's C arrays of these tensors' addresses (aigc_code.native)

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` tokens (negative: drop that many from the end), as DynamicCache does."""
        if max_length < 0:
            max_length = self.length - abs(max_length)
        self.length = max(0, min(self.length, max_length))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.keys = [k.repeat_interleave(repeats, dim=0) for k in self.keys]
        self.values = [v.repeat_interleave(repeats, dim=0) for v in self.values]


@dataclass
class _Layer:
    """One decoder layer's weights, laid out for the fast path.

    Float weights are pre-transposed ([in, out], for `torch.mm`/`addmm`) and fused (q|k|v, gate|up);
    q/k rows are permuted so that rotary pairs are adjacent. Quantized layers keep the model's own
    (dynamic int8) modules and HF's layout.
    """

    norm1: torch.Tensor
    qkv: object  # [in, out] fused weight, or (q, k, v) modules
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: object  # [in, out] weight, or a module
    o_bias: torch.Tensor | None
    norm2: torch.Tensor
    gate_up: object  # [in, 2 * intermediate] fused weight, or (gate, up) modules
    down: object  # [intermediate, out] weight, or a module


def unsupported_reason(model) -> str | None:
    """Why `model` cannot run on the fast path (None: it can)."""
    if hasattr(model, "get_base_model") or hasattr(model, "peft_config"):
        return "a LoRA adapter is attached"
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        return f"model type {getattr(cfg, 'model_type', None)!r} is not one of {', '.join(SUPPORTED_TYPES)}"
    return _config_reason(cfg) or _module_reason(model)


def _config_reason(cfg) -> str | None:
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "?"
    checks = [
        (getattr(cfg, "hidden_act", "silu") != "silu", f"activation {getattr(cfg, 'hidden_act', None)!r}"),
        (getattr(cfg, "pretraining_tp", 1) != 1, "pretraining_tp > 1"),
        (getattr(cfg, "mlp_bias", False), "MLP biases"),
        (rope_type not in STATIC_ROPE, f"rope type {rope_type!r}"),
        (bool(getattr(cfg, "use_sliding_window", False)) or _has_window(cfg), "sliding-window attention"),
        (getattr(cfg, "attention_dropout", 0.0) not in (0, 0.0, None), "attention dropout"),
    ]
    return next((why for bad, why in checks if bad), None)


def _has_window(cfg) -> bool:
    types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in types):
        return True
    return getattr(cfg, "model_type", "") == "mistral" and getattr(cfg, "sliding_window", None) is not None


def _module_reason(model) -> str | None:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "unexpected module layout"
    attn = inner.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(attn, name):
            return f"attention has no {name}"
    mlp = inner.layers[0].mlp
    if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return "the MLP is not gate/up/down"
    if getattr(attn, "scaling", attn.head_dim**-0.5) != attn.head_dim**-0.5:
        return "non-default attention scaling"
    return None


def build_fast_lm(model, max_len: int | None = None, compile_step: bool | None = None) -> FastLM | None:
    """The fast path for `model`, or None when unsupported (or turned off with AIGC_CODE_FAST=0)."""
    if os.environ.get(FAST_ENV, "1") == "0" or unsupported_reason(model) is not None:
        return None
    if compile_step is None:  # default: compiled + CUDA-graphed blocks on a GPU; eager on CPU (measured: no gain)
        setting = os.environ.get(COMPILE_ENV, "")
        compile_step = setting == "1" or (setting == "" and model.model.embed_tokens.weight.is_cuda)
    return FastLM(model, max_len=max_len, compile_step=compile_step)


def _is_float_linear(mod) -> bool:
    return type(mod) is torch.nn.Linear


def _interleave_perm(head_dim: int, heads: int) -> torch.Tensor:
    """Row order that turns HF's half-split rotary layout into (re, im) pairs, per head."""
    half = head_dim // 2
    one = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    return torch.cat([one + h * head_dim for h in range(heads)])


class FastLM:
    """Runs a Llama-family HF model's weights with few tensor ops a layer and a static KV cache."""

    def __init__(self, model, max_len: int | None = None, compile_step: bool = False, use_native: bool = True):
        cfg = model.config
        self.config = cfg
        inner = model.model
        attn0 = inner.layers[0].self_attn
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = attn0.head_dim
        self.embed = inner.embed_tokens.weight
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        self.eps = float(cfg.rms_norm_eps)
        self.max_len = min(int(max_len or cfg.max_position_embeddings or 2048), MAX_CACHE)
        self.cache_rows = self.max_len + SLACK
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head
        self.quantized = not _is_float_linear(attn0.q_proj)
        self.gqa = self.kv_heads != self.heads
        self.vocab = model.lm_head.out_features if hasattr(model.lm_head, "out_features") else self.embed.shape[0]
        # fp32 on CPU: one C call a step (aigc_code.native) instead of ~110 torch ops. Its matrix-vector
        # products read row-major [out, in] weights fastest, so matrices are then kept as [in, out] views
        # of row-major storage (torch's mm takes either; prefill's GEMMs run as fast)
        lib = native_library(self) if use_native else None
        self.row_major = lib is not None
        self.layers = [self._layer(layer) for layer in inner.layers]
        # a pre-transposed copy of a small output layer: mm on [in, out] is ~8% faster than linear at one row
        head = None if (self.quantized or self.row_major) else self.lm_head.weight
        small = head is not None and self.lm_head.bias is None and head.numel() * head.element_size() <= HEAD_COPY_BYTES
        self.head_t = head.t().contiguous() if small else None
        self.head_rows = self.lm_head.weight if self.row_major else None  # [vocab, hidden], what the native step reads
        if self.row_major:
            self._pack_for_native()
        self.freqs = self._rotary(inner, model)
        self.cos, self.sin = self.freqs.real.contiguous(), self.freqs.imag.contiguous()
        self.blocks: dict[int, object] = {}  # fixed token counts -> compiled (or graphed) step
        if compile_step and not self.quantized:
            self.compile_blocks()
        self.native = NativeStep(self, lib) if lib is not None else None

    # -- weights -----------------------------------------------------------------------------
    def _layer(self, layer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        q_norm = getattr(attn, "q_norm", None)
        k_norm = getattr(attn, "k_norm", None)
        q_norm = None if q_norm is None else q_norm.weight
        k_norm = None if k_norm is None else k_norm.weight
        norm1, norm2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        if self.quantized:
            qkv, gate_up = (attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)
            return _Layer(norm1, qkv, None, q_norm, k_norm, attn.o_proj, None, norm2, gate_up, mlp.down_proj)
        qperm = _interleave_perm(self.head_dim, self.heads).to(self.device)
        kperm = _interleave_perm(self.head_dim, self.kv_heads).to(self.device)
        hperm = _interleave_perm(self.head_dim, 1).to(self.device)
        qkv = torch.cat([attn.q_proj.weight[qperm], attn.k_proj.weight[kperm], attn.v_proj.weight])
        return _Layer(
            norm1,
            self._matrix(qkv),
            self._qkv_bias(attn, qperm, kperm),
            None if q_norm is None else q_norm[hperm].contiguous(),
            None if k_norm is None else k_norm[hperm].contiguous(),
            self._matrix(attn.o_proj.weight),
            attn.o_proj.bias,
            norm2,
            self._matrix(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
            self._matrix(mlp.down_proj.weight),
        )

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """A [out, in] weight as the [in, out] operand of mm: a view of row-major storage for the native step."""
        return weight.contiguous().t() if self.row_major else weight.t().contiguous()

    def _pack_for_native(self) -> None:
        """Move the matrices (and the output layer) into huge-page buffers (aigc_code.native.memory).

        Everything up to PACK_BYTES; past that only the fused q|k|v and gate|up, which are copies
        already (moving them costs no memory), while o/down stay views of the model's weights and
        the output layer stays the model's: copying those would cost more memory than the TLB misses
        they save are worth.
        """
        everything = 4 * sum(
            getattr(layer, n).numel() for layer in self.layers for n in ("qkv", "o", "gate_up", "down")
        )
        small = everything + 4 * self.head_rows.numel() <= PACK_BYTES
        names = ("qkv", "o", "gate_up", "down") if small else ("qkv", "gate_up")
        # small: one buffer for all (the head too); large: one a layer, so both copies coexist one layer long
        groups = [self.layers] if small else [[layer] for layer in self.layers]
        for group in groups:
            slots = [(layer, name) for layer in group for name in names]
            extra = [self.head_rows] if small else []
            mats = pack([getattr(layer, name).t() for layer, name in slots] + extra)
            if small:
                self.head_rows = mats.pop()
            for (layer, name), mat in zip(slots, mats, strict=True):
                setattr(layer, name, mat.t())

    def _qkv_bias(self, attn, qperm, kperm) -> torch.Tensor | None:
        biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
        if all(b is None for b in biases):
            return None
        sizes = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
        parts = [
            b if b is not None else torch.zeros(n, dtype=self.dtype, device=self.device)
            for b, n in zip(biases, sizes, strict=True)
        ]
        return torch.cat([parts[0][qperm], parts[1][kperm], parts[2]])

    def _rotary(self, inner, model) -> torch.Tensor:
        """cos + i sin for every position, from the model's own rotary module (its scaling included)."""
        positions = torch.arange(self.max_len + SLACK, device=self.device).unsqueeze(0)
        probe = torch.zeros(1, 1, self.head_dim, dtype=torch.float32, device=self.device)
        rotary = getattr(inner, "rotary_emb", None)
        cos, sin = rotary(probe, positions)
        half = self.head_dim // 2
        cos, sin = cos[0, :, :half].float(), sin[0, :, :half].float()
        return torch.complex(cos, sin)  # [max_len, head_dim/2]

    # -- caches ------------------------------------------------------------------------------
    def new_cache(self, batch: int = 1) -> StaticCache:
        return StaticCache(
            len(self.layers), batch, self.kv_heads, self.cache_rows, self.head_dim, self.dtype, self.device
        )

    # -- forward -----------------------------------------------------------------------------
    def __call__(
        self,
        input_ids: torch.Tensor,
        cache: StaticCache | None = None,
        logits_to_keep: int = 0,
        past_key_values: StaticCache | None = None,
        **_ignored,
    ) -> Output:
        """Feed `input_ids` [batch, T] after the cache's tokens; logits for the last `logits_to_keep` (0: all)."""
        cache = cache if cache is not None else past_key_values
        pos, count = cache.length, input_ids.shape[1]
        if pos + count > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} tokens; {pos + count} were asked for")
        block = self._block_for(input_ids.shape[0], count, pos, cache)
        if self.native is not None and self.native.accepts(input_ids, cache):
            logits = self.native(input_ids, cache, logits_to_keep)
        elif block is not None:
            logits = self._run_block(block, input_ids, cache)[:, :count]
        else:
            logits = self._forward(input_ids, cache, pos, logits_to_keep)
        cache.length = pos + count
        return Output(logits[:, -logits_to_keep:] if logits_to_keep else logits)

    def _block_for(self, batch: int, count: int, pos: int, cache: StaticCache):
        """The smallest compiled block that holds `count` new tokens at `pos` (None: run eagerly)."""
        if batch != 1 or not self.blocks:
            return None
        size = min((k for k in self.blocks if k >= count), default=None)
        if size is None or pos + size > cache.max_len:
            return None
        return size

    def _run_block(self, size: int, ids: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        # pad to the block (rows past `count` write cache slots that stay past its length); always a fresh
        # tensor, so that the compiled graph's guards see the same kind of input every time
        ids = torch.cat([ids, ids[:, -1:].expand(1, size - ids.shape[1])], dim=1)
        pos = torch.tensor([cache.length], device=self.device)
        with torch.compiler.set_stance(skip_guard_eval_unsafe=True):  # the guards cost more than the step
            return self.blocks[size](ids, pos, cache.keys, cache.values)

    def _forward(self, ids: torch.Tensor, cache: StaticCache, pos: int, keep: int) -> torch.Tensor:
        """Eager forward of `ids` [batch, T] at cache position `pos` (prefill, drafts, n > 1)."""
        batch, count = ids.shape
        end = pos + count
        x = F.embedding(ids.reshape(-1), self.embed)  # [batch * T, hidden]: every matmul is 2-D
        freqs = self.freqs[pos:end].view(1, count, 1, -1)
        mask = None
        if count > 1:
            rows = torch.arange(pos, end, device=self.device).unsqueeze(1)
            mask = torch.arange(end, device=self.device).unsqueeze(0) <= rows

        exact = x.dtype == torch.float32  # no casts around the complex multiply (two calls a layer fewer)

        def rope(qk):  # [batch, T, heads, head_dim] in pair layout -> rotated, same shape
            pairs = torch.view_as_complex(
                (qk if exact else qk.float()).reshape(batch, count, -1, self.head_dim // 2, 2)
            )
            rotated = torch.view_as_real(pairs * freqs).view(qk.shape)
            return rotated if exact else rotated.to(x.dtype)

        for i, layer in enumerate(self.layers):
            keys, values = cache.keys[i], cache.values[i]

            def attend(q, k, v, keys=keys, values=values):
                keys[:, :, pos:end] = k
                values[:, :, pos:end] = v
                return F.scaled_dot_product_attention(
                    q, keys[:, :, :end], values[:, :, :end], attn_mask=mask, enable_gqa=self.gqa
                )

            x = self._layer_step(layer, x, batch, count, rope, attend)
        if keep:
            x = x.view(batch, count, -1)[:, -keep:].reshape(-1, x.shape[-1])
        return self._logits(x).view(batch, -1, self.vocab)

    def _layer_step(self, layer: _Layer, x, batch: int, count: int, rope, attend):
        """One decoder layer on hidden states x [batch * T, hidden]; `attend` writes the cache and attends."""
        hd, nq, nk = self.head_dim, self.heads, self.kv_heads
        h = F.rms_norm(x, (x.shape[-1],), layer.norm1, self.eps)
        qk, v = self._project_qkv(layer, h, batch, count)
        if layer.q_norm is not None:
            qk = torch.cat(
                [
                    F.rms_norm(qk[:, :, :nq], (hd,), layer.q_norm, self.eps),
                    F.rms_norm(qk[:, :, nq:], (hd,), layer.k_norm, self.eps),
                ],
                dim=2,
            )
        if self.quantized:  # HF's half-split layout: bring rotary pairs together first
            qk = qk.view(batch, count, nq + nk, 2, hd // 2).transpose(-1, -2).reshape(batch, count, nq + nk, hd)
        qk = rope(qk).transpose(1, 2)  # [batch, heads, T, head_dim]
        att = attend(qk[:, :nq], qk[:, nq:], v.view(batch, count, nk, hd).transpose(1, 2))
        att = att.transpose(1, 2).reshape(batch * count, nq * hd)
        if self.quantized:
            x = x + layer.o(att)
            h = F.rms_norm(x, (x.shape[-1],), layer.norm2, self.eps)
            gate, up = (m(h) for m in layer.gate_up)
            return x + layer.down(F.silu(gate) * up)
        x = torch.addmm(x, att, layer.o) if layer.o_bias is None else torch.addmm(x + layer.o_bias, att, layer.o)
        h = F.rms_norm(x, (x.shape[-1],), layer.norm2, self.eps)
        gate_up = torch.mm(h, layer.gate_up)
        half = gate_up.shape[-1] // 2
        return torch.addmm(x, F.silu(gate_up[:, :half]) * gate_up[:, half:], layer.down)

    def _project_qkv(self, layer: _Layer, h, batch: int, count: int):
        """q|k as [batch, T, q_heads + kv_heads, head_dim] and v as [batch * T, kv_heads * head_dim]."""
        hd, nqk = self.head_dim, self.heads + self.kv_heads
        if self.quantized:
            q, k, v = (m(h) for m in layer.qkv)
            return torch.cat([q, k], dim=-1).view(batch, count, nqk, hd), v
        qkv = torch.mm(h, layer.qkv) if layer.qkv_bias is None else torch.addmm(layer.qkv_bias, h, layer.qkv)
        return qkv[:, : nqk * hd].view(batch, count, nqk, hd), qkv[:, nqk * hd :]

    def _logits(self, x) -> torch.Tensor:
        x = F.rms_norm(x, (x.shape[-1],), self.final_norm, self.eps)
        if self.quantized:
            return self.lm_head(x)
        if self.head_t is not None:
            return torch.mm(x, self.head_t)
        head = self.head_rows if self.head_rows is not None else self.lm_head.weight
        return F.linear(x, head, self.lm_head.bias)

    def _forward_fixed(self, ids: torch.Tensor, pos: torch.Tensor, keys: list, values: list) -> torch.Tensor:
        """`ids.shape[1]` tokens (batch 1) from tensor position `pos`, attending the whole static cache.

        Every shape is fixed (positions are data, unused cache rows are masked), so this compiles to
        one graph per block size and can be captured as a CUDA graph. Rotary embeddings are real
        arithmetic here: inductor does not generate code for complex numbers.
        """
        count = ids.shape[1]
        positions = pos + torch.arange(count, device=self.device)
        x = F.embedding(ids.reshape(-1), self.embed)
        cos = self.cos.index_select(0, positions).view(1, count, 1, -1)
        sin = self.sin.index_select(0, positions).view(1, count, 1, -1)
        mask = torch.arange(keys[0].shape[2], device=self.device).view(1, -1) <= positions.view(-1, 1)

        def rope(qk):
            pairs = qk.float().reshape(1, count, -1, self.head_dim // 2, 2)
            re, im = pairs[..., 0], pairs[..., 1]
            return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).view(qk.shape).to(x.dtype)

        for i, layer in enumerate(self.layers):

            def attend(q, k, v, kc=keys[i], vc=values[i]):
                kc.index_copy_(2, positions, k)
                vc.index_copy_(2, positions, v)
                return F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, enable_gqa=self.gqa)

            x = self._layer_step(layer, x, 1, count, rope, attend)
        return self._logits(x).view(1, count, self.vocab)

    # -- compiled steps ----------------------------------------------------------------------
    def compile_blocks(self, sizes: tuple[int, ...] = (1, 9), compiler: str | None = "inductor") -> None:
        """Compile the fixed-size step for each block size and run it once (so no request pays the compile).

        Size 1 is the plain decode step; 9 holds a token plus 8 prompt-lookup drafts (the engine's default).
        On CUDA each compiled block is also captured as a CUDA graph.
        """
        # compiler=None: the same fixed-size step, uncompiled (what tests on a CPU without a GPU can check)
        step = (
            self._forward_fixed
            if compiler is None
            else torch.compile(self._forward_fixed, backend=compiler, dynamic=False, fullgraph=True)
        )
        with torch.inference_mode():
            cache = self.new_cache()  # one set of buffers for every block (CUDA graphs share them)
            for size in sizes:
                ids = torch.zeros(1, size, dtype=torch.long, device=self.device)
                pos = torch.zeros(1, dtype=torch.long, device=self.device)
                for _ in range(2):
                    step(ids, pos, cache.keys, cache.values)
                self.blocks[size] = _CudaGraphStep(step, ids, cache) if self.device.type == "cuda" else step


class _CudaGraphStep:
    """A fixed-size step captured as a CUDA graph over static id/position/cache buffers.

    The graph reads and writes its own cache tensors; a request's cache adopts them on first use
    (its valid rows are copied in), so KV reuse across requests keeps working without copies.
    """

    def __init__(self, step, ids: torch.Tensor, cache: StaticCache):
        self.ids = ids.clone()
        self.pos = torch.zeros(1, dtype=torch.long, device=ids.device)
        self.keys, self.values = cache.keys, cache.values
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step(self.ids, self.pos, self.keys, self.values)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(self.ids, self.pos, self.keys, self.values)

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, keys: list, values: list) -> torch.Tensor:
        if keys[0].data_ptr() != self.keys[0].data_ptr():
            for mine, theirs in zip(self.keys + self.values, keys + values, strict=True):
                mine.copy_(theirs)
            keys[:], values[:] = self.keys, self.values  # the request's cache now lives in the graph's buffers
        self.ids.copy_(ids)
        self.pos.copy_(pos)
        self.graph.replay()
        return self.out.clone()


def keep_last_kwargs(model) -> dict:
    """`{"logits_to_keep": 1}` when the model's forward takes it (prefill then computes one row of logits)."""
    import inspect

    if isinstance(model, FastLM):
        return {"logits_to_keep": 1}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
