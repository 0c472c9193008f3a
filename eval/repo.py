"""Repository completion benchmark (`aigc-code eval repo`): how often the product's suggestion is
the line a developer removed, with and without the workspace index.

For each repository: its source files are copied into the run folder; holes are punched (one
line, the cursor after its indentation; the removed text then exists nowhere the pipeline can
read — the file on disk is rewritten without it while that hole is completed); each hole is
completed through the very pipeline the LSP server runs (`aigc_code.pipeline.complete_once`)
once per configuration:

  none          no workspace index (open-file context only)
  context       cross-file chunks retrieved from the index into the prompt
  copy          copy candidates from the index (choice rule copy-first), no retrieved context
  both          both (copy-first)
  both-confident, both-likelihood, both-model-first   the other choice rules, for the record

Metrics per language and configuration: next-line exact match (the suggestion's first line is
the removed line), span exact match (the whole suggestion is exactly the removed text), edit
similarity of the first line, shown rate (any suggestion at all) and latency. Results are
appended to DIR/results.jsonl (a rerun resumes), then DIR/report.json, report.md and plot.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aigc_code.errors import AigcCodeError
from aigc_code.languages import language_for_path
from aigc_code.similarity import edit_similarity
from aigc_code.sourcefiles import read_text
from aigc_code.workspace import build_index
from aigc_code.workspace.files import IndexLimits, Skips, list_candidates

CONFIGS: dict[str, dict] = {
    "none": {"workspace_index": False},
    "context": {"index_context": True, "copy_candidates": False},
    "copy": {"index_context": False, "copy_candidates": True, "choice_rule": "copy-first"},
    "both": {"index_context": True, "copy_candidates": True, "choice_rule": "copy-first"},
    "both-confident": {"index_context": True, "copy_candidates": True, "choice_rule": "confident"},
    "both-likelihood": {"index_context": True, "copy_candidates": True, "choice_rule": "likelihood"},
    "both-model-first": {"index_context": True, "copy_candidates": True, "choice_rule": "model-first"},
}
DEFAULT_CONFIGS = ("none", "context", "copy", "both", "both-confident", "both-likelihood", "both-model-first")
_COMMENT = ("#", "//", "/*", "*", "--")


@dataclass(frozen=True)
class Hole:
    repo: str
    rel: str  # file path inside the repository
    line: int  # 0-based line number
    indent: str
    answer: str  # the removed text (the line after its indentation)

    @property
    def key(self) -> str:
        return f"{self.repo}:{self.rel}:{self.line}"


# --------------------------------------------------------------------------------------------
# Holes


def source_files(root: Path) -> list[Path]:
    """The files the workspace index reads (its own discovery: `git ls-files` or a `.gitignore`-aware
    walk, the same skips and caps), sorted, under `root` as given."""
    real_root = root.resolve()
    found = list_candidates(real_root, IndexLimits(), Skips())
    return sorted(root / real.relative_to(real_root) for real, _ in found)


def hole_candidates(text: str) -> list[int]:
    """Lines worth predicting: real code of some length, not comments or lone brackets."""
    lines = text.split("\n")
    keep = []
    for i, line in enumerate(lines):
        body = line.strip()
        if len(body) < 6 or body.startswith(_COMMENT) or not any(c.isalpha() for c in body):
            continue
        if i == 0 or i == len(lines) - 1:
            continue
        keep.append(i)
    return keep


def punch_holes(repo: str, root: Path, count: int, seed: int) -> list[Hole]:
    """`count` holes, one per file (files drawn at random, seeded), a random eligible line in each."""
    rng = random.Random(f"{seed}:{repo}")
    files = source_files(root)
    rng.shuffle(files)
    holes = []
    for path in files:
        if len(holes) >= count:
            break
        text, reason = read_text(path)
        if reason or not text:
            continue
        lines = hole_candidates(text)
        if not lines:
            continue
        i = rng.choice(lines)
        line = text.split("\n")[i]
        indent = line[: len(line) - len(line.lstrip())]
        holes.append(Hole(repo, str(path.relative_to(root)), i, indent, line.strip()))
    return holes


def holed_text(text: str, hole: Hole) -> tuple[str, int]:
    """The file without the hole's text (indentation kept) and the cursor's `str` index."""
    lines = text.split("\n")
    lines[hole.line] = hole.indent
    cursor = sum(len(x) + 1 for x in lines[: hole.line]) + len(hole.indent)
    return "\n".join(lines), cursor


def copy_repository(root: Path, dest: Path) -> Path:
    """The repository's source files only, under `dest` (the pipeline reads nothing else)."""
    if dest.exists():
        shutil.rmtree(dest)
    for path in source_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


