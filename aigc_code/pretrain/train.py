"""Pretrain the embedded default code model (a small Llama) with a FIM objective.

Training is resumable and accumulates over many runs: every checkpoint records the cumulative
tokens seen and wall time, so the model card can say exactly how much compute went in. Uses a
CUDA GPU (bf16 autocast) whenever one is present, else CPU with `threads` threads.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from aigc_code import checkpoint
from aigc_code.errors import CheckpointError
from aigc_code.fim import DEFAULT_FIM, fim_example
from aigc_code.pretrain.corpus import load_split
from aigc_code.pretrain.tokenizer import build_tokenizer, load_tokenizer

LANGUAGE_WEIGHTS = {
    "python": 0.3,
    "javascript": 0.13,
    "typescript": 0.1,
    "go": 0.1,
    "rust": 0.1,
    "java": 0.09,
    "c": 0.09,
    "cpp": 0.09,
}


@dataclass
class ModelShape:
    hidden: int = 256
    layers: int = 6
    heads: int = 4
    intermediate: int = 688
    context: int = 512
    vocab_size: int = 8192


@dataclass
class TrainConfig:
    shape: ModelShape = field(default_factory=ModelShape)
    batch_size: int = 8
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 200
    horizon_tokens: int = 200_000_000  # cosine schedule length; runs accumulate towards it
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    checkpoint_minutes: float = 5.0
    eval_windows: int = 8  # per language
    seed: int = 0


def make_model(shape: ModelShape, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.context,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


class WindowSampler:
    """Random character windows from a language-weighted corpus, starting at line starts."""

    def __init__(self, records: list[dict], weights: dict[str, float]):
        self.docs: dict[str, list[str]] = {}
        for r in records:
            self.docs.setdefault(r["lang"], []).append(r["text"])
        self.langs = [lang for lang in weights if lang in self.docs]
        self.weights = [weights[lang] for lang in self.langs]
        self.cum = {lang: _cumsum(len(t) for t in docs) for lang, docs in self.docs.items()}

    def window(self, rng: random.Random, chars: int, lang: str | None = None) -> str:
        lang = lang or rng.choices(self.langs, self.weights)[0]
        cum = self.cum[lang]
        pos = rng.randrange(cum[-1])
        i = bisect.bisect_right(cum, pos)
        doc = self.docs[lang][i]
        start = pos - (cum[i - 1] if i else 0)
        start = doc.rfind("\n", 0, start) + 1
        return doc[start : start + chars]


def _cumsum(values) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out


def make_batch(sampler: WindowSampler, tokenizer, cfg: TrainConfig, rng: random.Random) -> torch.Tensor:
    """Packed [batch, context] token ids: FIM and plain windows joined by end-of-text."""
    ctx = cfg.shape.context
    eos = tokenizer.eos_token_id
    rows = []
    for _ in range(cfg.batch_size):
        ids: list[int] = []
        while len(ids) < ctx:
            text = sampler.window(rng, int(ctx * 3.5))
            if rng.random() < cfg.fim_rate:
                text = fim_example(text, rng, DEFAULT_FIM, cfg.spm_rate)
            ids.extend(tokenizer.encode(text, add_special_tokens=False))
            ids.append(eos)
        rows.append(ids[:ctx])
    return torch.tensor(rows, dtype=torch.long)


def eval_batches(records: list[dict], tokenizer, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Fixed validation windows per language (plain left-to-right text), the same every run."""
    sampler = WindowSampler(records, {lang: 1.0 for lang in LANGUAGE_WEIGHTS})
    rng = random.Random(1234)
    out = {}
    for lang in sampler.langs:
        rows = []
        for _ in range(cfg.eval_windows * 20):
            if len(rows) == cfg.eval_windows:
                break
            ids = tokenizer.encode(sampler.window(rng, cfg.shape.context * 6, lang), add_special_tokens=False)
            if len(ids) >= cfg.shape.context:
                rows.append(ids[: cfg.shape.context])
        if rows:
            out[lang] = torch.tensor(rows)
    return out


