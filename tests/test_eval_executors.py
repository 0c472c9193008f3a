"""Per-language executors on real HumanEval-X problems, with the real toolchains.

Canonical solutions must pass, wrong ones must fail, in every language whose toolchain is
installed (the others are skipped with the reason -- .ci/toolchains.sh installs them).
"""

from __future__ import annotations

import gzip
import json

import pytest
from aigc_code.eval.executors import EXECUTORS, assemble_go, make_executor
from aigc_code.eval.pool import WorkerPool
from aigc_code.eval.problems import (
    KNOWN_DEFECTS,
    LANGUAGES,
    BenchmarkError,
    load_benchmark,
    load_custom,
    load_humaneval_x,
)
from aigc_code.eval.toolchains import Toolchain

SAMPLE = [0, 22, 162]  # 22 needs boost (C++), 162 needs OpenSSL (C++) / js-md5 (JS) / md5 (Rust)

# A completion of HumanEval/0 (has_close_elements) that compiles but is wrong.
WRONG = {
    "python": "    return False\n",
    "cpp": "    return false;\n}\n",
    "java": "        return false;\n    }\n}\n",
    "javascript": "  return false;\n}\n",
    "go": "    return false\n}\n",
    "rust": "    return false;\n}\n",
}


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(2) as p:
        yield p


@pytest.fixture(scope="module")
def executors():
    return {}


def executor_for(executors, lang):
    if lang not in executors:
        executors[lang] = make_executor(lang)
    ex = executors[lang]
    if ex.tc.missing:
        pytest.skip(f"{lang}: toolchain missing: {ex.tc.missing}")
    return ex


def run(pool, ex, problem, completion):
    program = ex.assemble(problem, completion)
    skip = ex.skip_reason(program)
    if skip:
        pytest.skip(f"{problem.task_id}: {skip}")
    return ex.judge(pool.submit(ex.job(program)).result(timeout=300))


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_canonical_solutions_pass_and_wrong_ones_fail(pool, executors, lang):
    ex = executor_for(executors, lang)
    problems = load_humaneval_x(lang)
    jobs = []
    for i in SAMPLE:
        p = problems[i]
        program = ex.assemble(p, p.canonical_solution)
        if ex.skip_reason(program):
            continue  # e.g. no Boost headers: that one problem is skipped, not failed
        jobs.append((p.task_id, "canonical", pool.submit(ex.job(program))))
    p0 = problems[0]
    jobs.append((p0.task_id, "wrong", pool.submit(ex.job(ex.assemble(p0, WRONG[lang])))))
    jobs.append((p0.task_id, "garbage", pool.submit(ex.job(ex.assemble(p0, "this is not code at all (\n")))))
    outcomes = {(tid, kind): ex.judge(f.result(timeout=300)) for tid, kind, f in jobs}
    for (tid, kind), o in outcomes.items():
        if kind == "canonical":
            assert o.passed and o.status == "passed", f"{tid} canonical: {o.status}: {o.detail}"
    wrong, garbage = outcomes[(p0.task_id, "wrong")], outcomes[(p0.task_id, "garbage")]
    assert not wrong.passed and wrong.status == "failed", (wrong.status, wrong.detail)
    assert not garbage.passed
    if lang != "python" and lang != "javascript":
        assert garbage.status == "compile_error", garbage


def test_javascript_console_assert_failure_is_a_failure(pool, executors):
    """console.assert prints and exits 0: the run must still count as failed (JavaScript/112)."""
    ex = executor_for(executors, "javascript")
    p = load_humaneval_x("javascript")[112]
    o = run(pool, ex, p, p.canonical_solution)
    assert not o.passed and "Assertion failed" in o.detail
    assert p.task_id in KNOWN_DEFECTS


def test_rust_without_tests_is_no_pass(pool, executors):
    ex = executor_for(executors, "rust")
    p = load_humaneval_x("rust")[32]
    o = run(pool, ex, p, p.canonical_solution)
    assert not o.passed and o.detail == "no tests ran"


