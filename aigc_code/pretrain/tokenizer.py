"""Train the default model's byte-level BPE tokenizer (with FIM special tokens) on the corpus."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from aigc_code.fim import SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, fim: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE; `fim=False` leaves out the FIM tokens (for testing prefix-only models)."""
    special = SPECIAL_TOKENS if fim else SPECIAL_TOKENS[:1]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<fim_pad>" if fim else "<|endoftext|>",
        additional_special_tokens=special[1:],
        clean_up_tokenization_spaces=False,
    )


def sample_texts(records: list[dict], max_chars: int = 30_000_000, seed: int = 0) -> list[str]:
    """A language-balanced sample of documents to train the tokenizer on."""
    by_lang: dict[str, list[str]] = {}
    for r in records:
        by_lang.setdefault(r["lang"], []).append(r["text"])
    rng = random.Random(seed)
    budget = max_chars // max(1, len(by_lang))
    out = []
    for texts in by_lang.values():
        rng.shuffle(texts)
        used = 0
        for t in texts:
            if used >= budget:
                break
            out.append(t)
            used += len(t)
    return out


def build_tokenizer(records: list[dict], out: Path, vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    tokenizer = train_tokenizer(sample_texts(records), vocab_size)
    tokenizer.save_pretrained(out)
    return tokenizer


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
