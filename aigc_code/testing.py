"""Tiny models for tests and examples: a real tokenizer and a random Llama, built in seconds."""

from __future__ import annotations

import itertools
from pathlib import Path

TINY_CORPUS_LANGUAGES = ("python", "js", "go", "java", "cpp", "rust")


def tiny_corpus(problems_per_language: int = 40) -> list[str]:
    """Real code that never changes: HumanEval-X prompts and solutions shipped with the package."""
    import gzip
    import json
    from importlib import resources

    texts = []
    for lang in TINY_CORPUS_LANGUAGES:
        data = resources.files("aigc_code.eval.data") / f"humaneval_{lang}.jsonl.gz"
        with gzip.open(data.open("rb"), "rt") as f:
            for line in itertools.islice(f, problems_per_language):
                problem = json.loads(line)
                texts.append(problem["prompt"] + problem["canonical_solution"])
    return texts


def make_tiny_model(
    path: str | Path,
    seed: int = 0,
    vocab_size: int = 600,
    hidden: int = 32,
    layers: int = 2,
    context: int = 512,
    fim: bool = True,
) -> Path:
    """Write a tiny FIM-capable Llama checkpoint (tokenizer + safetensors) to `path` and return it.

    The tokenizer is a byte-level BPE trained on a fixed code sample (`tiny_corpus`), with the same special
    tokens as the shipped default model; the weights are random (seeded), so outputs are
    arbitrary but deterministic.
    """
    import torch

    from aigc_code.pretrain.tokenizer import train_tokenizer
    from aigc_code.pretrain.train import ModelShape, make_model

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    tokenizer = train_tokenizer(tiny_corpus(), vocab_size=vocab_size, fim=fim)
    torch.manual_seed(seed)
    model = make_model(
        ModelShape(
            hidden=hidden, layers=layers, heads=2, intermediate=hidden * 2, context=context, vocab_size=vocab_size
        ),
        tokenizer,
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
