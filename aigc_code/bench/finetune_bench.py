"""LoRA vs full finetuning of the same model: training tokens/s and peak memory, measured in one run.

Each variant runs in a fresh subprocess so that its peak resident memory (CPU) or peak CUDA
allocation is its own; both see the same batches from the same seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def _variant(model: str | None, mode: str, steps: int, batch: int, context: int, device: str | None) -> dict:
    import resource

    import torch
    from peft import LoraConfig, get_peft_model

    from aigc_code.loading import load_model

    loaded = load_model(model, device=device)
    lm = loaded.model
    lm.train()
    if mode == "lora":
        lm = get_peft_model(
            lm,
            LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0),
        )
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    vocab = len(loaded.tokenizer)
    context = min(context, lm.config.max_position_embeddings)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens, start = 0, None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        ids = torch.randint(0, vocab, (batch, context), generator=gen).to(loaded.device)
        loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 1:
            tokens += ids.numel()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated()
        if loaded.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "mode": mode,
        "device": str(loaded.device),
        "trainable_params": sum(p.numel() for p in params),
        "tokens_per_s": tokens / seconds,
        "peak_memory_mb": peak / 2**20,
    }


def bench_finetune(
    model: str | None = None, steps: int = 10, batch: int = 4, context: int = 256, device: str | None = None
) -> dict:
    results = {}
    for mode in ("full", "lora"):
        code = (
            "import json, sys; from aigc_code.bench.finetune_bench import _variant; "
            f"print(json.dumps(_variant({model!r}, {mode!r}, {steps}, {batch}, {context}, {device!r})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} variant failed: {proc.stderr.strip().splitlines()[-1:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        **results,
        "tokens_per_s_ratio_lora_over_full": results["lora"]["tokens_per_s"] / results["full"]["tokens_per_s"],
        "peak_memory_ratio_lora_over_full": results["lora"]["peak_memory_mb"] / results["full"]["peak_memory_mb"],
        "trainable_params_ratio": results["lora"]["trainable_params"] / results["full"]["trainable_params"],
    }
