"""The model engine: prompt in, candidates out.

One `Engine` wraps one loaded checkpoint. `complete(prefix, suffix)` lays the text out with the
checkpoint's own FIM tokens (prefix-only when it has none), heals the token boundary at the
cursor, and decodes token by token with a KV cache so that it can stream, stop on stop
sequences, honour a time budget and be cancelled from another thread.

Token healing: a prompt that ends inside a token (indentation, half a word) is tokenized
differently from training text, so the last prompt token is removed and the first generated
tokens are constrained to spell it out again; the caller sees only the text after the cursor.

KV reuse: the cache of the last single-candidate request is kept, and the next request only
encodes the tokens after the longest common prefix (editors ask again after every keystroke).
The Hugging Face path uses a plain (full-length) `DynamicCache`, never the sliding-window layers that
`DynamicCache(config=...)` builds for StarCoder2/Qwen2-style windows: those cannot be cropped once the
window is full, and both KV reuse and prompt-lookup rollback crop. The attention mask still applies
the window. `check_servable` runs a tiny real generation with a rollback at load, so a checkpoint whose
cache cannot do this is refused there, with one line, instead of failing on a later keystroke.

Control tokens (`aigc_code.vocab`): never produced from the user's text, never allowed while healing,
and a generated one ends the candidate.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aigc_code.errors import ModelLoadError
from aigc_code.fastdecode import build_fast_lm, keep_last_kwargs
from aigc_code.fim import FimTokens, detect_fim, repo_markers
from aigc_code.generation import CancellationToken, Candidate, GenerationConfig, GenerationResult
from aigc_code.loading import Loaded, load_model
from aigc_code.pieces import PieceCache
from aigc_code.vocab import TextEncoder, TokenTable, adds_bos, control_tokens, token_strings

TRUNCATE_CHUNK = 64  # tokens


FIRST_DRAFT = 4  # prompt-lookup draft tokens to start with (bench typing: 4 beat 2, 3, 6 and 8)


def next_draft_len(current: int, drafted: int, accepted: int) -> int:
    """Longer drafts while whole drafts are accepted, shorter after a reject: a verified token costs
    a fraction of a step, a rejected one costs it for nothing."""
    return current + 2 if accepted == drafted else max(2, accepted + 1)


@dataclass
class Prompt:
    ids: list[int]
    heal: str = ""  # text removed from the prompt's end that generation must reproduce first


class Engine:
    def __init__(self, loaded: Loaded, reuse_kv: bool = True):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.path = loaded.path
        self.adapter = loaded.adapter
        vocab = self.tokenizer.get_vocab()
        self.fim: FimTokens | None = detect_fim(vocab)
        self.repo = repo_markers(self.fim, vocab)  # (repo name, file separator) markers, if the family has them
        # "psm" works for every FIM checkpoint; "spm" (suffix first) only for models trained with it,
        # which say so in aigc_code.json (aigc-code's own models do) -- it makes KV reuse cover the prompt
        self.fim_layout = _model_options(loaded.path).get("fim_layout", "psm")
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.reuse_kv = reuse_kv
        self.lock = threading.Lock()  # one generation at a time: the model and KV cache are shared
        self._kv: tuple[list[int], object] | None = None
        self._controls = control_tokens(self.tokenizer)
        self._control_ids = set(self._controls.values())
        self._encode_text = TextEncoder(self.tokenizer, self._controls)
        self._pieces = PieceCache.for_tokenizer(self.tokenizer)  # ids and counts without the Rust call, when exact
        self.decode_ids = _ids_decoder(self.tokenizer)
        self._adds_bos = adds_bos(self.tokenizer)
        self._stop_ids = self._collect_stop_ids()
        self._cache_kw = _cache_kwarg(self.model)
        # lean decoder over the same weights for Llama-family checkpoints (None: use the HF model)
        self._fast = build_fast_lm(self.model, self.max_context)
        self._lm = self._fast or self.model
        self._keep_last = keep_last_kwargs(self._lm)
        if self._fast is not None:
            self.max_context = min(self.max_context, self._fast.max_len)
        self._special_ids = set(self.tokenizer.all_special_ids) | self._stop_ids | self._control_ids
        self._vocab_len = len(self.tokenizer)  # len() on an HF tokenizer is slow: once, not per token
        self._table: TokenTable | None = None  # token texts + heal index, built on first use

    @property
    def name(self) -> str:
        return str(self.path) + (f" + {self.adapter}" if self.adapter else "")

    # -- tokens -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """The user's text as token ids; control-token strings in it stay text."""
        ids = self._pieces.encode(text) if self._pieces is not None else None
        return ids if ids is not None else self._encode_text(text)

    def count_tokens(self, text: str) -> int:
        counted = self._pieces.count(text) if self._pieces is not None else None
        return counted if counted is not None else len(self._encode_text(text))

    def _kept_tokens(self, text: str, max_tokens: int, tail: bool) -> str | None:
        """The text of `text`'s last (`tail`) or first `max_tokens` tokens; None when all of it fits.
        Sliced at token offsets where the tokenizer gives them, else decoded from the ids."""
        ends = self._encode_text.token_ends(text)
        ids = self.encode(text) if ends is None else None
        count = len(ends) if ends is not None else len(ids)
        if count <= max_tokens:
            return None
        if max_tokens <= 0:
            return ""
        if ends is not None:
            return text[ends[count - max_tokens - 1] :] if tail else text[: ends[max_tokens - 1]]
        return self.tokenizer.decode(ids[count - max_tokens :] if tail else ids[:max_tokens])

    def truncate_left(self, text: str, max_tokens: int) -> str:
        """The end of `text` that fits in `max_tokens`, cut at a line start where possible."""
        kept = self._kept_tokens(text, max_tokens, tail=True)
        if kept is None:
            return text
        nl = kept.find("\n")
        return kept[nl + 1 :] if 0 <= nl < len(kept) - 1 else kept

    def truncate_right(self, text: str, max_tokens: int) -> str:
        """The start of `text` that fits in `max_tokens`, cut at a line end where possible."""
        kept = self._kept_tokens(text, max_tokens, tail=False)
        if kept is None:
            return text
        nl = kept.rfind("\n")
        return kept[: nl + 1] if nl > 0 else kept

    # -- prompts ------------------------------------------------------------------------------
    def repo_context(self, files: Sequence[tuple[str, str]], path: str, repo: str = "repository") -> list[int]:
        """Other files in the checkpoint's own repository format (`<|repo_name|>`/`<|file_sep|>`, StarCoder2's
        `<repo_name>`/`<file_sep>`), then the current file's separator and path; [] without that format."""
        if self.repo is None or not files:
            return []
        name, sep = self.repo
        ids = self._special(name) + self.encode(repo + "\n")
        for file_path, text in files:
            ids += self._special(sep) + self.encode(f"{file_path}\n{text.rstrip()}\n")
        return ids + self._special(sep) + self.encode(f"{path}\n")

    def build_prompt(
        self,
        prefix: str,
        suffix: str = "",
        max_new_tokens: int = 64,
        files: Sequence[tuple[str, str]] = (),
        path: str = "",
    ) -> Prompt:
        """FIM (or prefix-only) prompt ids that fit the model's context, with token healing; `files`
        (path, text) of other files go first in the repository format when the checkpoint has one."""
        context = self.repo_context(files, path)
        budget = max(8, self.max_context - max_new_tokens - 4 - len(context))
        pre = self.encode(prefix)
        suf = self.encode(suffix) if self.fim else []
        if len(pre) + len(suf) > budget:
            suf = suf[: min(len(suf), budget // 4)]
            # drop whole chunks from the left so the prompt's start stays put across keystrokes (KV reuse)
            excess = len(pre) - (budget - len(suf))
            pre = pre[min(len(pre), -(-excess // TRUNCATE_CHUNK) * TRUNCATE_CHUNK) :]
        pre, heal = self._heal(pre)
        if self.fim is None:
            return Prompt(self._bos() + pre, heal)
        bos = self._bos() + context
        if self.fim_layout == "spm":
            # suffix first: while the user types, everything up to the cursor is unchanged from the
            # last request, so the KV cache covers the whole prompt except the new characters
            ids = (
                bos
                + self._special(self.fim.prefix)
                + self._special(self.fim.suffix)
                + suf
                + self._special(self.fim.middle)
                + pre
            )
        else:
            ids = (
                bos
                + self._special(self.fim.prefix)
                + pre
                + self._special(self.fim.suffix)
                + suf
                + self._special(self.fim.middle)
            )
        return Prompt(ids, heal)

    def _heal(self, ids: list[int]) -> tuple[list[int], str]:
        if not ids or ids[-1] in self._special_ids:
            return ids, ""
        head = self.decode_ids(ids[:-1])
        full = self.decode_ids(ids)
        if not full.startswith(head) or "\ufffd" in full[len(head) :]:
            return ids, ""  # the last token is part of a multi-byte character: leave it
        return ids[:-1], full[len(head) :]

    def _bos(self) -> list[int]:
        return [self.tokenizer.bos_token_id] if self._adds_bos else []

    def _special(self, token: str) -> list[int]:
        return [self.tokenizer.convert_tokens_to_ids(token)]

    def _collect_stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        if self.fim:
            vocab = self.tokenizer.get_vocab()
            for tok in (self.fim.prefix, self.fim.suffix, self.fim.middle, *self.fim.eot):
                if tok in vocab:
                    ids.add(vocab[tok])
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos])
        ids.update(self._control_ids)  # a generated control token (<|im_end|>, <think>, ...) is never code
        ids.discard(None)
        return ids

    # -- generation ---------------------------------------------------------------------------
    def complete(
        self,
        prefix: str,
        suffix: str = "",
        config: GenerationConfig | None = None,
        cancel: CancellationToken | None = None,
        files: Sequence[tuple[str, str]] = (),
        path: str = "",
    ) -> GenerationResult:
        """Fill in the text between `prefix` and `suffix` (the cursor position); `files`: other files
        of the repository for the checkpoint's repository format (see `repo_context`)."""
        config = config or GenerationConfig()
        return self.run(self.build_prompt(prefix, suffix, config.max_new_tokens, files, path), config, cancel)

    def generate(
        self, prompt: str, config: GenerationConfig | None = None, cancel: CancellationToken | None = None
    ) -> GenerationResult:
        """Continue plain text (no FIM layout)."""
        config = config or GenerationConfig()
        ids = self.encode(prompt)
        budget = max(8, self.max_context - config.max_new_tokens)
        ids, heal = self._heal(ids[-budget:])
        return self.run(Prompt(self._bos() + ids, heal), config, cancel)

    def run(
        self, prompt: Prompt, config: GenerationConfig, cancel: CancellationToken | None = None
    ) -> GenerationResult:
        room = self.max_context - len(prompt.ids)
        if config.max_new_tokens > room:  # the model's context (and the static KV cache) ends there
            config = dataclasses.replace(config, max_new_tokens=max(1, room))
        with self.lock, torch.inference_mode():
            return self._decode(prompt, config, cancel or CancellationToken())

    def _decode(self, prompt: Prompt, cfg: GenerationConfig, cancel: CancellationToken) -> GenerationResult:
        start = time.perf_counter()
        n = max(1, cfg.n)
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed) if cfg.seed is not None else None
        cache, fed, reused = self._prefill_cache(prompt.ids)
        out = self._lm(
            input_ids=self._tensor([prompt.ids[reused:]]), use_cache=True, **self._keep_last, **{self._cache_kw: cache}
        )
        logits = out.logits[:, -1, :].float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        prompt_ms = (time.perf_counter() - start) * 1000
        speculate = n == 1 and cfg.temperature <= 0 and cfg.prompt_lookup > 0
        run = _Candidates(self, prompt, cfg, n)
        draft_len = FIRST_DRAFT
        while not run.done:
            reason = _interruption(cancel, cfg, start)
            if reason:
                run.finish_all(reason)
                break
            chosen, chosen_logprob = self._choose(self._mask_logits(logits, run.heal_left), cfg, generator)
            for i in range(n):
                if not run.finish[i]:
                    run.accept(i, int(chosen[i]), float(chosen_logprob[i]))
            if run.done:
                break
            draft = (
                self._lookup_draft(prompt.ids + run.tokens[0], min(draft_len, cfg.prompt_lookup))
                if (speculate and not run.heal_left[0])
                else []
            )
            before = len(fed)
            logits = self._step(chosen, draft, cache, fed, run)
            if draft:
                draft_len = next_draft_len(draft_len, len(draft), len(fed) - before - 1)
        run.finish_all("length")
        self._kv = (fed, cache) if (n == 1 and self.reuse_kv) else None
        return GenerationResult(
            candidates=run.candidates(),
            prompt_tokens=len(prompt.ids),
            generated_tokens=sum(len(t) for t in run.tokens),
            prompt_ms=prompt_ms,
            total_ms=(time.perf_counter() - start) * 1000,
            reused_tokens=reused,
        )

    def _step(self, chosen: torch.Tensor, draft: list[int], cache, fed: list[int], run: _Candidates) -> torch.Tensor:
        """Feed the chosen token(s) (+ a prompt-lookup draft); the next logits, the draft's rejects rolled back."""
        n = chosen.shape[0]
        feed = chosen.view(n, 1).to(self.device)
        if draft:
            feed = torch.cat([feed, self._tensor([draft]).view(1, -1)], dim=1)
        step = self._lm(input_ids=feed, use_cache=True, **{self._cache_kw: cache})
        if n > 1:
            return step.logits[:, -1, :].float()
        fed.append(int(chosen[0]))
        # prompt-lookup decoding: keep the drafted tokens the model would have chosen itself
        step_logits = step.logits[0].float()
        accepted = 0
        for j, tok in enumerate(draft):
            if run.finish[0] or int(step_logits[j].argmax()) != tok:
                break
            run.accept(0, tok, float(torch.log_softmax(step_logits[j], dim=-1)[tok]))
            fed.append(tok)
            accepted += 1
        if cache.get_seq_length() > len(fed):
            cache.crop(len(fed) - cache.get_seq_length())
        return step_logits[accepted : accepted + 1]

    def _lookup_draft(self, context: list[int], max_draft: int, ngram: int = 3) -> list[int]:
        """Tokens that followed the most recent earlier occurrence of the context's last n-gram (of 3,
        else 2 tokens: a one-token match is accepted too rarely to pay for its verification)."""
        for size in range(ngram, 1, -1):
            if len(context) <= size:
                continue
            tail = context[-size:]
            for pos in range(len(context) - size - 1, -1, -1):
                if context[pos : pos + size] == tail:
                    draft = context[pos + size : pos + size + max_draft]
                    special = self._special_ids
                    cut = next((k for k, t in enumerate(draft) if t in special), len(draft))
                    return draft[:cut]
        return []

    def _prefill_cache(self, ids: list[int]):
        """A cache holding the longest prefix of `ids` that the last request already encoded."""
        if self._kv is not None:
            old_ids, cache = self._kv
            self._kv = None
            common = 0
            for a, b in zip(old_ids, ids, strict=False):
                if a != b:
                    break
                common += 1
            keep = min(common, len(ids) - 1)  # at least one token must be fed to get logits
            if keep > 0:
                extra = cache.get_seq_length() - keep
                if extra > 0:
                    cache.crop(-extra)
                return cache, list(ids), keep
        return self._new_cache(), list(ids), 0

    def _new_cache(self):
        """An empty KV cache: the fast path's, else a full-length DynamicCache (croppable; see the docstring)."""
        from transformers import DynamicCache

        return self._fast.new_cache() if self._fast is not None else DynamicCache()

    def check_servable(self) -> None:
        """Run one tiny real generation with a rollback; a `ModelLoadError` (one line) if it cannot be served."""
        ids = (self._bos() + self.encode("def main():\n    return 1\n"))[:12] or [0, 0, 0, 0]
        try:
            with self.lock, torch.inference_mode():
                cache = self._new_cache()
                _check_cache_layers(cache)
                self._lm(input_ids=self._tensor([ids]), use_cache=True, **{self._cache_kw: cache})
                self._lm(input_ids=self._tensor([ids[:3]]), use_cache=True, **{self._cache_kw: cache})
                cache.crop(-2)
                _check_cache_layers(cache)
                if cache.get_seq_length() != len(ids) + 1:
                    raise ValueError(f"the cache holds {cache.get_seq_length()} tokens after a rollback")
                self._lm(input_ids=self._tensor([ids[:1]]), use_cache=True, **{self._cache_kw: cache})
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything here would fail on the first request
            raise ModelLoadError(
                f"{self.path} cannot be served: a test generation failed ({type(exc).__name__}: {_one_line(exc)})"
            ) from exc

    def forget_cache(self) -> None:
        self._kv = None

    def _tensor(self, rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _choose(self, logits: torch.Tensor, cfg: GenerationConfig, generator):
        logp = torch.log_softmax(logits, dim=-1)
        if cfg.temperature <= 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / cfg.temperature, dim=-1)
            if cfg.top_p < 1.0:
                sorted_p, order = probs.sort(dim=-1, descending=True)
                drop = sorted_p.cumsum(dim=-1) - sorted_p > cfg.top_p
                sorted_p = sorted_p.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            chosen = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return chosen, logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)

    def _mask_logits(self, logits: torch.Tensor, heal_left: list[str]) -> torch.Tensor:
        vocab = self._vocab_len
        if logits.shape[-1] > vocab:
            logits = logits.clone()
            logits[:, vocab:] = float("-inf")
        if not any(heal_left):
            return logits
        logits = logits.clone()
        for i, left in enumerate(heal_left):
            if left:
                logits[i] = logits[i].masked_fill(~self._heal_mask(left).to(logits.device), float("-inf"))
        return logits

    def _heal_mask(self, left: str) -> torch.Tensor:
        """Tokens that agree with the healed text: they start with it, or it starts with them."""
        return self.token_table().mask(left)

    def token_table(self) -> TokenTable:
        """Token texts and the heal prefix index (control tokens and padding rows excluded)."""
        if self._table is None:
            rows = self.model.get_input_embeddings().weight.shape[0]
            self._table = TokenTable(token_strings(self.tokenizer, self._vocab_len), self._special_ids, rows)
        return self._table

    def _token_string(self, tok: int) -> str:
        return self.token_table().text(tok)


class _Candidates:
    """The candidates of one decode: their tokens, log-probs, healing progress, visible text and finish."""

    def __init__(self, engine: Engine, prompt: Prompt, cfg: GenerationConfig, n: int):
        self.engine = engine
        self.heal = prompt.heal
        self.cfg = cfg
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.logprobs: list[list[float]] = [[] for _ in range(n)]
        self.heal_left = [prompt.heal] * n
        self.texts = [""] * n
        self.detok = [_Detokenizer(engine.decode_ids) for _ in range(n)]
        self.finish: list[str | None] = [None] * n

    @property
    def done(self) -> bool:
        return all(self.finish)

    def finish_all(self, reason: str) -> None:
        self.finish = [f or reason for f in self.finish]

    def accept(self, i: int, tok: int, logprob: float) -> None:
        """Append one generated token to candidate i and decide whether it is finished."""
        if tok in self.engine._stop_ids:
            self.finish[i] = "eos"
            return
        self.tokens[i].append(tok)
        self.logprobs[i].append(logprob)
        if self.heal_left[i]:
            self.heal_left[i] = _consume_heal(self.heal_left[i], self.engine._token_string(tok))
        self.texts[i], stopped = _visible_text(self.detok[i].add(tok), self.heal, self.cfg.stop)
        if stopped:
            self.finish[i] = "stop"
        elif len(self.tokens[i]) >= self.cfg.max_new_tokens:
            self.finish[i] = "length"

    def candidates(self) -> list[Candidate]:
        return [
            Candidate(self.texts[i], self.logprobs[i], self.finish[i] or "length", self.tokens[i])
            for i in range(len(self.tokens))
        ]


def _interruption(cancel: CancellationToken, cfg: GenerationConfig, start: float) -> str | None:
    """Why decoding must stop before the next token ("cancelled", "time"), or None."""
    if cancel.cancelled:
        return "cancelled"
    if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
        return "time"
    return None


def _ids_decoder(tokenizer):
    """`tokenizer.decode`, straight from the Rust tokenizer where transformers' wrapper would return
    the same text (no clean-up of spaces): the wrapper converts its arguments on every call, and the
    detokenizer decodes twice a generated token (~0.4 ms a completion)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return tokenizer.decode
    return lambda ids: backend.decode(ids, skip_special_tokens=False)


class _Detokenizer:
    """Incremental detokenization: each step decodes only a short window of recent tokens.

    Decoding a window and subtracting its known head (rather than concatenating per-token
    strings) stays right for tokenizers that treat a sequence's first token specially.
    """

    def __init__(self, decode):
        self.decode = decode
        self.ids: list[int] = []
        self.text = ""
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, tok: int) -> str:
        """The full text so far (an unfinished multi-byte character is left out)."""
        self.ids.append(tok)
        head = self.decode(self.ids[self.prefix_offset : self.read_offset])
        window = self.decode(self.ids[self.prefix_offset :])
        if len(window) > len(head) and not window.endswith("\ufffd"):
            self.text += window[len(head) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self.text


def _visible_text(text: str, heal: str, stops: list[str]) -> tuple[str, bool]:
    """Generated text after the cursor (the healed characters removed), cut at the first stop sequence."""
    if heal:
        if not text.startswith(heal):
            return "", False
        text = text[len(heal) :]
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _model_options(path) -> dict:
    """aigc-code's own settings stored beside a checkpoint (aigc_code.json), if any."""
    import json

    try:
        return json.loads((path / "aigc_code.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def _cache_kwarg(model) -> str:
    """transformers 5.x renamed `past_key_values` to `cache`; the DynamicCache we pass is updated in place."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _consume_heal(left: str, token_text: str) -> str:
    if token_text.startswith(left):
        return ""
    if left.startswith(token_text):
        return left[len(token_text) :]
    return ""


def _check_cache_layers(cache) -> None:
    """Refuse cache layers that cannot be rolled back (sliding-window, quantized, ... layers)."""
    from transformers.cache_utils import DynamicLayer

    for layer in getattr(cache, "layers", None) or []:
        if type(layer) is not DynamicLayer:
            raise ModelLoadError(
                f"its KV cache uses {type(layer).__name__} layers, which cannot be rolled back; "
                f"aigc-code serves models with a plain KV cache"
            )


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def load_engine(
    model=None,
    adapter=None,
    device: str | None = None,
    dtype: str | None = None,
    reuse_kv: bool = True,
    quantize: str | None = None,
) -> Engine:
    """Load a local checkpoint (default: the embedded model), check it can be served, wrap it in an `Engine`."""
    engine = Engine(load_model(model, adapter, device, dtype, quantize), reuse_kv=reuse_kv)
    engine.check_servable()
    engine.token_table()  # built at load (~0.1-0.3 s for a 151k vocabulary), not on the first keystroke
    return engine
