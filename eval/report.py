"""Build ``report.json``, ``report.md`` and ``passk.png`` from a run directory.

Everything is derived from ``run.json`` and ``samples.jsonl``, so ``aigc-code eval report DIR``
can rebuild the report at any time (also of an unfinished run). The report names the model
(or server, or scored file), the prompt format, every failed task with its status and an
excerpt of the reason, an overall row, skipped languages as skipped, and for the infilling
benchmark pass@1 per task type with the raw (before post-processing) pass rate beside it.
``ci_failures`` says why a run should fail a CI job.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from aigc_code.eval.infill import KINDS, RAW_SUFFIX, base_task_id, task_kind
from aigc_code.eval.metrics import KS, summarize_language
from aigc_code.eval.problems import KNOWN_DEFECTS, LANGUAGES, is_humaneval_x, is_infill
from aigc_code.eval.store import read_records

MAX_LISTED = 200  # failed tasks listed in report.md (report.json lists all)


class ReportError(ValueError):
    pass


def _load(out: Path) -> tuple[dict, dict, dict, int]:
    run_path, samples_path = out / "run.json", out / "samples.jsonl"
    if not run_path.exists() and not samples_path.exists():
        raise ReportError(f"{out} is not an evaluation run directory (no run.json / samples.jsonl)")
    run = json.loads(run_path.read_text()) if run_path.exists() else {"config": {}}
    gens, execs, bad = read_records(samples_path)
    return run, gens, execs, bad


def _pairs_by_language(gens: dict, execs: dict) -> dict[str, list]:
    by_lang: dict[str, list] = {}
    for key, g in gens.items():
        by_lang.setdefault(key[0], []).append((g, execs.get(key)))
    order = [lang for lang in LANGUAGES if lang in by_lang] + sorted(set(by_lang) - set(LANGUAGES))
    return {
        lang: sorted(by_lang[lang], key=lambda ge: (_task_order(ge[0]["task_id"]), ge[0]["sample"])) for lang in order
    }


def model_name(cfg: dict) -> str:
    if cfg.get("reference"):
        return "(canonical solutions)"
    if cfg.get("samples_file"):
        return f"samples from {cfg['samples_file']}"
    if cfg.get("backend") == "openai":
        return f"{cfg.get('model')} @ {cfg.get('endpoint')}"
    return cfg.get("model") or "(unrecorded: a run made before the model was recorded)"


def _language_summary(pairs: list) -> dict:
    main = [ge for ge in pairs if not ge[0]["task_id"].endswith(RAW_SUFFIX)]
    summary = summarize_language(main)
    if summary["skipped"] and summary["skipped"] == summary["samples"]:
        reasons = {e["detail"] for _, e in main if e and e["status"] == "skipped"}
        summary["skipped_reason"] = "; ".join(sorted(reasons))
    raw = [ge for ge in pairs if ge[0]["task_id"].endswith(RAW_SUFFIX)]
    if raw:
        summary["raw_pass@1"] = summarize_language(raw, ks=(1,)).get("pass@1")
    return summary


def _infill_breakdown(pairs: list) -> dict:
    out = {}
    for kind in KINDS:
        main = [ge for ge in pairs if task_kind(ge[0]["task_id"]) == kind and not ge[0]["task_id"].endswith(RAW_SUFFIX)]
        raw = [ge for ge in pairs if task_kind(ge[0]["task_id"]) == kind and ge[0]["task_id"].endswith(RAW_SUFFIX)]
        if not main:
            continue
        s = summarize_language(main, ks=(1,))
        out[kind] = {
            "tasks": s["problems"],
            "pass@1": s.get("pass@1"),
            "syntax_valid_rate": s["syntax_valid_rate"],
            "raw_pass@1": summarize_language(raw, ks=(1,)).get("pass@1") if raw else None,
        }
    return out


def _failures(pairs: list, known_defects: dict) -> list[dict]:
    out = []
    for g, e in pairs:
        if e is None or e["passed"] or e["status"] == "skipped" or g["task_id"].endswith(RAW_SUFFIX):
            continue
        detail = (e.get("detail") or "").strip()
        item = {"task_id": g["task_id"], "sample": g["sample"], "status": e["status"], "excerpt": excerpt(detail)}
        if base_task_id(g["task_id"]) in known_defects:
            item["known_defect"] = known_defects[base_task_id(g["task_id"])]
        out.append(item)
    return out


_ERROR_LINE = re.compile(r"error|assert|panic|exception|expected|undefined|cannot|not found|timed out|killed", re.I)
_NOISE = ("at ", "Node.js v", "FAIL", "#", "...", "note:", "= note", "-->", "|")


def excerpt(detail: str, most: int = 200) -> str:
    """The line of a program's output that best says why it failed: the last one that looks like an
    error (node, go and the JVM end with banners, FAIL lines and stack frames), else the last line."""
    lines = [x.strip() for x in detail.splitlines() if x.strip()]
    useful = [x for x in lines if not x.startswith(_NOISE)] or lines
    errors = [x for x in useful if _ERROR_LINE.search(x)]
    return (errors[-1] if errors else useful[-1] if useful else "")[:most]


def _overall(by_lang: dict[str, list]) -> dict:
    pairs = [
        ({**g, "task_id": f"{lang}:{g['task_id']}"}, e)
        for lang, ps in by_lang.items()
        for g, e in ps
        if not g["task_id"].endswith(RAW_SUFFIX)
    ]
    return _language_summary(pairs)


def _prompt_format(cfg: dict) -> str | None:
    if cfg.get("reference"):
        return "none (canonical solutions)"
    if cfg.get("samples_file"):
        return "unknown (samples generated elsewhere)"
    if is_infill(cfg.get("benchmark")):
        return "FIM prompt through the LSP pipeline"
    return cfg.get("prompt_format")


def build_report(out: str | Path) -> dict:
    out = Path(out)
    run, gens, execs, bad = _load(out)
    cfg = run.get("config", {})
    by_lang = _pairs_by_language(gens, execs)
    bench = cfg.get("benchmark")
    known = KNOWN_DEFECTS if (is_humaneval_x(bench) or is_infill(bench)) else {}
    languages = {lang: _language_summary(pairs) for lang, pairs in by_lang.items()}
    for lang in cfg.get("languages") or []:
        if lang not in languages:
            languages[lang] = {
                "problems": 0,
                "samples": 0,
                "samples_per_problem": 0,
                "skipped": 0,
                "skipped_reason": "no problems in this benchmark",
                "statuses": {},
            }
    report = {
        "benchmark": bench,
        "model": model_name(cfg),
        "model_fingerprint": cfg.get("model_fingerprint"),
        "backend": cfg.get("backend"),
        "prompt_format": _prompt_format(cfg),
        "adapter": cfg.get("adapter"),
        "reference": bool(cfg.get("reference")),
        "settings": {
            k: cfg.get(k)
            for k in (
                "samples",
                "temperature",
                "top_p",
                "max_new_tokens",
                "seed",
                "workers",
                "limit",
                "timeout",
                "concurrency",
                "infill_per_type",
            )
        },
        "sandbox": run.get("sandbox"),
        "requests": run.get("requests"),
        "last_run_elapsed_s": run.get("last_run_elapsed_s"),
        "languages": languages,
        "overall": _overall(by_lang) if by_lang else None,
        "failures": {lang: _failures(pairs, known) for lang, pairs in by_lang.items()},
        "unreadable_lines": bad,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if is_infill(bench):
        report["infill"] = {lang: _infill_breakdown(pairs) for lang, pairs in by_lang.items()}
    if cfg.get("reference"):
        report["reference_check"] = {lang: _reference_check(pairs, known) for lang, pairs in by_lang.items()}
    return report


def ci_failures(report: dict, allow_skip: bool = False, failures: bool = True) -> list[str]:
    """Why a run must fail CI: (``failures``, for ``--reference``) a failure that is not a listed known
    defect or a program without a verdict; (unless ``allow_skip``) a skipped language or problem."""
    reasons = []
    for lang, rc in (report.get("reference_check") or {}).items() if failures else ():
        reasons += [f"{lang} {d['task_id']} {d['status']}" for d in rc["other_failures"]]
        if rc.get("pending"):
            reasons.append(f"{lang}: {rc['pending']} programs have no verdict")
        if not allow_skip and rc["skipped"]:
            reasons.append(f"{lang}: {len(rc['skipped'])} programs skipped ({rc['skipped'][0]['reason']})")
    if not allow_skip:
        reasons += [
            f"{lang}: skipped ({r['skipped_reason']})"
            for lang, r in report["languages"].items()
            if r.get("skipped_reason") and lang not in (report.get("reference_check") or {})
        ]
    return reasons


def _task_order(task_id: str):
    parts = base_task_id(task_id).rsplit("/", 1)
    tail = parts[-1]
    return (0, int(tail), task_id) if tail.isdigit() else (1, 0, task_id)


def _sort_reference(pairs: list, known_defects: dict) -> tuple[list, list, list]:
    """(known-defect failures, other failures, skipped) of a reference run's records."""
    known, other, skipped = [], [], []
    for g, e in pairs:
        if e is None or e["passed"]:
            continue
        if e["status"] == "skipped":
            skipped.append({"task_id": g["task_id"], "reason": e["detail"]})
            continue
        item = {"task_id": g["task_id"], "status": e["status"], "detail": (e.get("detail") or "")[-600:]}
        reason = known_defects.get(base_task_id(g["task_id"]))
        if reason:
            known.append({**item, "reason": reason})
        else:
            other.append(item)
    return known, other, skipped


