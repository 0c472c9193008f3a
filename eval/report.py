"""Build ``report.json``, ``report.md`` and ``passk.png`` from a run directory.

Everything is derived from ``run.json`` and ``samples.jsonl``, so ``aigc-code eval report DIR``
can rebuild the report at any time (also of an unfinished run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from aigc_code.eval.metrics import KS, summarize_language
from aigc_code.eval.problems import KNOWN_DEFECTS, LANGUAGES
from aigc_code.eval.store import read_records


class ReportError(ValueError):
    pass


def build_report(out: str | Path) -> dict:
    out = Path(out)
    run_path, samples_path = out / "run.json", out / "samples.jsonl"
    if not run_path.exists() and not samples_path.exists():
        raise ReportError(f"{out} is not an evaluation run directory (no run.json / samples.jsonl)")
    run = json.loads(run_path.read_text()) if run_path.exists() else {"config": {}}
    cfg = run.get("config", {})
    gens, execs, bad = read_records(samples_path)
    by_lang: dict[str, list] = {}
    for key, g in gens.items():
        by_lang.setdefault(key[0], []).append((g, execs.get(key)))
    order = [lang for lang in LANGUAGES if lang in by_lang] + sorted(set(by_lang) - set(LANGUAGES))
    languages = {}
    reference = {}
    for lang in order:
        pairs = sorted(by_lang[lang], key=lambda ge: (_task_order(ge[0]["task_id"]), ge[0]["sample"]))
        summary = summarize_language(pairs)
        if summary["skipped"] and summary["skipped"] == summary["samples"]:
            reasons = {e["detail"] for _, e in pairs if e and e["status"] == "skipped"}
            summary["skipped_reason"] = "; ".join(sorted(reasons))
        languages[lang] = summary
        if cfg.get("reference"):
            humaneval_x = str(cfg.get("benchmark", "")).lower() in ("humaneval-x", "humanevalx", "humaneval_x")
            reference[lang] = _reference_check(pairs, KNOWN_DEFECTS if humaneval_x else {})
    report = {
        "benchmark": cfg.get("benchmark"),
        "model": cfg.get("model") or ("(canonical solutions)" if cfg.get("reference") else "(embedded default)"),
        "adapter": cfg.get("adapter"),
        "reference": bool(cfg.get("reference")),
        "settings": {k: cfg.get(k) for k in ("samples", "temperature", "top_p", "max_new_tokens", "seed", "workers",
                                             "limit", "timeout")},
        "sandbox": run.get("sandbox"),
        "last_run_elapsed_s": run.get("last_run_elapsed_s"),
        "languages": languages,
        "unreadable_lines": bad,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if cfg.get("reference"):
        report["reference_check"] = reference
    return report


def _task_order(task_id: str):
    tail = task_id.rsplit("/", 1)[-1]
    return (0, int(tail), task_id) if tail.isdigit() else (1, 0, task_id)


def _reference_check(pairs: list, known_defects: dict) -> dict:
    known, other, skipped = [], [], []
    for g, e in pairs:
        if e is None:
            continue
        if e["status"] == "skipped":
            skipped.append({"task_id": g["task_id"], "reason": e["detail"]})
            continue
        if e["passed"]:
            continue
        item = {"task_id": g["task_id"], "status": e["status"], "detail": (e.get("detail") or "")[-600:]}
        if g["task_id"] in known_defects:
            known.append({**item, "reason": known_defects[g["task_id"]]})
        else:
            other.append(item)
    ran = [e for _, e in pairs if e and e["status"] != "skipped"]
    considered = [e for g, e in pairs if e and e["status"] != "skipped" and g["task_id"] not in known_defects]
    return {
        "programs": len(ran),
        "passed": sum(e["passed"] for e in ran),
        "pass_rate": (sum(e["passed"] for e in ran) / len(ran)) if ran else None,
        "pass_rate_excluding_known_defects": (sum(e["passed"] for e in considered) / len(considered))
        if considered else None,
        "known_defects": known,
        "other_failures": other,
        "skipped": skipped,
    }


def _fmt(x, pct=True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:g}"


def render_markdown(report: dict) -> str:
    lines = [f"# Evaluation report: {report['benchmark']}", ""]
    lines.append(f"- model: `{report['model']}`" + (f" + adapter `{report['adapter']}`" if report["adapter"] else ""))
    s = report["settings"]
    lines.append(f"- samples/problem: {s.get('samples')}, temperature {s.get('temperature')}, top-p {s.get('top_p')}, "
                 f"max new tokens {s.get('max_new_tokens')}, workers {s.get('workers')}"
                 + (f", limit {s['limit']} problems" if s.get("limit") else "")
                 + (" — **reference run (canonical solutions)**" if report["reference"] else ""))
    if report.get("last_run_elapsed_s") is not None:
        lines.append(f"- wall time of the last `eval run` invocation: {report['last_run_elapsed_s']:.1f} s")
    sb = report.get("sandbox") or {}
    if sb:
        lines.append(f"- sandbox: mode `{sb.get('mode')}`, network isolated: {sb.get('network_isolated')}, "
                     f"private /tmp: {sb.get('private_tmp')}"
                     + (f" ({'; '.join(sb['notes'])})" if sb.get("notes") else ""))
    lines += ["", "| language | problems | n | " + " | ".join(f"pass@{k}" for k in KS)
              + " | syntax-valid | gen tok/s | gen ms/problem | exec s/program | not passed |",
              "|---|---:|---:|" + "---:|" * len(KS) + "---:|---:|---:|---:|---|"]
    for lang, r in report["languages"].items():
        if r.get("skipped_reason"):
            lines.append(f"| {lang} | {r['problems']} | {r['samples_per_problem']} | "
                         + " | ".join("–" for _ in KS) + f" | {_fmt(r['syntax_valid_rate'])} | – | – | – | "
                         f"skipped: {r['skipped_reason']} |")
            continue
        bad = ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if k != "passed") or "–"
        g, e = r["generation"], r["execution"]
        lines.append(f"| {lang} | {r['problems']} | {r['samples_per_problem']} | "
                     + " | ".join(_fmt(r.get(f"pass@{k}")) for k in KS)
                     + f" | {_fmt(r['syntax_valid_rate'])} | {_fmt(g['tokens_per_s'], False)} | "
                       f"{_fmt(g['ms_per_problem'], False)} | {_fmt(e['s_mean'], False)} | {bad} |")
    if report.get("reference_check"):
        lines += ["", "## Reference self-check", "",
                  "| language | programs | passed | pass rate | excluding known defects |", "|---|---:|---:|---:|---:|"]
        for lang, rc in report["reference_check"].items():
            lines.append(f"| {lang} | {rc['programs']} | {rc['passed']} | {_fmt(rc['pass_rate'])} | "
                         f"{_fmt(rc['pass_rate_excluding_known_defects'])} |")
        known = [(lang, d) for lang, rc in report["reference_check"].items() for d in rc["known_defects"]]
        other = [(lang, d) for lang, rc in report["reference_check"].items() for d in rc["other_failures"]]
        skipped = [(lang, d) for lang, rc in report["reference_check"].items() for d in rc["skipped"]]
        lines += ["", "### Known defects in the data (expected failures)", ""]
        lines += [f"- {d['task_id']} ({d['status']}): {d['reason']}" for _, d in known] or ["- none failed"]
        lines += ["", "### Other failures", ""]
        for _, d in other:
            detail = d["detail"].strip().splitlines()
            lines.append(f"- {d['task_id']} ({d['status']}): {detail[-1] if detail else ''}")
        if not other:
            lines.append("- none")
        if skipped:
            lines += ["", "### Skipped", ""]
            lines += [f"- {d['task_id']}: {d['reason']}" for _, d in skipped]
    lines += ["", "pass@k: unbiased estimator of Chen et al. (2021), averaged over problems; k is shown only when "
              "every problem has at least k samples. Skipped samples (toolchain missing) are not scored.", ""]
    return "\n".join(lines)


def plot_passk(report: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = [lang for lang, r in report["languages"].items() if any(f"pass@{k}" in r for k in KS)]
    ks = [k for k in KS if any(f"pass@{k}" in report["languages"][lang] for lang in langs)]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(langs) + 2), 3.6), dpi=110)
    width = 0.8 / max(1, len(ks))
    for j, k in enumerate(ks):
        vals = [100 * report["languages"][lang].get(f"pass@{k}", 0.0) for lang in langs]
        bars = ax.bar([i + (j - (len(ks) - 1) / 2) * width for i in range(len(langs))], vals, width, label=f"pass@{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("% of problems")
    ax.set_ylim(0, 105)
    title = "reference solutions" if report["reference"] else Path(str(report["model"])).name
    ax.set_title(f"{report['benchmark'] and Path(str(report['benchmark'])).name}: pass@k ({title})", fontsize=9)
    if ks:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(out: str | Path) -> dict:
    out = Path(out)
    report = build_report(out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render_markdown(report))
    plot_passk(report, out / "passk.png")
    return report