# --------------------------------------------------------------------------------------------
# Scoring one suggestion


def score(hole: Hole, suggestion: str) -> dict:
    first = suggestion.split("\n", 1)[0].rstrip()
    return {
        "shown": bool(suggestion.strip()),
        "em_line": first.strip() == hole.answer,
        "em_span": suggestion.rstrip() == hole.answer,
        "edit_sim": round(edit_similarity(first.strip(), hole.answer), 4),
    }


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class RepoRun:
    out: Path
    repos: list[Path]
    holes: int = 40
    seed: int = 0
    configs: tuple[str, ...] = DEFAULT_CONFIGS
    settings: object = None  # aigc_code.settings.Settings with the backend's fields
    progress: bool = True

    def describe(self) -> dict:
        s = self.settings
        return {
            "repos": [str(p.resolve()) for p in self.repos],
            "holes": self.holes,
            "seed": self.seed,
            "configs": list(self.configs),
            "backend": s.backend,
            "model": s.model,
            "endpoint": s.endpoint,
            "adapter": s.adapter,
            "max_new_tokens": s.max_new_tokens,
        }


def _check_resume(run: RepoRun, fingerprint: str, scores: bool) -> None:
    """Refuse to mix settings in one run folder; record the run (and whether its backend can score
    candidates: the `likelihood` rule needs it) in run.json."""
    meta = run.out / "run.json"
    want = {**run.describe(), "model_fingerprint": fingerprint}
    if meta.exists():
        have = json.loads(meta.read_text())
        diff = sorted(k for k in want if have.get(k) != want[k])
        if diff:
            raise AigcCodeError(
                f"{run.out} holds a run with other settings ({', '.join(diff)}); use another --out or the same settings"
            )
    run.out.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({**want, "scores_candidates": scores}, indent=2))


