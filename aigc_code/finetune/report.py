"""finetune_report.json / finetune_report.md: what was trained on, what was left out, before vs after."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

METRICS = [
    # (label, section, key, higher is better)
    ("validation loss (nats/token)", "validation", "loss", False),
    ("validation perplexity", "validation", "perplexity", False),
    ("next-line exact match", "next_line", "exact_match", True),
    ("next-line edit similarity", "next_line", "edit_similarity", True),
    ("span exact match", "span", "exact_match", True),
    ("span edit similarity", "span", "edit_similarity", True),
]


def comparison(eval_base: dict, eval_tuned: dict) -> list[dict]:
    rows = []
    for label, section, key, higher in METRICS:
        if section not in eval_base or section not in eval_tuned:
            continue
        before, after = eval_base[section][key], eval_tuned[section][key]
        relative = (after - before) / before if before else None
        rows.append(
            {
                "metric": label,
                "base": before,
                "tuned": after,
                "change": round(after - before, 4),
                "relative_change": round(relative, 4) if relative is not None else None,
                "better": (after > before) if higher else (after < before),
                "n": eval_base[section].get("n", eval_base[section].get("tokens")),
            }
        )
    return rows


def build(
    *,
    state: dict,
    data,
    cfg,
    eval_base: dict,
    eval_tuned: dict,
    stop_reason: str,
    out: Path,
    fim: str | None,
    run_seconds: float,
    device: str,
) -> dict:
    seconds = state["train_seconds"]
    return {
        "adapter": str(out),
        "base_model": state["base"],
        "base_description": state["base_fingerprint"]["description"],
        "fim": fim,
        "data": data.summary(),
        "training": {
            "config": asdict(cfg),
            "context": state["context"],
            "steps": state["step"],
            "total_steps": state["total_steps"],
            "steps_per_epoch": state["steps_per_epoch"],
            "epochs": round(state["step"] / state["steps_per_epoch"], 3),
            "stop_reason": stop_reason,
            "tokens": state["tokens"],
            "train_seconds": round(seconds, 1),
            "run_seconds": round(run_seconds, 1),  # the whole run: data, measurements, training
            "train_cpu_seconds": round(state.get("cpu_seconds", 0.0), 1),
            "tokens_per_second": round(state["tokens"] / seconds, 1) if seconds else None,
            "runs": state["runs"],
            "device": device,
            "history": state["history"],
        },
        "evaluation": {"base": eval_base, "tuned": eval_tuned, "table": comparison(eval_base, eval_tuned)},
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"
    return str(value)


def markdown(report: dict) -> str:
    d, t, e = report["data"], report["training"], report["evaluation"]
    lines = [
        "# Finetune report",
        "",
        f"- repository: `{d['repo']}` "
        f"(files from {'`git ls-files`' if d['file_source'] == 'git' else 'a folder walk'})",
        f"- base model: `{report['base_model']}` ({report['base_description']}), "
        f"{'FIM tokens: ' + report['fim'] if report['fim'] else 'no FIM tokens (prefix-only examples)'}",
        f"- adapter: `{report['adapter']}` (use it with `aigc-code complete --adapter {report['adapter']}`)",
        "",
        "## Before / after (held-out files)",
        "",
        "| metric | base | base + adapter | change |",
        "|---|---:|---:|---:|",
    ]
    for row in e["table"]:
        rel = f" ({row['relative_change'] * 100:+.1f}%)" if row["relative_change"] is not None else ""
        change = f"{row['change']:+.4f}" if abs(row["change"]) < 10 else f"{row['change']:+,.2f}"
        lines.append(f"| {row['metric']} | {_fmt(row['base'])} | {_fmt(row['tuned'])} | {change}{rel} |")
    base = e["base"]
    lines += [
        "",
        f"Validation: {base['validation']['tokens']:,} tokens of {d['val_files']} held-out file(s); "
        f"next-line: {base.get('next_line', {}).get('n', 0)} lines (cursor after the indentation, greedy, "
        f"stop at newline); span: {base.get('span', {}).get('n', 0)} syntactic spans (FIM, greedy).",
        "",
        "## Data",
        "",
        f"- training: {d['train_files']} files ({d['train_chars']:,} characters); held out: {d['val_files']} files "
        f"({d['val_chars']:,} characters): "
        + ", ".join(f"`{p}`" for p in d["val_paths"][:20])
        + (" ..." if len(d["val_paths"]) > 20 else ""),
        "- languages: " + (", ".join(f"{k} {v}" for k, v in d["languages"].items()) or "none"),
        "- excluded: " + (", ".join(f"{v} {k}" for k, v in d["excluded"].items()) or "nothing"),
    ]
    if d["secrets"]:
        lines += ["", "### Files left out because they contain secrets", "", "| file | rule (line) |", "|---|---|"]
        for s in d["secrets"]:
            rules = ", ".join(f"{r['rule']} ({r['line']})" for r in s["rules"])
            lines.append(f"| `{s['path']}` | {rules} |")
    cfg = t["config"]
    lines += [
        "",
        "## Training",
        "",
        f"- LoRA r={cfg['rank']}, alpha={cfg['alpha']:g}, dropout={cfg['dropout']:g} on "
        f"{', '.join(cfg['target_modules'] or [])}",
        f"- {t['steps']} of {t['total_steps']} steps ({t['epochs']:g} epochs, {t['stop_reason']}); "
        f"{cfg['batch_size']} x {cfg['grad_accum']} sequences of {t['context']} tokens per step per process; "
        f"lr {cfg['lr']:g} (warmup + cosine), seed {cfg['seed']}",
        f"- examples: {cfg['fim_rate']:.0%} fill-in-the-middle ({cfg['spm_rate']:.0%} of them SPM, the rest PSM; "
        f"{cfg['syntactic_rate']:.0%} cut at syntactic units), the rest plain windows",
        f"- {t['tokens']:,} tokens in {t['train_seconds']:,.0f} s ({_fmt(t['tokens_per_second'])} tokens/s; "
        f"{t['train_cpu_seconds']:,.0f} s of CPU time in this process) on {t['device']}; {t['runs']} run(s)",
    ]
    if t["history"]:
        first, last = t["history"][0], t["history"][-1]
        lines.append(
            f"- training loss {first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']})"
        )
    samples = e["tuned"].get("next_line", {}).get("samples", [])
    base_samples = e["base"].get("next_line", {}).get("samples", [])
    if samples:
        lines += ["", "## Next-line examples", "", "| file | expected | base | base + adapter |", "|---|---|---|---|"]
        for b, s in zip(base_samples, samples, strict=False):
            lines.append(
                f"| `{s['path']}` | `{_cell(s['target'])}` | `{_cell(b['prediction'])}` | `{_cell(s['prediction'])}` |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str, width: int = 60) -> str:
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def write(report: dict, out: Path) -> None:
    (out / "finetune_report.json").write_text(json.dumps(report, indent=1))
    (out / "finetune_report.md").write_text(markdown(report))