def test_infinite_loop_times_out(pool, executors):
    ex = executor_for(executors, "cpp")
    ex.run_timeout = 1.0
    try:
        p = load_humaneval_x("cpp")[0]
        o = run(pool, ex, p, "    while (true) {}\n}\n")
    finally:
        ex.run_timeout = type(ex).run_timeout
    assert o.status == "timeout" and not o.passed


def test_missing_toolchain_is_skipped_not_failed():
    ex = EXECUTORS["go"](Toolchain("go", missing="go (Debian package golang-go)"))
    p = load_humaneval_x("go")[0]
    assert ex.skip_reason(ex.assemble(p, p.canonical_solution)) == "toolchain missing: go (Debian package golang-go)"
    ex = EXECUTORS["cpp"](Toolchain("cpp", extras_missing={"boost": "boost headers (Debian package libboost-dev)"}))
    cpp = load_humaneval_x("cpp")
    assert "boost" in ex.skip_reason(ex.assemble(cpp[22], cpp[22].canonical_solution))
    assert ex.skip_reason(ex.assemble(cpp[0], cpp[0].canonical_solution)) is None


def test_go_imports_are_merged_and_pruned():
    src = (
        'package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n)\n'
        'import (\n    "math"\n    "strings"\n)\n\nfunc F(x float64) float64 {\n    return math.Sqrt(x)\n}\n'
        "func G(s string) []string {\n"
        "    return sort.StringSlice{s} // sort. is used, strconv. is only in a comment\n}\n"
        "func TestF(t *testing.T) {\n    assert := assert.New(t)\n    assert.Equal(2.0, F(4))\n}\n"
    )
    out = assemble_go(src)
    assert out.startswith("package main\n\nimport (\n")
    header = out.split(")", 1)[0]
    for pkg in ("testing", "github.com/stretchr/testify/assert", "math", "sort"):
        assert f'"{pkg}"' in header
    assert '"strings"' not in header and '"strconv"' not in header
    assert out.count("package main") == 1 and out.count("import (") == 1


def test_python_custom_problem_gets_its_check_call():
    from aigc_code.eval.executors import PythonExecutor
    from aigc_code.eval.problems import Problem

    p = Problem("c/1", "python", "def add(a, b):\n", "def check(f):\n    assert f(1, 2) == 3\n", entry_point="add")
    prog = PythonExecutor(Toolchain("python")).assemble(p, "    return a + b\n")
    assert prog.rstrip().endswith("check(add)")


def test_custom_benchmark_loading(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [
        {
            "task_id": "acme/1",
            "language": "python",
            "prompt": "def inc(x):\n",
            "tests": "assert inc(1) == 2\n",
            "canonical_solution": "    return x + 1\n",
        },
        {
            "task_id": "acme/2",
            "language": "js",
            "prompt": "const dbl = (x) => {\n",
            "test": "console.assert(dbl(2) === 4)\n",
            "canonical_solution": "  return 2 * x\n}\n",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    probs = load_custom(path)
    assert [(p.task_id, p.language) for p in probs] == [("acme/1", "python"), ("acme/2", "javascript")]
    gz = tmp_path / "bench.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(path.read_text())
    assert len(load_benchmark(str(gz), ["python"])["python"]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "x", "language": "cobol", "prompt": "", "tests": "t"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:1: unsupported language 'cobol'"):
        load_custom(bad)
    bad.write_text(json.dumps({"task_id": "x", "language": "python", "prompt": "p"}) + "\n")
    with pytest.raises(BenchmarkError, match="'tests' is required"):
        load_custom(bad)
    bad.write_text("{not json\n")
    with pytest.raises(BenchmarkError, match="not valid JSON"):
        load_custom(bad)


def test_bundled_humaneval_x_is_complete():
    for lang in LANGUAGES:
        probs = load_humaneval_x(lang)
        assert len(probs) == 164 and all(p.canonical_solution for p in probs)
    assert "fn " in load_humaneval_x("rust")[0].prompt  # the signature comes from `declaration`