def _done_keys(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: that hole is done again
        keys.add((r["hole"], r["config"]))
    return keys


def _settings_for(base, config: str):
    return dataclasses.replace(base, **CONFIGS[config])


def _complete_hole(hole: Hole, root: Path, configs, base, backend, index, done) -> Iterator[dict]:
    from aigc_code.pipeline import complete_once

    path = root / hole.rel
    original = path.read_text(encoding="utf-8", errors="replace")
    text, cursor = holed_text(original, hole)
    path.write_text(text, encoding="utf-8")
    index.update(path)  # the answer is now nowhere on disk nor in the index
    try:
        for config in configs:
            if (hole.key, config) in done:
                continue
            settings = _settings_for(base, config)
            workspace = index if settings.workspace_index else None
            t0 = time.perf_counter()
            outcome = complete_once(
                text,
                cursor,
                str(path),
                language_for_path(path) or "",
                settings,
                backend,
                workspace=workspace,
                invoked=True,
                shown_path=hole.rel,  # as the server shows it, the repository opened as the workspace
            )
            latency = (time.perf_counter() - t0) * 1000
            best = outcome.suggestions[0].text if outcome.suggestions else ""
            yield {
                "hole": hole.key,
                "config": config,
                "repo": hole.repo,
                "file": hole.rel,
                "line": hole.line + 1,
                "language": language_for_path(path),
                "answer": hole.answer,
                "suggestion": best,
                "chosen": outcome.timing.chosen,
                "latency_ms": round(latency, 2),
                "retrieval_ms": round(outcome.timing.retrieval_ms, 3),
                **score(hole, best),
            }
    finally:
        path.write_text(original, encoding="utf-8")
        index.update(path)


def _say(run: RepoRun, message: str) -> None:
    if run.progress:
        print(message, file=sys.stderr, flush=True)


def run_repo_benchmark(run: RepoRun) -> dict:
    """Run (or resume) the benchmark; returns the report (also written to DIR)."""
    from aigc_code.server.backend import backend_from_settings

    for repo in run.repos:
        if not repo.is_dir():
            raise AigcCodeError(f"{repo} is not a directory")
    backend = backend_from_settings(run.settings)
    _check_resume(run, model_fingerprint(run.settings), callable(getattr(backend, "score", None)))
    results = run.out / "results.jsonl"
    done = _done_keys(results)
    names = _repo_names(run.repos)
    with open(results, "a", encoding="utf-8") as sink:
        for repo, name in zip(run.repos, names, strict=True):
            _run_one_repo(run, repo, name, backend, done, sink)
    return write_report(run.out)


def _run_one_repo(run: RepoRun, repo: Path, name: str, backend, done, sink) -> None:
    root = copy_repository(repo, run.out / "work" / name)
    holes = punch_holes(name, root, run.holes, run.seed)
    _say(run, f"{name}: {len(holes)} holes in {len(source_files(root))} files; indexing")
    index = build_index([root], run.settings)
    for i, hole in enumerate(holes, 1):
        for record in _complete_hole(hole, root, run.configs, run.settings, backend, index, done):
            sink.write(json.dumps(record) + "\n")
            sink.flush()
        if i % 10 == 0 or i == len(holes):
            _say(run, f"{name}: {i}/{len(holes)} holes")


def _repo_names(repos: list[Path]) -> list[str]:
    names: list[str] = []
    for repo in repos:
        name = repo.resolve().name
        while name in names:
            name += "_"
        names.append(name)
    return names


def model_fingerprint(settings) -> str:
    """What the suggestions came from: the checkpoint's weights (hashed config + file sizes), or
    the remote endpoint and model name."""
    if settings.backend != "local":
        return f"{settings.backend}:{settings.endpoint}:{settings.model}"
    from aigc_code.loading import resolve_model_path

    path = resolve_model_path(settings.model)
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.glob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16] + (f"+{settings.adapter}" if settings.adapter else "")


# --------------------------------------------------------------------------------------------
# Report


