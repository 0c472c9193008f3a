"""Turn a pretraining run's checkpoint into the shippable default model with an honest model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from aigc_code import checkpoint
from aigc_code.errors import CheckpointError

SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def export_model(run: Path, corpus: Path, out: Path) -> Path:
    ckpt = checkpoint.latest(run / "checkpoint")
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in {run}; run `aigc-code pretrain train --out {run}` first")
    state = checkpoint.read_state(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if (ckpt / name).exists():
            shutil.copy2(ckpt / name, out / name)
    stats = json.loads((corpus / "stats.json").read_text()) if (corpus / "stats.json").exists() else {}
    # trained with PSM and SPM: SPM at inference lets the KV cache cover everything before the cursor
    (out / "aigc_code.json").write_text(json.dumps({"fim_layout": "spm"}, indent=1) + "\n")
    (out / "training_state.json").write_text(
        json.dumps({k: state[k] for k in ("step", "tokens", "train_seconds", "runs", "history", "config")}, indent=1)
    )
    (out / "MODEL_CARD.md").write_text(model_card(state, stats, out))
    return out


def model_card(state: dict, stats: dict, out: Path) -> str:
    config = json.loads((out / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        params = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    last = state["history"][-1] if state["history"] else {}
    val = last.get("val_loss", {})
    shape = state["config"]["shape"]
    lines = [
        "# aigc-code default model",
        "",
        "A small Llama-architecture code model trained from scratch on CPU by `aigc-code pretrain`, so that",
        "aigc-code works on a fresh machine with zero downloads. It is a demo-grade model: it produces",
        "code-shaped text and learns local patterns (indentation, brackets, common keywords), but it does not",
        "write correct programs. Point `--model` at a real checkpoint (Qwen2.5-Coder, StarCoder2, DeepSeek-Coder)",
        "for real work.",
        "",
        "## Facts",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {params / 1e6:.2f}M ({shape['layers']} layers, hidden {shape['hidden']}, "
        f"{shape['heads']} heads, tied embeddings) |",
        f"| vocabulary | {config['vocab_size']} (byte-level BPE with StarCoder-style FIM tokens) |",
        f"| context | {shape['context']} tokens |",
        f"| objective | next token, {int(state['config']['fim_rate'] * 100)}% fill-in-the-middle (PSM/SPM mix) |",
        f"| tokens seen (cumulative) | {state['tokens']:,} |",
        f"| optimizer steps | {state['step']:,} over {state['runs']} run(s) |",
        f"| training time | {state['train_seconds'] / 3600:.2f} h wall clock on one CPU thread of a shared 2-core machine |",
        f"| final train loss (last 50 steps) | {last.get('train_loss', 'n/a')} nats/token |",
        "",
        "## Validation loss per language (nats/token, held-out files, plain left-to-right text)",
        "",
        "| language | files (train+val) | characters | validation loss |",
        "|---|---:|---:|---:|",
    ]
    for lang in sorted(val):
        lines.append(
            f"| {lang} | {stats.get('files', {}).get(lang, '?')} | {stats.get('chars', {}).get(lang, 0):,} "
            f"| {val[lang]} |"
        )
    lines += [
        "",
        "## Corpus",
        "",
        "Built offline by `aigc-code pretrain corpus` (see `aigc_code/pretrain/corpus.py`): CPython's standard",
        "library (Python), npm packages installed into a scratch folder (JavaScript, TypeScript), `/usr/include`",
        "(C, C++ incl. libstdc++ and Boost headers), the Go standard library and `/usr/share/gocode` (Go), Debian's",
        "`librust-*-dev` crates (Rust) and the JDK's `src.zip` (Java). Binary, minified, generated and huge files",
        "are dropped; exact and near duplicates removed (MinHash); ~3% of files per language held out by path hash.",
        "Packages held out for the finetune and repository benchmarks: "
        + "; ".join(f"{lang}: {', '.join(names)}" for lang, names in stats.get("held_out_packages", {}).items())
        + ".",
        "",
        "## Reproduce / continue",
        "",
        "```",
        "aigc-code pretrain corpus --out runs/corpus",
        "nice aigc-code pretrain train --corpus runs/corpus --out runs/pretrain --threads 1   # resumable; repeat",
        "aigc-code pretrain export --run runs/pretrain --out aigc_code/default_model",
        "```",
        "",
        "On a fresh clone (no `runs/`), continue from the shipped model instead of starting over:",
        "`aigc-code pretrain train --out runs/pretrain --from-model aigc_code/default_model` (a fresh",
        "optimizer; the cumulative counts continue from `training_state.json`).",
        "",
        "Training resumes from the last atomic checkpoint and accumulates tokens across runs; a CUDA GPU is used",
        "automatically when present. Ctrl-C or SIGTERM finishes the step in progress and writes a checkpoint",
        "before it stops (exit status 130); a second Ctrl-C stops at once.",
        "",
    ]
    return "\n".join(lines)


def _prod(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total