def _reference_check(pairs: list, known_defects: dict) -> dict:
    known, other, skipped = _sort_reference(pairs, known_defects)
    ran = [e for _, e in pairs if e and e["status"] != "skipped"]
    considered = [
        e for g, e in pairs if e and e["status"] != "skipped" and base_task_id(g["task_id"]) not in known_defects
    ]
    passed = sum(e["passed"] for e in ran)
    return {
        "programs": len(ran),
        "passed": passed,
        "pending": sum(1 for _, e in pairs if e is None),
        "pass_rate": passed / len(ran) if ran else None,
        "pass_rate_excluding_known_defects": (sum(e["passed"] for e in considered) / len(considered))
        if considered
        else None,
        "known_defects": known,
        "other_failures": other,
        "skipped": skipped,
    }


def _fmt(x, pct=True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:g}"


def _md_header(report: dict) -> list[str]:
    lines = [f"# Evaluation report: {report['benchmark']}", ""]
    lines.append(
        f"- model: `{report['model']}`"
        + (f" + adapter `{report['adapter']}`" if report["adapter"] else "")
        + (f" (fingerprint `{report['model_fingerprint']}`)" if report.get("model_fingerprint") else "")
    )
    lines.append(f"- prompt: {report.get('prompt_format') or 'unrecorded'}")
    s = report["settings"]
    lines.append(
        f"- samples/problem: {s.get('samples')}, temperature {s.get('temperature')}, top-p {s.get('top_p')}, "
        f"max new tokens {s.get('max_new_tokens')}, workers {s.get('workers')}"
        + (f", limit {s['limit']} problems" if s.get("limit") else "")
        + (" — **reference run (canonical solutions)**" if report["reference"] else "")
    )
    if report.get("last_run_elapsed_s") is not None:
        lines.append(f"- wall time of the last invocation: {report['last_run_elapsed_s']:.1f} s")
    rq = report.get("requests")
    if rq and report.get("backend") == "openai":
        lines.append(
            f"- requests: {rq['requests']} with up to {rq['concurrency']} in flight; mean in flight "
            f"{rq['mean_in_flight']}, none in flight for {rq['idle_s']:.2f} s of {rq['wall_s']:.2f} s"
        )
    sb = report.get("sandbox") or {}
    if sb:
        lines.append(
            f"- sandbox: mode `{sb.get('mode')}`, network isolated: {sb.get('network_isolated')}, "
            f"private /tmp: {sb.get('private_tmp')}" + (f" ({'; '.join(sb['notes'])})" if sb.get("notes") else "")
        )
    return lines


