"""Training examples from source files: FIM spans and plain windows, packed into fixed-length rows.

Each epoch visits every training file about once per `context` tokens it holds. An example is,
with probability `fim_rate` (when the base model has FIM tokens), a fill-in-the-middle example
whose middle is a syntactic unit (`spans.FileSpans`) or, less often, a random span
(`fim.random_split`), laid out with the base model's own tokens in PSM or SPM order
(`FimTokens.psm`/`.spm`, the layouts pretraining used and the engine prompts with); otherwise a
plain left-to-right window. PSM examples are token-healed like engine prompts: the prefix's last
token moves to the start of the middle, so the model learns to complete from exactly the prompt
it will be given. The prefix and suffix are cut to fit the context exactly as the
engine cuts them at inference time (everything if it fits, else the suffix to a quarter of the
budget and the prefix to the rest). Examples end with the end-of-text token and are packed
first-fit into rows of `context` tokens; the rest of a row is padding (label -100).

Token ids are assembled the way `Engine.build_prompt` assembles a prompt: the BOS token first when the
tokenizer adds one (Llama-3, DeepSeek: read from what the tokenizer does, `vocab.adds_bos`), the FIM
markers as their own ids, and the text pieces encoded as text -- a FIM marker string written in a source
file stays characters (`vocab.TextEncoder`), it never becomes a control id.

Everything is a pure function of (files, tokenizer, config, seed, epoch), so a resumed run sees
exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from aigc_code.fim import FimTokens, random_split
from aigc_code.finetune.data import SourceFile
from aigc_code.finetune.spans import FileSpans
from aigc_code.vocab import TextEncoder, adds_bos, control_tokens

PAD = -1  # padding marker inside packed rows (becomes pad_token_id in inputs and -100 in labels)


@dataclass
class ExampleConfig:
    context: int
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    syntactic_rate: float = 0.7  # share of FIM middles cut at syntactic units (the rest: random spans)
    max_middle_fraction: float = 0.25  # longest middle, as a fraction of the context


class ExampleBuilder:
    def __init__(self, files: list[SourceFile], tokenizer, fim: FimTokens | None, cfg: ExampleConfig):
        if cfg.context < 32:
            raise ValueError("context length must be at least 32 tokens")
        self.files = files
        self.tokenizer = tokenizer
        self.fim = fim
        self.cfg = cfg
        self.eos = tokenizer.eos_token_id
        self._encode = TextEncoder(tokenizer, control_tokens(tokenizer))
        self.bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
        self.marker_ids = (
            {name: tokenizer.convert_tokens_to_ids(name) for name in (fim.prefix, fim.suffix, fim.middle)}
            if fim
            else {}
        )
        self.max_middle = max(8, int(cfg.context * cfg.max_middle_fraction))
        self.token_counts = [len(self.encode(f.text)) for f in files]
        self.chars_per_token = [
            max(1.0, len(f.text) / max(1, n)) for f, n in zip(files, self.token_counts, strict=True)
        ]
        self._spans: dict[int, FileSpans] = {}

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def spans(self, i: int) -> FileSpans:
        if i not in self._spans:
            f = self.files[i]
            self._spans[i] = FileSpans(f.text, f.language, max_chars=int(self.max_middle * self.chars_per_token[i] * 2))
        return self._spans[i]

    # -- examples -------------------------------------------------------------------------------
    def examples_per_file(self, i: int) -> int:
        return max(1, math.ceil(self.token_counts[i] / self.cfg.context))

    def epoch_examples(self, seed: int, epoch: int) -> list[list[int]]:
        rng = random.Random(seed * 1_000_003 + epoch)
        out = []
        for i in range(len(self.files)):
            for _ in range(self.examples_per_file(i)):
                out.append(self.example(i, rng))
        return [ids for ids in out if len(ids) > 1]

    def example(self, i: int, rng: random.Random) -> list[int]:
        if self.fim is not None and rng.random() < self.cfg.fim_rate:
            ids = self.fim_example(i, rng)
            if ids is not None:
                return ids
        return self.window_example(i, rng)

    def window_example(self, i: int, rng: random.Random) -> list[int]:
        """A plain left-to-right window starting at a line start (end-of-text if it reaches the end)."""
        text = self.files[i].text
        ctx = self.cfg.context
        chars = int(ctx * self.chars_per_token[i] * 1.5) + 64
        start = rng.randrange(max(1, len(text) - chars // 2)) if len(text) > chars // 2 else 0
        start = text.rfind("\n", 0, start) + 1 if start else 0
        window = text[start : start + chars]
        ids = self.bos + self.encode(window)
        if start + chars >= len(text) and len(ids) < ctx and self.eos is not None:
            return ids + [self.eos]
        return ids[:ctx]

    def pick_span(self, i: int, rng: random.Random) -> tuple[int, int] | None:
        text = self.files[i].text
        if rng.random() < self.cfg.syntactic_rate:
            span = self.spans(i).sample(rng)
            return (span.start, span.end) if span else None
        width = int(self.max_middle * self.chars_per_token[i] * 1.5) + 8
        w0 = rng.randrange(max(1, len(text) - width))
        window = text[w0 : w0 + width]
        prefix, middle, _ = random_split(window, rng)
        return w0 + len(prefix), w0 + len(prefix) + len(middle)

    def fim_example(self, i: int, rng: random.Random) -> list[int] | None:
        text = self.files[i].text
        for _ in range(4):
            span = self.pick_span(i, rng)
            if span is None:
                continue
            middle = text[span[0] : span[1]]
            mid_ids = self.encode(middle)
            if 0 < len(mid_ids) <= self.max_middle:
                break
        else:
            return None
        prefix, suffix = self.fit(
            text[: span[0]], text[span[1] :], self.cfg.context - len(mid_ids) - 4, self.chars_per_token[i]
        )
        if rng.random() < self.cfg.spm_rate:
            ids = self.fim_ids(prefix, suffix, middle, spm=True)
        else:
            prefix, middle = self.heal(prefix, middle)
            ids = self.fim_ids(prefix, suffix, middle, spm=False)
        if self.eos is not None:
            ids.append(self.eos)
        return ids[: self.cfg.context]

    def fim_ids(self, prefix: str, suffix: str, middle: str, spm: bool) -> list[int]:
        """The ids of `FimTokens.psm`/`.spm` text: markers as control ids, the pieces encoded as text."""
        pre, suf, mid = ([self.marker_ids[m]] for m in (self.fim.prefix, self.fim.suffix, self.fim.middle))
        if spm:
            return self.bos + pre + suf + self.encode(suffix) + mid + self.encode(prefix) + self.encode(middle)
        return self.bos + pre + self.encode(prefix) + suf + self.encode(suffix) + mid + self.encode(middle)

    def heal(self, prefix: str, middle: str) -> tuple[str, str]:
        """Move the prefix's last token into the middle, as `Engine` token healing does at inference.

        The engine drops the last prompt token and has the model spell it out again as the start
        of the completion, so a PSM example is laid out the same way: the model learns to begin a
        middle with the removed text (e.g. the newline and indentation before the next line).
        """
        if not prefix:
            return prefix, middle
        tail = prefix[-256:]
        offsets = self.tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) < 2:
            return prefix, middle
        start = len(prefix) - len(tail) + offsets[-1][0]
        if not 0 < start < len(prefix):
            return prefix, middle
        return prefix[:start], prefix[start:] + middle

    def fit(self, prefix: str, suffix: str, budget: int, chars_per_token: float) -> tuple[str, str]:
        """Prefix and suffix cut (at token boundaries) the way `Engine.build_prompt` cuts them."""
        reach = int(budget * chars_per_token * 3) + 256  # more characters than `budget` tokens can hold
        pre_text = prefix[-reach:]
        suf_text = suffix[:reach]
        pre = self.tokenizer(pre_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        suf = self.tokenizer(suf_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(pre) + len(suf) <= budget:
            return pre_text, suf_text
        n_suf = min(len(suf), max(budget // 4, budget - len(pre)))
        n_pre = min(len(pre), max(0, budget - n_suf))
        if n_pre < len(pre):
            pre_text = pre_text[pre[len(pre) - n_pre][0] :] if n_pre else ""
        suf_text = suf_text[: suf[n_suf - 1][1]] if n_suf else ""
        return pre_text, suf_text

    # -- rows -----------------------------------------------------------------------------------
    def epoch_rows(self, seed: int, epoch: int) -> np.ndarray:
        """[rows, context] int32 token ids of one epoch, PAD where a row is not full."""
        examples = self.epoch_examples(seed, epoch)
        random.Random(seed * 7_919 + epoch).shuffle(examples)
        return pack(examples, self.cfg.context)


def pack(examples: list[list[int]], context: int, min_room: int = 8) -> np.ndarray:
    """First-fit packing of examples (each at most `context` long) into rows."""
    rows: list[list[int]] = []
    open_rows: list[int] = []  # indices of rows with room left
    for ids in examples:
        ids = ids[:context]
        for k, r in enumerate(open_rows):
            if len(rows[r]) + len(ids) <= context:
                rows[r].extend(ids)
                if context - len(rows[r]) < min_room:
                    open_rows.pop(k)
                break
        else:
            rows.append(list(ids))
            if context - len(ids) >= min_room:
                open_rows.append(len(rows) - 1)
            if len(open_rows) > 64:
                open_rows.pop(0)
    out = np.full((len(rows), context), PAD, dtype=np.int32)
    for r, ids in enumerate(rows):
        out[r, : len(ids)] = ids
    return out
