"""`aigc-code finetune`: train a LoRA adapter on one repository, with a before/after report.

The loop runs under `accelerate.Accelerator`, so the same code trains on one CPU (fp32), one GPU
(bf16 autocast) or several GPUs under `accelerate launch` (DDP; every process computes the same
packed rows and takes its own share of each step). Checkpoints (adapter weights, optimizer state,
`state.json`) are written atomically with `checkpoint.save_atomic` every `checkpoint_every` steps,
at a time limit and on Ctrl-C; `--resume` continues from the newest one. The batches of step `s`
depend only on the seed, `s` and the data, so a resumed run trains on exactly what the
interrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from aigc_code import checkpoint
from aigc_code.errors import AigcCodeError, CheckpointError

ARCH_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    "gpt_bigcode": ["c_attn", "c_proj", "c_fc"],
}
NOT_TARGETS = {"lm_head", "embed_out", "output", "score", "classifier"}
DEFAULT_MAX_CONTEXT = 1024


class FinetuneError(AigcCodeError):
    """A finetune run cannot start or continue as asked."""


@dataclass
class FinetuneConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: chosen per architecture
    epochs: float | None = None  # default 3 when max_steps is not given either
    max_steps: int | None = None
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # None: 5% of the steps, at most 100
    weight_decay: float = 0.0
    batch_size: int = 4  # sequences per micro-batch, per process
    grad_accum: int = 2
    grad_clip: float = 1.0
    context_length: int | None = None  # None: the base model's, at most 1024
    fim_rate: float = 0.9
    spm_rate: float | None = None  # None: 0.8 if the engine prompts this model SPM (aigc_code.json), else 0.2
    syntactic_rate: float = 0.7
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100
    eval_lines: int = 200
    eval_spans: int = 100
    eval_windows: int = 64

    @classmethod
    def from_dict(cls, raw: dict) -> FinetuneConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def model_context(config) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def training_context(requested: int | None, config) -> int:
    """Tokens per training row: as requested, else the model's own up to 1024; never past the model's."""
    limit = model_context(config)
    return max(32, min(requested or min(limit, DEFAULT_MAX_CONTEXT), limit))


def pick_targets(model) -> list[str]:
    """LoRA target module names: the known set for the architecture, else every Linear layer."""
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2 style projections, which peft also adapts

    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
              if isinstance(m, (torch.nn.Linear, Conv1D))}
    linear -= NOT_TARGETS
    preset = ARCH_TARGETS.get(getattr(model.config, "model_type", ""))
    if preset and set(preset) <= linear:
        return list(preset)
    if not linear:
        raise FinetuneError(f"found no Linear layers to put LoRA adapters on in {type(model).__name__}")
    return sorted(linear)


def engine_layout(model_dir: Path) -> str:
    """The FIM layout `Engine` prompts this checkpoint with: "spm" if its aigc_code.json says so, else "psm"."""
    try:
        return json.loads((Path(model_dir) / "aigc_code.json").read_text()).get("fim_layout", "psm")
    except (OSError, ValueError, AttributeError):
        return "psm"


def lr_at(step: int, total: int, cfg: FinetuneConfig, warmup: int) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * progress))


def run_finetune(repo: Path, out: Path, base: str | None = None, cfg: FinetuneConfig | None = None,
                 resume: bool = False, max_minutes: float | None = None, device: str | None = None,
                 threads: int | None = None, echo=print) -> dict:
    """Finetune a LoRA adapter on `repo` into `out`; returns the report (also written to `out`)."""
    import torch
    from accelerate import Accelerator

    from aigc_code.finetune import data as data_mod
    from aigc_code.finetune import evaluate, report
    from aigc_code.finetune.examples import ExampleBuilder, ExampleConfig
    from aigc_code.fim import detect_fim
    from aigc_code.loading import base_fingerprint, load_model, resolve_model_path

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calls a deprecated name
    cfg = cfg or FinetuneConfig()
    out = Path(out).expanduser()
    ckpt_dir = out / "checkpoint"
    if threads:
        torch.set_num_threads(threads)

    # -- where we start from ----------------------------------------------------------------------
    ckpt = checkpoint.latest(ckpt_dir) if resume else None
    state: dict
    if ckpt is not None:
        state = checkpoint.read_state(ckpt)
        saved = FinetuneConfig.from_dict(state.get("config", {}))
        # a resumed run keeps its model and data settings; only how long to train may change
        if cfg.max_steps is not None or cfg.epochs is not None:
            saved.max_steps, saved.epochs = cfg.max_steps, cfg.epochs
        saved.checkpoint_every = cfg.checkpoint_every
        cfg = saved
        base = base or state.get("base")
        echo(f"resuming from {ckpt} at step {state['step']}")
    else:
        if resume:
            echo(f"no checkpoint in {ckpt_dir}; starting a new run")
        elif ckpt_dir.exists() or (out / "adapter_config.json").exists():
            echo(f"starting a new run in {out}: its previous run is replaced (--resume would continue it)")
        state = {"step": 0, "tokens": 0, "train_seconds": 0.0, "runs": 0, "history": []}
    if cfg.epochs is not None and cfg.max_steps is not None:
        raise FinetuneError("give --epochs or --max-steps, not both")
    if cfg.rank < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.lr <= 0:
        raise FinetuneError("--rank, --batch-size and --grad-accum must be at least 1 and --lr positive")

    cpu = device == "cpu"
    accel = Accelerator(cpu=cpu, mixed_precision="no" if cpu or not torch.cuda.is_available() else "bf16")
    dev = accel.device
    main = accel.is_main_process
    say = echo if main else (lambda *_: None)

    # -- base model and data ----------------------------------------------------------------------
    base_path = resolve_model_path(base)
    loaded = load_model(base_path, device=str(dev), dtype="bfloat16" if dev.type == "cuda" else "float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    fingerprint = base_fingerprint(model)
    if ckpt is not None and state.get("base_fingerprint", {}).get("fingerprint") != fingerprint["fingerprint"]:
        raise CheckpointError(f"the checkpoint in {ckpt_dir} was trained on another base model "
                              f"({state.get('base_fingerprint', {}).get('description')}); pass the same --base")
    data = data_mod.collect(Path(repo), seed=cfg.seed, val_fraction=cfg.val_fraction)
    if ckpt is not None and state.get("data_fingerprint") not in (None, data.fingerprint()):
        say("warning: the repository changed since the checkpoint; the remaining steps use the new files")
    fim = detect_fim(tokenizer.get_vocab())
    max_ctx = model_context(model.config)
    context = training_context(cfg.context_length, model.config)
    if cfg.context_length and cfg.context_length > max_ctx:
        say(f"--context-length {cfg.context_length} exceeds the base model's {max_ctx}; using {max_ctx}")
    if cfg.spm_rate is None:  # mostly the layout the engine will prompt with, some of the other
        cfg.spm_rate = 0.8 if engine_layout(base_path) == "spm" else 0.2
    builder = ExampleBuilder(data.train, tokenizer, fim,
                             ExampleConfig(context, cfg.fim_rate, cfg.spm_rate, cfg.syntactic_rate))
    world = accel.num_processes
    rows_per_step = cfg.batch_size * cfg.grad_accum * world
    epoch_cache: dict[int, object] = {0: builder.epoch_rows(cfg.seed, 0)}
    steps_per_epoch = max(1, math.ceil(len(epoch_cache[0]) / rows_per_step))
    if cfg.max_steps is not None:
        total_steps = cfg.max_steps
    else:
        total_steps = max(1, round((cfg.epochs if cfg.epochs is not None else 3) * steps_per_epoch))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, max(1, round(0.05 * total_steps)))
    say(f"{len(data.train)} training files ({builder.total_tokens:,} tokens), {len(data.val)} held out; "
        f"{sum(data.excluded.values())} excluded ({len(data.secrets)} with secrets); "
        f"{'FIM ' + fim.family if fim else 'no FIM tokens: prefix-only'} examples, context {context}; "
        f"{steps_per_epoch} steps per epoch, {total_steps} steps")

    # -- before: the base model on the held-out files ----------------------------------------------
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    windows = evaluate.validation_windows(data.val, tokenizer, context, cfg.eval_windows)
    tasks = (evaluate.next_line_tasks(data.val, cfg.eval_lines, cfg.seed)
             + evaluate.span_tasks(data.val, cfg.eval_spans, cfg.seed))

    def run_eval(m, adapter, label):
        say(f"evaluating {label} on {len(windows)} validation windows and {len(tasks)} completions ...")
        t0 = time.time()
        result = evaluate.evaluate_model(m, tokenizer, base_path, dev, loaded.dtype, windows, tasks, pad_id,
                                         adapter=adapter)
        result["seconds"] = round(time.time() - t0, 1)
        return result

    if main and "eval_base" not in state:
        state["eval_base"] = run_eval(model, None, "the base model")
    accel.wait_for_everyone()

    # -- the adapter and the optimizer --------------------------------------------------------------
    from peft import LoraConfig, PeftModel, get_peft_model

    if ckpt is not None:
        try:
            model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
        except Exception as exc:
            raise CheckpointError(f"the adapter weights in {ckpt} are unreadable ({_short(exc)}); "
                                  f"delete {ckpt_dir} to start over") from exc
    else:
        targets = cfg.target_modules or pick_targets(model)
        cfg.target_modules = targets
        torch.manual_seed(cfg.seed)  # the LoRA A matrices start random: the same seed, the same adapter
        model = get_peft_model(model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    if ckpt is not None:
        if not (ckpt / "optimizer.pt").is_file():
            raise CheckpointError(f"checkpoint {ckpt} has no optimizer.pt; delete {ckpt_dir} to start over")
        try:
            optimizer.load_state_dict(checkpoint.load_torch(ckpt / "optimizer.pt"))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{ckpt / 'optimizer.pt'} does not match this adapter ({_short(exc)}); "
                                  f"delete {ckpt_dir} to start over") from exc
    model, optimizer = accel.prepare(model, optimizer)
    n_train = sum(p.numel() for p in params)
    say(f"LoRA r={cfg.rank} alpha={cfg.alpha:g} on {', '.join(cfg.target_modules or [])}: "
        f"{n_train:,} trainable parameters on {dev}" + (f" x{world}" if world > 1 else ""))

    state.update({"config": asdict(cfg), "base": str(base_path), "base_fingerprint": fingerprint,
                  "data_fingerprint": data.fingerprint(), "total_steps": total_steps,
                  "steps_per_epoch": steps_per_epoch, "context": context, "repo": str(data.root)})
    state["runs"] += 1

    def save_checkpoint():
        if main:
            unwrapped = accel.unwrap_model(model)

            def write(tmp: Path):
                unwrapped.save_pretrained(str(tmp))
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
                (tmp / "state.json").write_text(json.dumps(state, indent=1))

            checkpoint.save_atomic(ckpt_dir, write)
        accel.wait_for_everyone()

    # -- training -----------------------------------------------------------------------------------
    from tqdm import tqdm

    def rows_for(step: int):
        epoch, index = divmod(step, steps_per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = builder.epoch_rows(cfg.seed, epoch)
        rows = epoch_cache[epoch]
        take = [(index * rows_per_step + k) % len(rows) for k in range(rows_per_step)]
        return rows[take]

    start_step = state["step"]
    run_start = time.time()
    run_tokens = 0
    stop_reason = "completed"
    loss_ema = None
    recent: list[float] = []
    log_every = max(1, total_steps // 50)
    bar = tqdm(total=total_steps, initial=start_step, desc="finetune", unit="step", dynamic_ncols=True,
               disable=not main)
    autocast = accel.autocast if dev.type == "cuda" else nullcontext  # bf16 on CUDA, fp32 on CPU
    try:
        while state["step"] < total_steps:
            if max_minutes is not None and time.time() - run_start > max_minutes * 60:
                stop_reason = "time limit"
                break
            step = state["step"]
            t0, c0 = time.time(), time.process_time()
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # LoRA dropout: the same masks after a resume
            rows = torch.from_numpy(rows_for(step)).long()
            lr = lr_at(step, total_steps, cfg, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, step_tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                first = (micro * world + accel.process_index) * cfg.batch_size
                batch = rows[first : first + cfg.batch_size]
                real = batch >= 0
                ids = torch.where(real, batch, pad_id).to(dev)
                labels = torch.where(real, batch, -100).to(dev)
                sync = nullcontext() if micro == cfg.grad_accum - 1 else accel.no_sync(model)
                with sync:
                    with autocast():
                        loss = model(input_ids=ids, labels=labels).loss
                    accel.backward(loss / cfg.grad_accum)
                step_loss += loss.item() / cfg.grad_accum
                step_tokens += int(real.sum())
            accel.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["tokens"] += step_tokens * world
            run_tokens += step_tokens * world
            state["train_seconds"] += time.time() - t0
            state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - c0
            recent.append(step_loss)
            loss_ema = step_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * step_loss
            elapsed = max(1e-6, time.time() - run_start)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{lr:.1e}", tok_s=f"{run_tokens / elapsed:,.0f}",
                            epoch=f"{state['step'] / steps_per_epoch:.2f}")
            if state["step"] % log_every == 0 or state["step"] == total_steps:
                state["history"].append({"step": state["step"], "loss": round(sum(recent) / len(recent), 4),
                                         "lr": lr, "tokens": state["tokens"]})
                recent = []
            if state["step"] % cfg.checkpoint_every == 0 and state["step"] < total_steps:
                save_checkpoint()
    except KeyboardInterrupt:
        bar.close()
        save_checkpoint()
        raise FinetuneError(f"interrupted at step {state['step']} of {total_steps}; the checkpoint in {ckpt_dir} "
                            f"is saved: run again with --resume to continue") from None
    bar.close()
    save_checkpoint()
    if stop_reason != "completed":
        say(f"stopped at step {state['step']} of {total_steps} ({stop_reason}); --resume continues the run")

    # -- the adapter, after-measurements and the report ---------------------------------------------
    result = None
    if main:
        unwrapped = accel.unwrap_model(model)
        unwrapped.save_pretrained(str(out))
        (out / "README.md").unlink(missing_ok=True)  # peft's empty model card template
        (out / "base_model.json").write_text(json.dumps(fingerprint, indent=1))
        if loaded.dtype == torch.float32:
            unwrapped.merge_adapter()  # exact in fp32, and as fast as the base model for the measurements
        eval_tuned = run_eval(unwrapped, out, "the base model + adapter")
        result = report.build(state=state, data=data, cfg=cfg, eval_base=state["eval_base"], eval_tuned=eval_tuned,
                              stop_reason=stop_reason, out=out, fim=fim.family if fim else None,
                              run_seconds=time.time() - run_start,
                              device=f"{dev}" + (f" x{world}" if world > 1 else ""))
        report.write(result, out)
    accel.wait_for_everyone()
    return result


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
