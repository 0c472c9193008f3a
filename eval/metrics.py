"""pass@k and the per-language summary built from samples.jsonl records."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from n samples with c correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _outcomes(records: list[tuple[dict, dict | None]]) -> tuple[dict[str, list[bool]], Counter, int]:
    """(pass/fail per task over its scored samples, status counts, skipped samples)."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    statuses: Counter = Counter()
    skipped = 0
    for g, e in records:
        if e is None:
            statuses["pending"] += 1
            continue
        statuses[e["status"]] += 1
        if e["status"] == "skipped":
            skipped += 1
            continue
        per_task[g["task_id"]].append(bool(e["passed"]))
    return per_task, statuses, skipped


def _speed(records: list[tuple[dict, dict | None]], problems: int) -> tuple[dict, dict]:
    gen_ms = sum(g.get("gen_ms") or 0.0 for g, _ in records)
    gen_tokens = sum(g.get("generated_tokens") or 0 for g, _ in records)
    exec_s = [e["exec_s"] for _, e in records if e and e.get("status") != "skipped"]
    generation = {
        "tokens": gen_tokens,
        "ms_total": round(gen_ms, 1),
        "tokens_per_s": round(gen_tokens / (gen_ms / 1000), 2) if gen_ms > 0 else None,
        "ms_per_problem": round(gen_ms / problems, 1) if problems and gen_ms > 0 else None,
    }
    execution = {
        "programs": len(exec_s),
        "s_total": round(sum(exec_s), 3),
        "s_mean": round(sum(exec_s) / len(exec_s), 4) if exec_s else None,
    }
    return generation, execution


def summarize_language(records: list[tuple[dict, dict | None]], ks=KS) -> dict:
    """``records``: (generation, execution-or-None) pairs of one language."""
    per_task, statuses, skipped = _outcomes(records)
    syntax = [g.get("syntax_ok") for g, _ in records if g.get("syntax_ok") is not None]
    tasks = sorted(per_task)
    n_min = min((len(v) for v in per_task.values()), default=0)
    passk = {}
    for k in ks:
        if tasks and n_min >= k:
            passk[f"pass@{k}"] = float(np.mean([pass_at_k(len(per_task[t]), sum(per_task[t]), k) for t in tasks]))
    problems = {g["task_id"] for g, _ in records}
    generation, execution = _speed(records, len(problems))
    return {
        "problems": len(problems),
        "problems_scored": len(tasks),
        "samples": len(records),
        "samples_per_problem": n_min,
        "passed_samples": sum(sum(v) for v in per_task.values()),
        **passk,
        "statuses": dict(sorted(statuses.items())),
        "skipped": skipped,
        "syntax_valid_rate": (sum(syntax) / len(syntax)) if syntax else None,
        "generation": generation,
        "execution": execution,
    }