def _md_row(name: str, r: dict) -> str:
    if r.get("skipped_reason"):
        return (
            f"| {name} | {r['problems']} | {r['samples_per_problem']} | "
            + " | ".join("–" for _ in KS)
            + f" | – | – | – | – | – | skipped: {r['skipped_reason']} |"
        )
    bad = ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if k != "passed") or "–"
    g, e = r["generation"], r["execution"]
    return (
        f"| {name} | {r['problems']} | {r['samples_per_problem']} | "
        + " | ".join(_fmt(r.get(f"pass@{k}")) for k in KS)
        + f" | {_fmt(r.get('raw_pass@1'))} | {_fmt(r['syntax_valid_rate'])} | {_fmt(g['tokens_per_s'], False)} | "
        f"{_fmt(g['ms_per_problem'], False)} | {_fmt(e['s_mean'], False)} | {bad} |"
    )


def _md_table(report: dict) -> list[str]:
    lines = [
        "",
        "| language | problems | n | "
        + " | ".join(f"pass@{k}" for k in KS)
        + " | raw pass@1 | syntax-valid | gen tok/s | gen ms/problem | exec s/program | not passed |",
        "|---|---:|---:|" + "---:|" * len(KS) + "---:|---:|---:|---:|---:|---|",
    ]
    lines += [_md_row(lang, r) for lang, r in report["languages"].items()]
    if report.get("overall"):
        lines.append(_md_row("**overall**", report["overall"]))
    return lines


