"""What the adapter and the repository index give, alone and together, measured through the very
pipeline the LSP server runs: holes punched in the held-out files of a copy of the repository
(`aigc_code.eval.repo`), each completed by the base model and by base + adapter, each without and
with the workspace index. Next-line exact match and edit similarity per combination."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def pipeline_comparison(
    data, base_model: str, adapter: Path, holes: int, seed: int, work: Path, device: str | None = None, echo=print
) -> dict:
    from aigc_code.eval.repo import _complete_hole, punch_holes
    from aigc_code.server.backend import backend_from_settings
    from aigc_code.settings import Settings
    from aigc_code.workspace import build_index

    root = _copy_files(data, work)
    val = {f.path for f in data.val}
    chosen = [h for h in punch_holes("repo", root, len(val) + holes, seed) if h.rel in val][:holes]
    if not chosen:
        return {}
    out: dict[str, dict] = {}
    for label, settings in (
        ("base", Settings(model=base_model, device=device)),
        ("base + adapter", Settings(model=base_model, adapter=str(adapter), device=device)),
    ):
        echo(f"pipeline measurement: {label}, {len(chosen)} held-out lines, index off and on")
        backend = backend_from_settings(settings)
        index = build_index([root], settings)
        records = [
            r for h in chosen for r in _complete_hole(h, root, ("none", "both"), settings, backend, index, set())
        ]
        for config, name in (("none", "no index"), ("both", "index")):
            rows = [r for r in records if r["config"] == config]
            out[f"{label}, {name}"] = {
                "n": len(rows),
                "exact_match": round(sum(r["em_line"] for r in rows) / len(rows), 4),
                "edit_similarity": round(sum(r["edit_sim"] for r in rows) / len(rows), 4),
            }
        backend.close()
    shutil.rmtree(root, ignore_errors=True)
    return out


def _copy_files(data, work: Path) -> Path:
    """The repository's source files (train and held-out) under `work`: the index reads nothing else."""
    root = work / "repo"
    if root.exists():
        shutil.rmtree(root)
    for f in [*data.train, *data.val]:
        target = root / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.text, encoding="utf-8")
    return root


def markdown(result: dict) -> str:
    if not result:
        return ""
    lines = [
        "",
        "## Through the editor's pipeline (next line, held-out files)",
        "",
        "| model | next-line exact match | edit similarity | n |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result.items():
        lines.append(f"| {name} | {row['exact_match']:.1%} | {row['edit_similarity']:.3f} | {row['n']} |")
    return "\n".join(lines) + "\n"


def append_to_report(result: dict, out: Path) -> None:
    path = out / "finetune_report.json"
    if path.exists():
        report = json.loads(path.read_text())
        report["pipeline"] = result
        path.write_text(json.dumps(report, indent=2))
    md = out / "finetune_report.md"
    if md.exists():
        md.write_text(md.read_text() + markdown(result))