def _summary(records: list[dict]) -> dict:
    lat = sorted(r["latency_ms"] for r in records)
    n = len(records)
    return {
        "holes": n,
        "em_line": round(sum(r["em_line"] for r in records) / n, 4),
        "em_span": round(sum(r["em_span"] for r in records) / n, 4),
        "edit_sim": round(statistics.fmean(r["edit_sim"] for r in records), 4),
        "shown": round(sum(r["shown"] for r in records) / n, 4),
        "latency_p50_ms": round(lat[n // 2], 1),
        "latency_p95_ms": round(lat[min(n - 1, int(n * 0.95))], 1),
        "retrieval_p50_ms": round(sorted(r.get("retrieval_ms", 0.0) for r in records)[n // 2], 3),
        "copy_chosen": round(sum(r.get("chosen") == "copy" for r in records) / n, 4),
    }


def _group(records: list[dict], key: str) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        out.setdefault(r[key], {}).setdefault(r["config"], []).append(r)
    return out


def _mean_over_repos(by_repo: dict, configs: list[str]) -> dict[str, float]:
    """Next-line exact match averaged over repositories (each counts once, whatever its size)."""
    out = {}
    for c in configs:
        values = [row[c]["em_line"] for row in by_repo.values() if c in row]
        out[c] = round(statistics.fmean(values), 4)
    return out


def build_report(records: list[dict], meta: dict) -> dict:
    configs = [c for c in meta["configs"] if any(r["config"] == c for r in records)]
    by_repo = {k: {c: _summary(v) for c, v in g.items()} for k, g in _group(records, "repo").items()}
    return {
        "run": meta,
        "configs": configs,
        "overall": {c: _summary([r for r in records if r["config"] == c]) for c in configs},
        "by_repo": by_repo,
        "by_language": {k: {c: _summary(v) for c, v in g.items()} for k, g in _group(records, "language").items()},
        "languages": {
            repo: Counter(r["language"] for r in records if r["repo"] == repo).most_common(1)[0][0] for repo in by_repo
        },
        "mean_over_repos_em_line": _mean_over_repos(by_repo, configs),
    }


def write_report(out: Path) -> dict:
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    if not records:
        raise AigcCodeError(f"{out}/results.jsonl holds no results")
    report = build_report(records, json.loads((out / "run.json").read_text()))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report, report["configs"]))
    _plot(report, report["configs"], out / "plot.png")
    return report


def markdown(report: dict, configs: list[str]) -> str:
    run = report["run"]
    lines = [
        f"# Repository completion benchmark ({run['backend']} {run.get('model') or 'embedded default model'})",
        "",
        f"{run['holes']} holes per repository, seed {run['seed']}.",
        "",
        *_rule_notes(run, configs),
        "Next-line exact match per repository (mean over repositories in the last row):",
        "",
        "| repository | language | " + " | ".join(configs) + " |",
        "|---|---|" + "---:|" * len(configs),
    ]
    for repo, row in report["by_repo"].items():
        lang = _language_of(report, repo) or ""
        cells = [f"{row[c]['em_line']:.1%}" if c in row else "–" for c in configs]
        lines.append(f"| {repo} | {lang} | " + " | ".join(cells) + " |")
    mean = report["mean_over_repos_em_line"]
    lines.append("| **mean** | | " + " | ".join(f"**{mean[c]:.1%}**" for c in configs) + " |")
    lines += [
        "",
        "All holes, per configuration:",
        "",
        "| configuration | next-line EM | span EM | edit sim | shown | copy chosen | p50 ms | p95 ms | "
        "retrieval p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        s = report["overall"][c]
        lines.append(
            f"| {c} | {s['em_line']:.1%} | {s['em_span']:.1%} | {s['edit_sim']:.3f} | {s['shown']:.0%} | "
            f"{s['copy_chosen']:.0%} | {s['latency_p50_ms']} | {s['latency_p95_ms']} | "
            f"{s['retrieval_p50_ms']} |"
        )
    return "\n".join(lines) + "\n"


def _rule_notes(run: dict, configs: list[str]) -> list[str]:
    """Which rule a configuration really ran with: `likelihood` needs a backend that scores."""
    if run.get("scores_candidates", True) or not any(CONFIGS[c].get("choice_rule") == "likelihood" for c in configs):
        return []
    return [
        "This backend cannot score candidates: `both-likelihood` ran as copy-first (the default rule, "
        "`confident`, needs no scores).",
        "",
    ]


def _language_of(report: dict, repo: str) -> str | None:
    return report.get("languages", {}).get(repo)


def _plot(report: dict, configs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    repos = list(report["by_repo"])
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(repos)), 4))
    for i, c in enumerate(configs):
        values = [report["by_repo"][r].get(c, {}).get("em_line", 0) * 100 for r in repos]
        ax.bar([x + i * width for x in range(len(repos))], values, width, label=c)
    ax.set_xticks([x + width * (len(configs) - 1) / 2 for x in range(len(repos))], repos)
    ax.set_ylabel("next-line exact match (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
