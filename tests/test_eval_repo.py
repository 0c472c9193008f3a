"""`aigc-code eval repo` on a small fixture repository: holes answered through the pipeline with
and without the workspace index, a report, a resume that does nothing more, a refused mix."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_repository_benchmark_on_a_fixture(tmp_path, tiny_model):

    repo = tmp_path / "fixture"
    (repo / "src").mkdir(parents=True)
    for i in range(4):
        (repo / "src" / f"mod{i}.py").write_text(
            textwrap.dedent(f"""\
            import logging

            log = logging.getLogger("service_{i}")


            def handler(event, context):
                payload = json.loads(event["body"])
                log.info("handling %s", payload["id"])
                return {{"statusCode": 200, "body": json.dumps(payload)}}
            """)
        )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "aigc_code",
        "eval",
        "repo",
        str(repo),
        "--out",
        str(out),
        "--holes",
        "4",
        "--configs",
        "none,copy",
        "--model",
        str(tiny_model),
        "--max-new-tokens",
        "8",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    copy, none = report["overall"]["copy"], report["overall"]["none"]
    assert copy["holes"] == none["holes"] == 4
    assert copy["em_line"] >= 0.5 > none["em_line"] or copy["em_line"] > none["em_line"], report["overall"]
    assert (out / "report.md").exists() and (out / "plot.png").stat().st_size > 1000
    assert json.loads((out / "run.json").read_text())["scores_candidates"] is True  # the local engine scores
    # the answers were restored: the copied repository equals the original again
    for f in (repo / "src").iterdir():
        assert (out / "work" / "fixture" / "src" / f.name).read_text() == f.read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # resume: nothing left to do
    assert again.returncode == 0 and len((out / "results.jsonl").read_text().splitlines()) == 8
    other = subprocess.run([*cmd[:-1], "16"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 1 and "other settings" in other.stderr


class _PromptRecorder:
    """The real backend, with the prompts it was given kept."""

    def __init__(self, backend):
        self.backend, self.prefixes = backend, []
        self.kind, self.max_context, self.tokens = backend.kind, backend.max_context, backend.tokens

    def complete(self, prefix, suffix, request, cancel=None, **kw):
        self.prefixes.append(prefix)
        return self.backend.complete(prefix, suffix, request, cancel, **kw)


def test_the_model_sees_the_repository_path_not_the_benchmarks_copy(tmp_path, tiny_model):
    """The server shows a path relative to the workspace folder; the benchmark (and a prompt's
    outcome) must not depend on where `--out` keeps its copy of the repository."""
    from aigc_code.eval.repo import Hole, _complete_hole

    from aigc_code.backends import make_backend
    from aigc_code.settings import Settings
    from aigc_code.workspace import build_index

    backend = _PromptRecorder(make_backend("local", model=str(tiny_model)))
    settings = Settings(max_new_tokens=4, temperature=0.0)
    outcomes = []
    for where in ("a", "a-much-longer-place-for-the-copy"):
        root = tmp_path / where / "fixture"
        (root / "pkg").mkdir(parents=True)
        filler = "".join(f"def step_{i}(value):\n    return value + {i}\n\n\n" for i in range(150))
        (root / "pkg" / "app.py").write_text(
            f"import os\nimport sys\n\n\n{filler}def main():\n    return os.getcwd()\n"
        )
        hole = Hole("fixture", "pkg/app.py", 4 + 4 * 150 + 1, "    ", "return os.getcwd()")
        index = build_index([root], settings)
        records = list(_complete_hole(hole, root, ("none", "context"), settings, backend, index, set()))
        outcomes.append([r["suggestion"] for r in records])
        none, context = backend.prefixes[-2:]
        assert "pkg/app.py" in none and context != none  # the index retrieved a chunk (of this same file)
        assert str(tmp_path) not in none + context
    assert backend.prefixes[:2] == backend.prefixes[2:] and outcomes[0] == outcomes[1]


def test_report_says_which_rule_ran_on_a_backend_that_cannot_score():
    """A remote backend cannot score candidates: the report says `likelihood` ran as copy-first."""
    from aigc_code.eval.repo import build_report, markdown

    record = {"repo": "r", "language": "python", "hole": "r:a.py:1", "answer": "x = 1", "suggestion": "x = 1"}
    record |= {"chosen": "copy", "latency_ms": 1.0, "retrieval_ms": 0.1, "shown": True}
    record |= {"em_line": True, "em_span": True, "edit_sim": 1.0}
    records = [{**record, "config": c} for c in ("none", "both-likelihood")]
    meta = {"backend": "openai", "model": "m", "holes": 1, "seed": 0, "configs": ["none", "both-likelihood"]}
    remote = markdown(build_report(records, {**meta, "scores_candidates": False}), ["none", "both-likelihood"])
    assert "`both-likelihood` ran as copy-first" in remote
    local = markdown(build_report(records, {**meta, "scores_candidates": True}), ["none", "both-likelihood"])
    assert "ran as copy-first" not in local
    assert "ran as copy-first" not in markdown(
        build_report(records[:1], {**meta, "scores_candidates": False}), ["none"]
    )
