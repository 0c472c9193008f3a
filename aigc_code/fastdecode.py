"""A lean decoder for Llama-family checkpoints: the engine's fast path.

Hugging Face's eager modules cost tens of Python operations and module calls per layer and per
token; for small code models that overhead, not arithmetic, sets the decode speed. `FastLM`
runs the same weights (the checkpoint's own tensors, fused where that is exact: q/k/v and
gate/up) as a handful of torch ops per layer, with

- a preallocated (static) KV cache, `StaticCache`, that the engine keeps across keystrokes,
- logits only for the positions asked for (`logits_to_keep`, the last one in prefill),
- rotary embeddings as one complex multiply (q/k head dims are permuted once at build time so
  that HF's half-split rotation becomes pairwise; q.k products are unchanged),
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

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3", "mistral")
STATIC_ROPE = ("default", "linear", "llama3")
FAST_ENV = "AIGC_CODE_FAST"  # "0" turns the fast path off (debugging, A/B benchmarks)
COMPILE_ENV = "AIGC_CODE_COMPILE"  # "1" compiles the single-token step on CPU (warmed at load)
MAX_CACHE = 4096  # tokens of static KV cache at most (the engine's context is capped to it)
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
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = 0
        self.max_len = max_len

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
    norm1: torch.Tensor
    qkv: object  # fused weight tensor, or a tuple of (quantized) modules called one by one
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: object
    norm2: torch.Tensor
    gate_up: object
    down: object


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
    if compile_step is None:
        compile_step = os.environ.get(COMPILE_ENV, "0") == "1"
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

    def __init__(self, model, max_len: int | None = None, compile_step: bool = False):
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
        self.final_norm = inner.norm.weight
        self.lm_head = model.lm_head
        self.quantized = not _is_float_linear(attn0.q_proj)
        self.layers = [self._layer(layer) for layer in inner.layers]
        self.freqs = self._rotary(inner, model)
        self._step = None
        self._graph = None
        if compile_step:
            self._step = torch.compile(self._forward_one, dynamic=False, fullgraph=False)
        if compile_step or self.device.type == "cuda":
            self.warm()

    # -- weights -----------------------------------------------------------------------------
    def _layer(self, layer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        qperm = _interleave_perm(self.head_dim, self.heads).to(self.device)
        kperm = _interleave_perm(self.head_dim, self.kv_heads).to(self.device)
        hperm = _interleave_perm(self.head_dim, 1).to(self.device)
        q_norm = getattr(attn, "q_norm", None)
        k_norm = getattr(attn, "k_norm", None)
        if self.quantized:
            return _Layer(
                layer.input_layernorm.weight,
                (attn.q_proj, attn.k_proj, attn.v_proj),
                None,
                None if q_norm is None else q_norm.weight,
                None if k_norm is None else k_norm.weight,
                attn.o_proj,
                layer.post_attention_layernorm.weight,
                (mlp.gate_proj, mlp.up_proj),
                mlp.down_proj,
            )
        qkv = torch.cat([attn.q_proj.weight[qperm], attn.k_proj.weight[kperm], attn.v_proj.weight])
        biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
        bias = None
        if any(b is not None for b in biases):
            sizes = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
            parts = [
                b if b is not None else torch.zeros(n, dtype=self.dtype, device=self.device)
                for b, n in zip(biases, sizes)
            ]
            bias = torch.cat([parts[0][qperm], parts[1][kperm], parts[2]])
        return _Layer(
            layer.input_layernorm.weight,
            qkv.contiguous(),
            bias,
            None if q_norm is None else q_norm.weight[hperm].contiguous(),
            None if k_norm is None else k_norm.weight[hperm].contiguous(),
            (attn.o_proj.weight, attn.o_proj.bias),
            layer.post_attention_layernorm.weight,
            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
            mlp.down_proj.weight,
        )

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
            len(self.layers), batch, self.kv_heads, self.max_len + SLACK, self.head_dim, self.dtype, self.device
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
        if count == 1 and self._graph is not None and input_ids.shape[0] == 1:
            logits = self._graph.run(input_ids, cache)
        elif count == 1 and self._step is not None:
            logits = self._step(input_ids, *self._step_args(cache))
        else:
            logits = self._forward(input_ids, cache, pos, logits_to_keep)
        cache.length = pos + count
        return Output(logits)

    def _step_args(self, cache: StaticCache):
        pos = torch.tensor([cache.length], device=self.device)
        return pos, cache.keys, cache.values

    def _forward(self, ids: torch.Tensor, cache: StaticCache, pos: int, keep: int) -> torch.Tensor:
        batch, count = ids.shape
        x = F.embedding(ids, self.embed)
        freqs = self.freqs[pos : pos + count].view(1, count, 1, -1)
        end = pos + count
        mask = None
        if count > 1:
            rows = torch.arange(pos, end, device=self.device).unsqueeze(1)
            mask = torch.arange(end, device=self.device).unsqueeze(0) <= rows
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, freqs, batch, count)
            kc, vc = cache.keys[i], cache.values[i]
            kc[:, :, pos:end] = k
            vc[:, :, pos:end] = v
            att = F.scaled_dot_product_attention(
                q, kc[:, :, :end], vc[:, :, :end], attn_mask=mask, enable_gqa=self.kv_heads != self.heads
            )
            x = self._finish_layer(layer, x, att, batch, count)
        if keep:
            x = x[:, -keep:]
        return self._logits(x)

    def _qkv(self, layer: _Layer, x, freqs, batch: int, count: int):
        h = F.rms_norm(x, (x.shape[-1],), layer.norm1, self.eps)
        hd, nq, nk = self.head_dim, self.heads, self.kv_heads
        if self.quantized:
            q, k, v = (m(h) for m in layer.qkv)
            qk = torch.cat([q, k], dim=-1).view(batch, count, nq + nk, hd)
        else:
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            qk = qkv[..., : (nq + nk) * hd].view(batch, count, nq + nk, hd)
            v = qkv[..., (nq + nk) * hd :]
        if layer.q_norm is not None:
            qk = torch.cat(
                [
                    F.rms_norm(qk[:, :, :nq], (hd,), layer.q_norm, self.eps),
                    F.rms_norm(qk[:, :, nq:], (hd,), layer.k_norm, self.eps),
                ],
                dim=2,
            )
        if self.quantized:  # the quantized path keeps HF's half-split layout: rotate it into pairs here
            qk = qk.view(batch, count, nq + nk, 2, hd // 2).transpose(-1, -2)
        rot = torch.view_as_complex(qk.float().reshape(batch, count, nq + nk, hd // 2, 2)) * freqs
        qk = torch.view_as_real(rot).flatten(-2).to(x.dtype).transpose(1, 2)
        v = v.reshape(batch, count, nk, hd).transpose(1, 2)
        return qk[:, :nq], qk[:, nq:], v

    def _finish_layer(self, layer: _Layer, x, att, batch: int, count: int):
        att = att.transpose(1, 2).reshape(batch, count, self.heads * self.head_dim)
        if self.quantized:
            x = x + layer.o(att)
            h = F.rms_norm(x, (x.shape[-1],), layer.norm2, self.eps)
            gate, up = (m(h) for m in layer.gate_up)
            return x + layer.down(F.silu(gate) * up)
        x = x + F.linear(att, *layer.o)
        h = F.rms_norm(x, (x.shape[-1],), layer.norm2, self.eps)
        gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.down)

    def _logits(self, x) -> torch.Tensor:
        x = F.rms_norm(x, (x.shape[-1],), self.final_norm, self.eps)
        return self.lm_head(x) if self.quantized else F.linear(x, self.lm_head.weight, self.lm_head.bias)

    def _forward_one(self, ids: torch.Tensor, pos: torch.Tensor, keys: list, values: list) -> torch.Tensor:
        """One token at tensor position `pos` over the whole static cache (fixed shapes: compilable, graphable)."""
        x = F.embedding(ids, self.embed)
        freqs = self.freqs.index_select(0, pos).view(1, 1, 1, -1)
        mask = (torch.arange(keys[0].shape[2], device=self.device) <= pos).view(1, 1, 1, -1)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, freqs, 1, 1)
            keys[i].index_copy_(2, pos, k)
            values[i].index_copy_(2, pos, v)
            att = F.scaled_dot_product_attention(
                q, keys[i], values[i], attn_mask=mask, enable_gqa=self.kv_heads != self.heads
            )
            x = self._finish_layer(layer, x, att, 1, 1)
        return self._logits(x)

    def warm(self) -> None:
        """Run (and so compile / capture) the single-token step once, before the first request."""
        with torch.inference_mode():
            cache = self.new_cache()
            ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            if self.device.type == "cuda" and not self.quantized:
                self._graph = _CudaGraphStep(self)
            for _ in range(2):
                self(input_ids=ids, cache=cache)
                cache.length = 0


class _CudaGraphStep:
    """The single-token step captured as a CUDA graph over static input/cache buffers."""

    def __init__(self, lm: FastLM):
        self.lm = lm
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=lm.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=lm.device)
        self.cache = lm.new_cache()
        step = lm._step or lm._forward_one
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step(self.ids, self.pos, self.cache.keys, self.cache.values)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(self.ids, self.pos, self.cache.keys, self.cache.values)

    def run(self, ids: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """Replay on the graph's own cache buffers: the request's cache object adopts them."""
        if cache.keys[0].data_ptr() != self.cache.keys[0].data_ptr():
            for mine, theirs in zip(self.cache.keys + self.cache.values, cache.keys + cache.values):
                mine[:, :, : cache.length].copy_(theirs[:, :, : cache.length])
            cache.keys, cache.values = self.cache.keys, self.cache.values
        self.ids.copy_(ids)
        self.pos.fill_(cache.length)
        self.graph.replay()
        return self.out.clone()


def keep_last_kwargs(model) -> dict:
    """`{"logits_to_keep": 1}` when the model's forward takes it (prefill then computes one row of logits)."""
    import inspect

    if isinstance(model, FastLM):
        return {"logits_to_keep": 1}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