@torch.no_grad()
def evaluate(model, batches: dict[str, torch.Tensor], device) -> dict[str, float]:
    model.eval()
    losses = {}
    for lang, ids in batches.items():
        ids = ids.to(device)
        with _autocast(device):
            out = model(input_ids=ids, labels=ids)  # transformers shifts the labels itself
        losses[lang] = round(out.loss.item(), 4)
    model.train()
    return losses


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_at(tokens: int, step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, tokens / cfg.horizon_tokens)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def _start(out: Path, ckpt, start_from: Path | None, cfg: TrainConfig, train_records: list[dict]):
    """(model, tokenizer, state, config): from the run's last checkpoint, else from an exported model
    (cumulative counts kept), else a new model with a tokenizer trained on the corpus."""
    from transformers import AutoModelForCausalLM

    if ckpt:
        tokenizer = load_tokenizer(ckpt)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(ckpt), local_files_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load the model in checkpoint {ckpt}: {exc}") from exc
        state = checkpoint.read_state(ckpt)
        print(f"resuming from {ckpt}: step {state['step']}, {state['tokens']:,} tokens seen")
        return model, tokenizer, state, _config_from_state(state)
    if start_from is not None:
        tokenizer = load_tokenizer(start_from)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(start_from), local_files_only=True)
            state = json.loads((start_from / "training_state.json").read_text())
        except Exception as exc:
            raise CheckpointError(
                f"cannot continue from {start_from} (needs an exported model with training_state.json): {exc}"
            ) from exc
        print(f"continuing from {start_from}: step {state['step']}, {state['tokens']:,} tokens seen")
        return model, tokenizer, state, _config_from_state(state)
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(tok_dir)
    else:
        tokenizer = build_tokenizer(train_records, tok_dir, cfg.shape.vocab_size)
    state = {"step": 0, "tokens": 0, "train_seconds": 0.0, "runs": 0, "history": [], "config": asdict(cfg)}
    return make_model(cfg.shape, tokenizer), tokenizer, state, cfg


def check_languages(state: dict, train_records: list[dict], corpus: Path) -> None:
    """Refuse to continue a model on a corpus that lacks languages it was trained on: it would
    train them out (a corpus built before the Go and Rust sources were installed did exactly that:
    the model alone fell from 8.3% to 2.8% next-line exact match on a Go repository)."""
    learned = {lang for entry in state.get("history", []) for lang in entry.get("val_loss", {})}
    missing = sorted(learned - {r["lang"] for r in train_records})
    if missing:
        raise CheckpointError(
            f"{corpus} has no {', '.join(missing)} files, which this model was trained on: continuing would "
            "train them out. Install their sources (.ci/toolchains.sh: golang-go, Debian librust-*-dev) and "
            "rebuild it with `aigc-code pretrain corpus`"
        )


def _stop(steps: int, max_steps: int | None, cooldown_steps: int, run_start: float, max_minutes: float | None) -> bool:
    if max_steps is not None and steps >= max_steps:
        return True
    if cooldown_steps and steps >= cooldown_steps:
        return True
    return max_minutes is not None and time.time() - run_start > max_minutes * 60