def _md_infill(report: dict) -> list[str]:
    if not report.get("infill"):
        return []
    lines = [
        "",
        "## Infilling by task type",
        "",
        "raw = the backend's text before aigc-code's post-processing; pass@1 = after it (what the editor shows).",
        "",
        "| language | task type | tasks | pass@1 | raw pass@1 | syntax-valid |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for lang, kinds in report["infill"].items():
        for kind, r in kinds.items():
            lines.append(
                f"| {lang} | {kind} | {r['tasks']} | {_fmt(r['pass@1'])} | {_fmt(r['raw_pass@1'])} | "
                f"{_fmt(r['syntax_valid_rate'])} |"
            )
    return lines


def _md_reference(report: dict) -> list[str]:
    rcs = report.get("reference_check")
    if not rcs:
        return []
    lines = [
        "",
        "## Reference self-check",
        "",
        "| language | programs | passed | pass rate | excluding known defects |",
        "|---|---:|---:|---:|---:|",
    ]
    for lang, rc in rcs.items():
        lines.append(
            f"| {lang} | {rc['programs']} | {rc['passed']} | {_fmt(rc['pass_rate'])} | "
            f"{_fmt(rc['pass_rate_excluding_known_defects'])} |"
        )
    known = [d for rc in rcs.values() for d in rc["known_defects"]]
    skipped = [d for rc in rcs.values() for d in rc["skipped"]]
    lines += ["", "### Known defects in the data (expected failures)", ""]
    lines += [f"- {d['task_id']} ({d['status']}): {d['reason']}" for d in known] or ["- none failed"]
    if skipped:
        lines += ["", "### Skipped", ""] + [f"- {d['task_id']}: {d['reason']}" for d in skipped]
    return lines


def _md_failures(report: dict) -> list[str]:
    items = [(lang, f) for lang, fs in (report.get("failures") or {}).items() for f in fs if not f.get("known_defect")]
    lines = ["", "## Failed tasks", ""]
    if not items:
        return lines + ["- none"]
    for lang, f in items[:MAX_LISTED]:
        lines.append(f"- {lang} {f['task_id']} #{f['sample']} ({f['status']}): `{f['excerpt'].replace('`', chr(39))}`")
    if len(items) > MAX_LISTED:
        lines.append(f"- ... {len(items) - MAX_LISTED} more in report.json")
    return lines


def render_markdown(report: dict) -> str:
    lines = _md_header(report) + _md_table(report) + _md_infill(report) + _md_reference(report) + _md_failures(report)
    lines += [
        "",
        "pass@k: unbiased estimator of Chen et al. (2021), averaged over problems; k is shown only when "
        "every problem has at least k samples. Skipped samples (toolchain missing) are not scored.",
        "",
    ]
    return "\n".join(lines)


def plot_passk(report: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = list(report["languages"])
    ks = [k for k in KS if any(f"pass@{k}" in r for r in report["languages"].values())]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(langs) + 2), 3.6), dpi=110)
    width = 0.8 / max(1, len(ks))
    for j, k in enumerate(ks):
        vals = [100 * (report["languages"][lang].get(f"pass@{k}") or 0.0) for lang in langs]
        bars = ax.bar([i + (j - (len(ks) - 1) / 2) * width for i in range(len(langs))], vals, width, label=f"pass@{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    for i, lang in enumerate(langs):
        if report["languages"][lang].get("skipped_reason"):
            ax.text(i, 50, "skipped", ha="center", va="center", rotation=90, fontsize=8, color="grey")
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
