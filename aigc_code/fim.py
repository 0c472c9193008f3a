"""Fill-in-the-middle: which special tokens a checkpoint uses, and how prompts are laid out.

Training (pretrain, finetune) and inference (engine) both format FIM text here, so the layout a
model learned is the layout it is asked in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FimTokens:
    family: str
    prefix: str
    suffix: str
    middle: str
    eot: tuple[str, ...] = ()  # extra end-of-turn / end-of-middle markers that end a completion
    requires: tuple[str, ...] = ()  # tokens besides the three markers that identify the family

    def matches(self, vocab) -> bool:
        return all(tok in vocab for tok in (self.prefix, self.suffix, self.middle, *self.requires))

    def psm(self, prefix: str, suffix: str, middle: str = "") -> str:
        """Prefix-Suffix-Middle: the layout used at inference time."""
        return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}{middle}"

    def spm(self, prefix: str, suffix: str, middle: str = "") -> str:
        """Suffix-Prefix-Middle (the StarCoder/FIM-paper variant), used as a training augmentation."""
        return f"{self.prefix}{self.suffix}{suffix}{self.middle}{prefix}{middle}"


# Known families, most specific first. Detection looks these strings up in the tokenizer's vocabulary.
# CodeGemma uses Qwen's three marker names; its `<|file_separator|>` (Qwen has `<|file_sep|>`) tells them apart.
KNOWN_FIM = [
    FimTokens(
        "codegemma",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ("<|file_separator|>",),
        requires=("<|file_separator|>",),
    ),
    FimTokens(
        "qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|fim_pad|>", "<|endoftext|>", "<|file_sep|>")
    ),
    FimTokens(
        "starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<fim_pad>", "<file_sep>", "<|endoftext|>")
    ),
    FimTokens("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ("<|EOT|>",)),
    FimTokens("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>",)),
    FimTokens("codellama", "<PRE>", "<SUF>", "<MID>", ("<EOT>",)),
]

# The layout aigc-code's own models are trained with (StarCoder names).
DEFAULT_FIM = next(f for f in KNOWN_FIM if f.family == "starcoder")
SPECIAL_TOKENS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<file_sep>"]


# Repository-level prompt markers (repo name, file separator) of families trained with them:
# Qwen2.5-Coder (`<|repo_name|>`, `<|file_sep|>`) and StarCoder2 (`<repo_name>`, `<file_sep>`).
# Both markers must be in the vocabulary: aigc-code's own models carry `<file_sep>` but never learned it.
REPO_MARKERS = {"qwen": ("<|repo_name|>", "<|file_sep|>"), "starcoder": ("<repo_name>", "<file_sep>")}


def repo_markers(fim: FimTokens | None, vocab) -> tuple[str, str] | None:
    """(repo-name marker, file-separator marker) when the checkpoint's family has them, else None."""
    markers = REPO_MARKERS.get(fim.family) if fim is not None else None
    return markers if markers is not None and all(m in vocab for m in markers) else None


def detect_fim(vocab: dict[str, int] | set[str]) -> FimTokens | None:
    """The FIM family whose three markers are all in `vocab`, or None (prefix-only prompting)."""
    return next((fim for fim in KNOWN_FIM if fim.matches(vocab)), None)


def random_split(text: str, rng) -> tuple[str, str, str]:
    """Cut `text` into (prefix, middle, suffix) the way editors see it.

    Half the time at two random characters (the FIM paper), half the time from a random
    column to the end of that line or a few lines further (the common editor case).
    """
    if len(text) < 2:
        return text, "", ""
    if rng.random() < 0.5:
        i, j = sorted(rng.sample(range(len(text) + 1), 2))
        return text[:i], text[i:j], text[j:]
    i = rng.randrange(len(text))
    end = i
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
        nl = text.find("\n", end)
        end = len(text) if nl < 0 else nl + 1
        if end >= len(text):
            break
    return text[:i], text[i:end], text[end:]


def fim_example(text: str, rng, fim: FimTokens, spm_rate: float = 0.5) -> str:
    """One FIM training string (without the end-of-text token)."""
    prefix, middle, suffix = random_split(text, rng)
    layout = fim.spm if rng.random() < spm_rate else fim.psm
    return layout(prefix, suffix, middle)
