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
    target_parameters: list[str] | None = None  # fused 3-D MoE expert weights (peft target_parameters)
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
    pipeline_holes: int = 20  # held-out lines completed through the LSP pipeline, index off/on (0: skip)
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


def pick_targets(model) -> tuple[list[str], list[str]]:
    """LoRA targets: (Linear module names, fused 3-D expert weight names).

    Dense models: the known projection names for the architecture, else every Linear layer (not the head,
    not an MoE router). MoE models whose experts are fused 3-D weights (transformers 5's Qwen3-MoE,
    DeepSeek-V3, ...): every such Linear by full name -- a bare name like `down_proj` would also match the
    fused expert weights -- plus the expert weights themselves, adapted through peft's `target_parameters`.
    """
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2 style projections, which peft also adapts

    linear = {name: m for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
    linear = {
        name: m
        for name, m in linear.items()
        if name.rsplit(".", 1)[-1] not in NOT_TARGETS and not _is_router(name, m, model)
    }
    experts = sorted(name for name, p in model.named_parameters() if p.dim() == 3)
    if not linear and not experts:
        raise FinetuneError(f"found no Linear layers to put LoRA adapters on in {type(model).__name__}")
    if experts:
        return sorted(linear), experts
    short = {name.rsplit(".", 1)[-1] for name in linear}
    preset = ARCH_TARGETS.get(getattr(model.config, "model_type", ""))
    if preset and set(preset) <= short:
        return list(preset), []
    return sorted(short), []


def _is_router(name: str, module, model) -> bool:
    """An MoE router (a Linear from the hidden size to the number of experts): adapting it is not wanted."""
    cfg = model.config
    experts = getattr(cfg, "num_experts", None) or getattr(cfg, "n_routed_experts", None)
    return bool(experts) and name.endswith(".gate") and getattr(module, "out_features", None) == experts


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


class FinetuneInterrupted(FinetuneError):
    """Ctrl-C during training: the checkpoint is saved (the CLI exits 130)."""


RESUME_FIXED = ("rank", "alpha", "lr", "dropout", "batch_size", "grad_accum", "context_length", "seed")


def run_finetune(
    repo: Path,
    out: Path,
    model: str | None = None,
    cfg: FinetuneConfig | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    echo=print,
    base: str | None = None,
    explicit: dict | None = None,
) -> dict:
    """Finetune a LoRA adapter on `repo` into `out`; returns the report (also written to `out`).

    `explicit`: the settings the user gave on the command line; on `--resume` a changed one is refused.
    """
    import torch

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calls a deprecated name
    if threads:
        torch.set_num_threads(threads)
    run = _Run(Path(out).expanduser(), cfg or FinetuneConfig(), echo)
    run.starting_point(resume, model or base, explicit or {})
    run.validate()
    run.setup(Path(repo), device)
    run.measure_base()
    run.attach_adapter()
    run.train(max_minutes)
    return run.finish()


class _Run:
    """One finetune run, in named steps (see `run_finetune`)."""

    def __init__(self, out: Path, cfg: FinetuneConfig, echo):
        self.out = out
        self.ckpt_dir = out / "checkpoint"
        self.cfg = cfg
        self.echo = echo
        self.say = echo
        self.ckpt: Path | None = None
        self.model_arg: str | None = None
        self.state: dict = {"step": 0, "tokens": 0, "train_seconds": 0.0, "runs": 0, "history": []}
        self.stop_reason = "completed"
        self.run_start = time.time()

    # -- where we start from ----------------------------------------------------------------------
    def starting_point(self, resume: bool, model: str | None, explicit: dict) -> None:
        self.ckpt = checkpoint.latest(self.ckpt_dir) if resume else None
        self.model_arg = model
        if self.ckpt is None:
            if resume:
                self.echo(f"no checkpoint in {self.ckpt_dir}; starting a new run")
            elif self.ckpt_dir.exists() or (self.out / "adapter_config.json").exists():
                raise FinetuneError(
                    f"{self.out} already holds a finetune run: pass --resume to continue it, or choose another --out"
                )
            return
        self.state = checkpoint.read_state(self.ckpt)
        saved = FinetuneConfig.from_dict(self.state.get("config", {}))
        for name, value in explicit.items():
            if name in RESUME_FIXED and value is not None and value != getattr(saved, name):
                flag = "--" + name.replace("_", "-")
                raise FinetuneError(
                    f"--resume continues the run in {self.out}, trained with {flag} "
                    f"{getattr(saved, name)}; it cannot change to {value} (choose another --out)"
                )
        # a resumed run keeps its model and data settings; only how long to train may change
        if self.cfg.max_steps is not None or self.cfg.epochs is not None:
            saved.max_steps, saved.epochs = self.cfg.max_steps, self.cfg.epochs
        saved.checkpoint_every = self.cfg.checkpoint_every
        self.cfg = saved
        self.model_arg = model or self.state.get("base")
        self.echo(f"resuming from {self.ckpt} at step {self.state['step']}")

    def validate(self) -> None:
        cfg = self.cfg
        if cfg.epochs is not None and cfg.max_steps is not None:
            raise FinetuneError("give --epochs or --max-steps, not both")
        if cfg.rank < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.lr <= 0:
            raise FinetuneError("--rank, --batch-size and --grad-accum must be at least 1 and --lr positive")

    # -- base model and data ----------------------------------------------------------------------
    def setup(self, repo: Path, device: str | None) -> None:
        import torch
        from accelerate import Accelerator

        from aigc_code.fim import detect_fim
        from aigc_code.finetune import data as data_mod

        cpu = device == "cpu"
        self.accel = Accelerator(cpu=cpu, mixed_precision="no" if cpu or not torch.cuda.is_available() else "bf16")
        self.dev = self.accel.device
        self.main = self.accel.is_main_process
        self.world = self.accel.num_processes
        if not self.main:
            self.say = lambda *_: None
        self._load_base()
        self.data = data_mod.collect(repo, seed=self.cfg.seed, val_fraction=self.cfg.val_fraction)
        if self.ckpt is not None and self.state.get("data_fingerprint") not in (None, self.data.fingerprint()):
            self.say("warning: the repository changed since the checkpoint; the remaining steps use the new files")
        self.fim = detect_fim(self.tokenizer.get_vocab())
        self._plan()

    def _load_base(self) -> None:
        from aigc_code.errors import ModelLoadError
        from aigc_code.loading import base_fingerprint, load_model, resolve_model_path

        self.base_path = resolve_model_path(self.model_arg).resolve()  # absolute: merge may run elsewhere
        try:
            self.loaded = load_model(
                self.base_path, device=str(self.dev), dtype="bfloat16" if self.dev.type == "cuda" else "float32"
            )
        except ModelLoadError as exc:
            raise FinetuneError(f"--model: {exc}") from None
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.fingerprint = base_fingerprint(self.model)
        saved = self.state.get("base_fingerprint", {})
        if self.ckpt is not None and saved.get("fingerprint") != self.fingerprint["fingerprint"]:
            raise CheckpointError(
                f"the checkpoint in {self.ckpt_dir} was trained on another base model "
                f"({saved.get('description')}); pass the same --model"
            )

    def _plan(self) -> None:
        from aigc_code.finetune.examples import ExampleBuilder, ExampleConfig

        cfg = self.cfg
        max_ctx = model_context(self.model.config)
        self.context = training_context(cfg.context_length, self.model.config)
        if cfg.context_length and cfg.context_length > max_ctx:
            self.say(f"--context-length {cfg.context_length} exceeds the base model's {max_ctx}; using {max_ctx}")
        if cfg.spm_rate is None:  # mostly the layout the engine will prompt with, some of the other
            cfg.spm_rate = 0.8 if engine_layout(self.base_path) == "spm" else 0.2
        self.builder = ExampleBuilder(
            self.data.train,
            self.tokenizer,
            self.fim,
            ExampleConfig(self.context, cfg.fim_rate, cfg.spm_rate, cfg.syntactic_rate),
        )
        self.rows_per_step = cfg.batch_size * cfg.grad_accum * self.world
        self.epoch_cache: dict[int, object] = {0: self.builder.epoch_rows(cfg.seed, 0)}
        self.steps_per_epoch = max(1, math.ceil(len(self.epoch_cache[0]) / self.rows_per_step))
        epochs = cfg.epochs if cfg.epochs is not None else 3
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else max(1, round(epochs * self.steps_per_epoch))
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else min(100, max(1, round(0.05 * self.total_steps)))
        )
        data, fim = self.data, self.fim
        self.say(
            f"{len(data.train)} training files ({self.builder.total_tokens:,} tokens), {len(data.val)} held out; "
            f"{sum(data.excluded.values())} excluded ({len(data.secrets)} with secrets); "
            f"{'FIM ' + fim.family if fim else 'no FIM tokens: prefix-only'} examples, context {self.context}; "
            f"{self.steps_per_epoch} steps per epoch, {self.total_steps} steps"
        )

    # -- before: the base model on the held-out files ----------------------------------------------
    def measure_base(self) -> None:
        from aigc_code.finetune import evaluate

        tok, cfg = self.tokenizer, self.cfg
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.windows = evaluate.validation_windows(self.data.val, tok, self.context, cfg.eval_windows)
        self.tasks = evaluate.next_line_tasks(self.data.val, cfg.eval_lines, cfg.seed) + evaluate.span_tasks(
            self.data.val, cfg.eval_spans, cfg.seed
        )
        if self.main and "eval_base" not in self.state:
            self.state["eval_base"] = self.run_eval(self.model, None, "the base model")
        self.accel.wait_for_everyone()

    def run_eval(self, model, adapter, label: str) -> dict:
        from tqdm import tqdm

        from aigc_code.finetune import evaluate

        t0 = time.time()
        self.say(f"evaluating {label} on {len(self.windows)} validation windows and {len(self.tasks)} completions")
        with tqdm(
            total=len(self.tasks), desc=f"measure {label}", unit="completion", dynamic_ncols=True, disable=not self.main
        ) as bar:
            result = evaluate.evaluate_model(
                model,
                self.tokenizer,
                self.base_path,
                self.dev,
                self.loaded.dtype,
                self.windows,
                self.tasks,
                self.pad_id,
                adapter=adapter,
                progress=lambda: bar.update(1),
            )
        result["seconds"] = round(time.time() - t0, 1)
        return result

    # -- the adapter and the optimizer --------------------------------------------------------------
    def attach_adapter(self) -> None:
        import torch

        self.model = self._peft_model()
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
        if self.ckpt is not None:
            self._load_optimizer()
        self.model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        n_train = sum(p.numel() for p in self.params)
        n_all = sum(p.numel() for p in self.model.parameters())
        where = ", ".join(_short_names(cfg.target_modules or []) + _short_names(cfg.target_parameters or []))
        self.say(
            f"LoRA r={cfg.rank} alpha={cfg.alpha:g} on {where}: {n_train:,} trainable parameters "
            f"(of {n_all:,}) on {self.dev}" + (f" x{self.world}" if self.world > 1 else "")
        )
        self.state.update(
            {
                "config": asdict(cfg),
                "base": str(self.base_path),
                "base_fingerprint": self.fingerprint,
                "data_fingerprint": self.data.fingerprint(),
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "context": self.context,
                "repo": str(self.data.root),
            }
        )
        self.state["runs"] += 1

    def _peft_model(self):
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        if self.ckpt is not None:
            try:
                with warnings.catch_warnings():  # MoE adapters: peft's rank/alpha patterns for expert weights
                    warnings.filterwarnings("ignore", message=".*did not match any targeted", category=RuntimeWarning)
                    return PeftModel.from_pretrained(self.model, str(self.ckpt), is_trainable=True)
            except Exception as exc:
                raise CheckpointError(
                    f"the adapter weights in {self.ckpt} are unreadable ({_short(exc)}); "
                    f"delete {self.ckpt_dir} to start over"
                ) from exc
        cfg = self.cfg
        if cfg.target_modules is None:
            cfg.target_modules, cfg.target_parameters = pick_targets(self.model)
        if cfg.target_parameters and cfg.dropout:
            self.say(
                f"MoE experts are fused 3-D weights: LoRA adapts them too ({len(cfg.target_parameters)} "
                f"expert tensors), which peft supports only without dropout: --dropout {cfg.dropout:g} -> 0"
            )
            cfg.dropout = 0.0
        torch.manual_seed(cfg.seed)  # the LoRA A matrices start random: the same seed, the same adapter
        lora = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            target_parameters=cfg.target_parameters or None,
            task_type="CAUSAL_LM",
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # peft: unmatched rank/alpha patterns
                return get_peft_model(self.model, lora)
        except ValueError as exc:
            raise FinetuneError(f"cannot put LoRA adapters on {type(self.model).__name__}: {_short(exc)}") from exc

    def _load_optimizer(self) -> None:
        path = self.ckpt / "optimizer.pt"
        if not path.is_file():
            raise CheckpointError(f"checkpoint {self.ckpt} has no optimizer.pt; delete {self.ckpt_dir} to start over")
        try:
            self.optimizer.load_state_dict(checkpoint.load_torch(path))
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{path} does not match this adapter ({_short(exc)}); delete {self.ckpt_dir} to start over"
            ) from exc

    def save_checkpoint(self) -> None:
        import torch

        if self.main:
            unwrapped = self.accel.unwrap_model(self.model)

            def write(tmp: Path):
                unwrapped.save_pretrained(str(tmp))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                (tmp / "state.json").write_text(json.dumps(self.state, indent=1))

            checkpoint.save_atomic(self.ckpt_dir, write)
        self.accel.wait_for_everyone()

    # -- training -----------------------------------------------------------------------------------
    def rows_for(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch not in self.epoch_cache:
            self.epoch_cache.clear()
            self.epoch_cache[epoch] = self.builder.epoch_rows(self.cfg.seed, epoch)
        rows = self.epoch_cache[epoch]
        take = [(index * self.rows_per_step + k) % len(rows) for k in range(self.rows_per_step)]
        return rows[take]

    def train(self, max_minutes: float | None) -> None:
        from tqdm import tqdm

        self.run_start = time.time()
        self.run_tokens = 0
        self.loss_ema = None
        self.recent: list[float] = []
        self.log_every = max(1, self.total_steps // 50)
        bar = tqdm(
            total=self.total_steps,
            initial=self.state["step"],
            desc="finetune",
            unit="step",
            dynamic_ncols=True,
            disable=not self.main,
        )
        try:
            while self.state["step"] < self.total_steps:
                if max_minutes is not None and time.time() - self.run_start > max_minutes * 60:
                    self.stop_reason = "time limit"
                    break
                self.train_step(bar)
        except KeyboardInterrupt:
            bar.close()
            self.save_checkpoint()
            raise FinetuneInterrupted(
                f"interrupted at step {self.state['step']} of {self.total_steps}; the "
                f"checkpoint in {self.ckpt_dir} is saved: run again with --resume to "
                f"continue"
            ) from None
        bar.close()
        self.save_checkpoint()
        if self.stop_reason != "completed":
            self.say(
                f"stopped at step {self.state['step']} of {self.total_steps} ({self.stop_reason}); "
                f"--resume continues the run"
            )

    def train_step(self, bar) -> None:
        import torch

        cfg, state = self.cfg, self.state
        step = state["step"]
        t0, c0 = time.time(), time.process_time()
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # LoRA dropout: the same masks after a resume
        rows = torch.from_numpy(self.rows_for(step)).long()
        lr = lr_at(step, self.total_steps, cfg, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss, step_tokens = self._accumulate(rows)
        self.accel.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += step_tokens * self.world
        self.run_tokens += step_tokens * self.world
        state["train_seconds"] += time.time() - t0
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - c0
        self._log(bar, step_loss, lr)
        if state["step"] % cfg.checkpoint_every == 0 and state["step"] < self.total_steps:
            self.save_checkpoint()

    def _accumulate(self, rows) -> tuple[float, int]:
        """Forward + backward over the step's micro-batches (this process's share): (mean loss, real tokens)."""
        import torch

        cfg, accel = self.cfg, self.accel
        autocast = accel.autocast if self.dev.type == "cuda" else nullcontext  # bf16 on CUDA, fp32 on CPU
        step_loss, step_tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            first = (micro * self.world + accel.process_index) * cfg.batch_size
            batch = rows[first : first + cfg.batch_size]
            real = batch >= 0
            ids = torch.where(real, batch, self.pad_id).to(self.dev)
            labels = torch.where(real, batch, -100).to(self.dev)
            sync = nullcontext() if micro == cfg.grad_accum - 1 else accel.no_sync(self.model)
            with sync:
                with autocast():
                    loss = self.model(input_ids=ids, labels=labels).loss
                accel.backward(loss / cfg.grad_accum)
            step_loss += loss.item() / cfg.grad_accum
            step_tokens += int(real.sum())
        return step_loss, step_tokens

    def _log(self, bar, step_loss: float, lr: float) -> None:
        state = self.state
        self.recent.append(step_loss)
        self.loss_ema = step_loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * step_loss
        elapsed = max(1e-6, time.time() - self.run_start)
        bar.update(1)
        bar.set_postfix(
            loss=f"{self.loss_ema:.3f}",
            lr=f"{lr:.1e}",
            tok_s=f"{self.run_tokens / elapsed:,.0f}",
            epoch=f"{state['step'] / self.steps_per_epoch:.2f}",
        )
        if state["step"] % self.log_every == 0 or state["step"] == self.total_steps:
            state["history"].append(
                {
                    "step": state["step"],
                    "loss": round(sum(self.recent) / len(self.recent), 4),
                    "lr": lr,
                    "tokens": state["tokens"],
                }
            )
            self.recent = []

    # -- the adapter, after-measurements and the report ---------------------------------------------
    def finish(self) -> dict | None:
        import torch

        from aigc_code.finetune import report

        result = None
        if self.main:
            unwrapped = self.accel.unwrap_model(self.model)
            unwrapped.save_pretrained(str(self.out))
            (self.out / "README.md").unlink(missing_ok=True)  # peft's empty model card template
            (self.out / "base_model.json").write_text(json.dumps(self.fingerprint, indent=1))
            if self.loaded.dtype == torch.float32:
                unwrapped.merge_adapter()  # exact in fp32, and as fast as the base model for the measurements
            eval_tuned = self.run_eval(unwrapped, self.out, "the base model + adapter")
            result = report.build(
                state=self.state,
                data=self.data,
                cfg=self.cfg,
                eval_base=self.state["eval_base"],
                eval_tuned=eval_tuned,
                stop_reason=self.stop_reason,
                out=self.out,
                fim=self.fim.family if self.fim else None,
                run_seconds=time.time() - self.run_start,
                device=f"{self.dev}" + (f" x{self.world}" if self.world > 1 else ""),
            )
            report.write(result, self.out)
            result["pipeline"] = self.measure_pipeline()
        self.accel.wait_for_everyone()
        return result

    def measure_pipeline(self) -> dict:
        """The adapter and the repository index, alone and together, through the editor's pipeline."""
        from aigc_code.finetune import pipeline_eval

        if not self.cfg.pipeline_holes or not self.data.val:
            return {}
        result = pipeline_eval.pipeline_comparison(
            self.data,
            str(self.base_path),
            self.out,
            self.cfg.pipeline_holes,
            self.cfg.seed,
            self.out / "pipeline-work",
            device=str(self.dev),
            echo=self.say,
        )
        pipeline_eval.append_to_report(result, self.out)
        for name, row in result.items():
            self.say(f"  {name}: next-line exact match {row['exact_match']:.1%} (n={row['n']})")
        return result


def _short_names(names: list[str]) -> list[str]:
    """`model.layers.3.self_attn.q_proj` -> `q_proj`, deduplicated in order (for messages)."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