def optimizer_step(model, optimizer, batch: torch.Tensor, lr: float, grad_clip: float, device) -> float:
    """One AdamW step on `batch` at learning rate `lr`; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with _autocast(device):
        loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


class StopSignals:
    """Ctrl-C (SIGINT) or SIGTERM while training: finish the step, write a checkpoint, then stop;
    a second Ctrl-C stops at once (the last atomic checkpoint stays). Only the main thread can
    install handlers: elsewhere signals keep their default behaviour."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(
    corpus: Path,
    out: Path,
    cfg: TrainConfig,
    resume: bool = True,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    cooldown_steps: int = 0,
    start_from: Path | None = None,
    horizon_tokens: int | None = None,
) -> dict:
    """Train (or continue training) the model in `out`; returns the final state.

    `cooldown_steps`: instead of the schedule, decay the learning rate linearly to `min_lr` over
    that many steps and stop (an annealed checkpoint to ship; a later run resumes the schedule).
    `start_from`: when `out` has no checkpoint, continue from an exported model directory (e.g. the
    shipped default model, whose training_state.json keeps the cumulative counts) with a fresh optimizer.
    `horizon_tokens`: replace a resumed run's schedule length (recorded in its state).
    """
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    train_records = load_split(corpus, "train")
    val_records = load_split(corpus, "val")
    ckpt = checkpoint.latest(ckpt_dir) if resume else None
    model, tokenizer, state, cfg = _start(out, ckpt, start_from, cfg, train_records)
    check_languages(state, train_records, corpus)
    if horizon_tokens:
        cfg = replace(cfg, horizon_tokens=horizon_tokens)
        state["config"]["horizon_tokens"] = horizon_tokens
    model.to(dev).train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), fused=False)
    if ckpt and (ckpt / "optimizer.pt").exists():
        optimizer.load_state_dict(checkpoint.load_torch(ckpt / "optimizer.pt"))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters on {dev}; {len(train_records)} training files")

    sampler = WindowSampler(train_records, LANGUAGE_WEIGHTS)
    val = eval_batches(val_records, tokenizer, cfg)
    state["runs"] += 1
    run_start = time.time()
    last_ckpt = time.time()
    tokens_per_step = cfg.batch_size * cfg.shape.context
    bar = tqdm(
        total=cooldown_steps or max_steps,
        desc="cooldown" if cooldown_steps else "pretrain",
        unit="step",
        dynamic_ncols=True,
    )
    losses: list[float] = []

    def save():
        state["history"].append(
            {
                "step": state["step"],
                "tokens": state["tokens"],
                "train_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
                "val_loss": evaluate(model, val, dev),
                "time": time.time(),
            }
        )

        def write(tmp: Path):
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state, indent=1))

        checkpoint.save_atomic(ckpt_dir, write)
        bar.write(f"checkpoint step {state['step']}: {state['history'][-1]}")

    steps_this_run = 0
    with StopSignals() as signals:
        while not signals.received and not _stop(steps_this_run, max_steps, cooldown_steps, run_start, max_minutes):
            t0 = time.time()
            rng = random.Random(cfg.seed * 1_000_003 + state["step"])
            batch = make_batch(sampler, tokenizer, cfg, rng).to(dev)
            lr = lr_at(state["tokens"], state["step"], cfg)
            if cooldown_steps:
                lr = lr + (cfg.min_lr - lr) * steps_this_run / cooldown_steps
            loss = optimizer_step(model, optimizer, batch, lr, cfg.grad_clip, dev)
            state["step"] += 1
            state["tokens"] += tokens_per_step
            state["train_seconds"] += time.time() - t0
            steps_this_run += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.3f}",
                lr=f"{lr:.1e}",
                tok_s=f"{tokens_per_step / (time.time() - t0):.0f}",
                tokens=f"{state['tokens'] / 1e6:.2f}M",
            )
            if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                save()
                last_ckpt = time.time()
        bar.close()
        if steps_this_run:
            save()
    if signals.received:  # the step finished and its checkpoint is written: a later run resumes here
        saved = ", checkpoint saved" if steps_this_run else ""
        print(f"{signals.received}: stopped after step {state['step']}{saved}", file=sys.stderr)
        raise KeyboardInterrupt
    return state


def _param_groups(model, weight_decay: float):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _config_from_state(state: dict) -> TrainConfig:
    raw = dict(state["config"])
    raw["shape"] = ModelShape(**raw["shape"])
    return TrainConfig(**raw)
