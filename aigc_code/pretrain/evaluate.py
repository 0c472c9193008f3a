"""Held-out measurements of pretrained models, side by side on the same questions.

Per language, on the corpus's validation files: validation loss (plain left-to-right windows,
nats/token) and next-line completion — exact match and edit similarity, with the finetune
evaluator's definition (`aigc_code.finetune.evaluate`: the cursor after a line's indentation,
the rest of the file as the suffix, one greedy completion stopped at the newline). Every model
answers exactly the same windows and lines, so a new checkpoint is compared with the shipped
one in one run (`aigc-code pretrain evaluate --model A --model B`); weights are committed only
when the loss is lower in every language.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from aigc_code.pretrain.corpus import load_split


def _validation_windows(records: list[dict], tokenizer, context: int, windows: int, seed: int) -> dict:
    import torch

    by_lang: dict[str, list[str]] = {}
    for r in records:
        by_lang.setdefault(r["lang"], []).append(r["text"])
    rng = random.Random(seed)
    out = {}
    for lang, texts in sorted(by_lang.items()):
        ids = tokenizer.encode("\n\n".join(texts), add_special_tokens=False)
        starts = sorted(rng.sample(range(max(1, len(ids) - context)), min(windows, max(1, len(ids) - context))))
        rows = [ids[s : s + context] for s in starts if len(ids[s : s + context]) == context]
        if rows:
            out[lang] = torch.tensor(rows)
    return out


def _loss(model, batches: dict, batch_size: int = 8) -> dict[str, float]:
    import torch

    losses = {}
    with torch.inference_mode():
        for lang, ids in batches.items():
            total, count = 0.0, 0
            for i in range(0, len(ids), batch_size):
                chunk = ids[i : i + batch_size].to(model.device)
                total += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
                count += len(chunk)
            losses[lang] = round(total / count, 4)
    return losses


def _next_line(engine, records: list[dict], per_language: int, seed: int) -> dict[str, dict]:
    from aigc_code.finetune.data import SourceFile
    from aigc_code.finetune.evaluate import completion_metrics, next_line_tasks

    out = {}
    for lang in sorted({r["lang"] for r in records}):
        files = [SourceFile(r["path"], lang, r["text"]) for r in records if r["lang"] == lang]
        tasks = next_line_tasks(files, per_language, seed)
        metrics = completion_metrics(engine, tasks).get("next_line", {})
        out[lang] = {k: metrics.get(k) for k in ("n", "exact_match", "edit_similarity")}
    return out


def evaluate_model(model_dir: Path, records: list[dict], windows: int, per_language: int, seed: int) -> dict:
    from aigc_code.engine import load_engine

    engine = load_engine(model_dir, device="cpu")
    context = min(512, int(getattr(engine.model.config, "max_position_embeddings", 512)))
    batches = _validation_windows(records, engine.tokenizer, context, windows, seed)
    return {
        "model": str(model_dir),
        "val_loss": _loss(engine.model, batches),
        "next_line": _next_line(engine, records, per_language, seed),
    }


def compare(models: list[Path], corpus: Path, windows: int = 32, per_language: int = 40, seed: int = 0) -> dict:
    records = load_split(corpus, "val")
    results = [evaluate_model(m, records, windows, per_language, seed) for m in models]
    report = {
        "corpus": str(corpus),
        "windows": windows,
        "lines_per_language": per_language,
        "seed": seed,
        "models": results,
    }
    if len(results) >= 2:
        base, new = results[0]["val_loss"], results[-1]["val_loss"]
        report["last_beats_first_everywhere"] = all(new[k] < base[k] for k in base if k in new)
    return report


def markdown(report: dict) -> str:
    langs = sorted({lang for m in report["models"] for lang in m["val_loss"]})
    lines = ["| model | metric | " + " | ".join(langs) + " | mean |", "|---|---|" + "---:|" * (len(langs) + 1)]
    for m in report["models"]:
        loss = [m["val_loss"].get(lang) for lang in langs]
        em = [m["next_line"].get(lang, {}).get("exact_match") for lang in langs]
        sim = [m["next_line"].get(lang, {}).get("edit_similarity") for lang in langs]
        name = Path(m["model"]).name
        for label, values, fmt in (
            ("val loss", loss, "{:.3f}"),
            ("next-line EM", em, "{:.1%}"),
            ("edit sim", sim, "{:.3f}"),
        ):
            known = [v for v in values if v is not None]
            mean = fmt.format(sum(known) / len(known)) if known else "–"
            cells = [fmt.format(v) if v is not None else "–" for v in values]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
