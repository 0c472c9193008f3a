"""Before/after measurements on the held-out files of a repository.

- validation loss and perplexity: plain left-to-right windows of the held-out files, token-weighted;
- next-line completion: the cursor after a line's indentation, the rest of the file as the suffix
  (the line itself removed), one greedy completion with the engine stopped at the newline;
  exact match (trailing whitespace ignored) and edit similarity against the real line;
- span completion: the middle of a syntactic unit (statement, argument list, small block) with
  the engine's FIM prompt, generated until the model ends it; exact match (surrounding whitespace
  ignored) and edit similarity.

The tasks are drawn with a fixed seed from the validation files only, so the base model and the
base model + adapter answer exactly the same questions through the same `Engine` code path that
`aigc-code complete` uses.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from aigc_code.finetune.data import SourceFile
from aigc_code.finetune.spans import FileSpans
from aigc_code.similarity import edit_similarity

LINE_MAX_NEW_TOKENS = 48
SPAN_MAX_NEW_TOKENS = 64
SPAN_MAX_CHARS = 160


@dataclass
class CompletionTask:
    kind: str  # "next_line" | "span"
    path: str
    prefix: str
    suffix: str
    target: str


def next_line_tasks(files: list[SourceFile], n: int, seed: int) -> list[CompletionTask]:
    candidates = []
    for f in files:
        pos = 0
        for line in f.text.splitlines(keepends=True):
            body = line.rstrip("\r\n")
            content = body.strip()
            if len(content) >= 4 and pos > 0:
                indent = len(body) - len(body.lstrip())
                candidates.append((f, pos + indent, pos + len(body), content))
            pos += len(line)
    picked = random.Random(seed).sample(candidates, min(n, len(candidates)))
    return [
        CompletionTask("next_line", f.path, f.text[:start], f.text[end:], content) for f, start, end, content in picked
    ]


def span_tasks(files: list[SourceFile], n: int, seed: int) -> list[CompletionTask]:
    candidates = set()
    for i, f in enumerate(files):
        spans = FileSpans(f.text, f.language, max_chars=SPAN_MAX_CHARS)
        for kind in ("statement", "arguments", "block", "body"):
            for s in spans.by_kind.get(kind, []):
                middle = f.text[s.start : s.end]
                if len(middle.strip()) >= 3 and middle.count("\n") <= 3:
                    candidates.add((i, s.start, s.end))
    picked = random.Random(seed + 1).sample(sorted(candidates), min(n, len(candidates)))
    return [
        CompletionTask("span", files[i].path, files[i].text[:start], files[i].text[end:], files[i].text[start:end])
        for i, start, end in picked
    ]


def completion_metrics(engine, tasks: list[CompletionTask], progress=None) -> dict:
    """Exact match and edit similarity per task kind, plus a few examples."""
    from aigc_code.engine import GenerationConfig

    results: dict[str, dict] = {}
    for kind in ("next_line", "span"):
        todo = [t for t in tasks if t.kind == kind]
        if not todo:
            continue
        if kind == "next_line":
            cfg = GenerationConfig(max_new_tokens=LINE_MAX_NEW_TOKENS, stop=["\n"])
        else:
            cfg = GenerationConfig(max_new_tokens=SPAN_MAX_NEW_TOKENS)
        exact, sim, samples = 0, 0.0, []
        start = time.perf_counter()
        for task in todo:
            out = engine.complete(task.prefix, task.suffix, cfg).text
            if kind == "next_line":
                pred, target = out.split("\n")[0].rstrip(), task.target.rstrip()
            else:
                pred, target = out.strip(), task.target.strip()
            exact += pred == target
            sim += edit_similarity(pred, target)
            if len(samples) < 5:
                samples.append({"path": task.path, "target": target, "prediction": pred})
            if progress:
                progress()
        results[kind] = {
            "n": len(todo),
            "exact_match": round(exact / len(todo), 4),
            "edit_similarity": round(sim / len(todo), 4),
            "seconds": round(time.perf_counter() - start, 1),
            "samples": samples,
        }
    return results


def validation_windows(files: list[SourceFile], tokenizer, context: int, max_windows: int) -> list[list[int]]:
    """Non-overlapping `context`-token windows of the held-out files, taken round-robin across files."""
    from aigc_code.vocab import TextEncoder, control_tokens

    encode = TextEncoder(tokenizer, control_tokens(tokenizer))  # marker strings in a file stay text
    per_file = []
    for f in files:
        ids = encode(f.text)
        chunks = [ids[i : i + context] for i in range(0, len(ids), context)]
        per_file.append([c for c in chunks if len(c) >= 16])
    out = []
    k = 0
    while len(out) < max_windows and any(k < len(c) for c in per_file):
        for chunks in per_file:
            if k < len(chunks) and len(out) < max_windows:
                out.append(chunks[k])
        k += 1
    return out


@torch.no_grad()
def validation_loss(model, windows: list[list[int]], device, pad_id: int, batch_size: int = 4) -> dict:
    """Token-weighted mean cross-entropy (nats) and perplexity over `windows`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        width = max(len(w) for w in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for r, w in enumerate(batch):
            ids[r, : len(w)] = torch.tensor(w)
            labels[r, : len(w)] = torch.tensor(w)
        n = int((labels[:, 1:] != -100).sum())
        with autocast:
            loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
        total += float(loss) * n
        count += n
    if was_training:
        model.train()
    mean = total / max(1, count)
    return {"loss": round(mean, 4), "perplexity": round(math.exp(min(mean, 50.0)), 3), "tokens": count}


def evaluate_model(
    model, tokenizer, loaded_path, device, dtype, windows, tasks, pad_id, adapter=None, progress=None
) -> dict:
    """Validation loss and completion metrics for one model (plain base or base + adapter)."""
    from aigc_code.engine import Engine
    from aigc_code.loading import Loaded

    model.eval()
    out = {"validation": validation_loss(model, windows, device, pad_id)}
    engine = Engine(Loaded(model, tokenizer, loaded_path, adapter, device, dtype), reuse_kv=False)
    out.update(completion_metrics(engine, tasks, progress))
    return out
