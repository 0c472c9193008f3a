"""``--benchmark humaneval-x-infill``: FIM tasks built from HumanEval-X, executed with the tests.

The construction (single-line, multi-line, random-span holes) on every language; the true middle
(``--reference``) passes for a subset of every language; a tiny real model completes tasks through
the LSP server's pipeline, with the raw and the post-processed text both executed.
"""

from __future__ import annotations

import json

import pytest
from aigc_code.eval.infill import KINDS, RAW_SUFFIX, base_task_id, build_infill, infill_tasks, task_kind
from aigc_code.eval.problems import LANGUAGES, load_humaneval_x
from aigc_code.eval.runner import RunConfig, run_eval
from aigc_code.eval.toolchains import detect

QUIET = {"progress": None, "log": lambda m: None}


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_tasks_cut_the_canonical_program_into_prefix_hole_suffix(lang):
    problems = load_humaneval_x(lang)[:20]
    for p in problems:
        tasks = infill_tasks(p, per_type=2)
        assert tasks == infill_tasks(p, per_type=2)  # the same tasks every run
        assert {t.kind for t in tasks} <= set(KINDS) and "single-line" in {t.kind for t in tasks}
        for t in tasks:
            assert t.prompt + t.canonical_solution + t.suffix == p.prompt + p.canonical_solution
            assert t.canonical_solution.strip() and base_task_id(t.task_id) == p.task_id
            assert task_kind(t.task_id) == t.kind and task_kind(t.task_id + RAW_SUFFIX) == t.kind
            if t.kind == "single-line":
                assert "\n" not in t.canonical_solution and t.suffix.startswith("\n") or not t.suffix
                assert not t.canonical_solution[0].isspace()  # the cursor is after the indentation
            if t.kind == "multi-line":
                assert "\n" in t.canonical_solution.strip()
    everything = build_infill({lang: problems}, per_type=0)[lang]
    assert len(everything) > len(build_infill({lang: problems}, per_type=1)[lang]) >= len(problems) * 2


def test_true_middles_pass_in_every_language(tmp_path):
    langs = [lang for lang in LANGUAGES if not detect(lang).missing]
    cfg = RunConfig(benchmark="humaneval-x-infill", languages=langs, reference=True, limit=1, workers=2)
    report = run_eval(cfg, tmp_path / "run", **QUIET)
    for lang in langs:
        rc = report["reference_check"][lang]
        assert rc["programs"] == len(build_infill({lang: load_humaneval_x(lang)[:1]})[lang]) >= 2
        assert rc["passed"] == rc["programs"], rc["other_failures"]
        assert set(report["infill"][lang]) >= {"single-line", "random-span"}
    assert report["prompt_format"] == "none (canonical solutions)"


def test_known_defects_of_the_left_to_right_data_stay_known_defects():
    """JavaScript/112's canonical solution is wrong: its infill tasks' failures are the known defect."""
    from aigc_code.eval.problems import KNOWN_DEFECTS
    from aigc_code.eval.report import _reference_check

    tasks = infill_tasks(load_humaneval_x("javascript")[112])
    failing = [
        ({"task_id": t.task_id, "sample": 0}, {"status": "failed", "passed": False, "detail": "x"}) for t in tasks
    ]
    rc = _reference_check(failing, KNOWN_DEFECTS)
    assert len(rc["known_defects"]) == len(tasks) >= 2 and not rc["other_failures"]


def test_a_tiny_model_through_the_lsp_pipeline(tiny_model, tmp_path):
    cfg = RunConfig(
        benchmark="humaneval-x-infill", languages=["python"], model=str(tiny_model), limit=1, max_new_tokens=8
    )
    report = run_eval(cfg, tmp_path / "run", **QUIET)
    recs = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    gens = {r["task_id"]: r for r in recs if r["kind"] == "generation"}
    execs = {r["task_id"]: r for r in recs if r["kind"] == "execution"}
    mains = [t for t in gens if not t.endswith(RAW_SUFFIX)]
    assert mains and set(gens) == set(execs) == set(mains) | {t + RAW_SUFFIX for t in mains}
    for t in mains:
        assert gens[t]["mode"] in ("single", "multi") and gens[t]["prompt_tokens"] > 0
        assert gens[t + RAW_SUFFIX]["completion"] == gens[t]["raw"]
        assert isinstance(gens[t]["syntax_ok"], bool)
    py = report["infill"]["python"]
    assert set(py) <= set(KINDS) and all(v["raw_pass@1"] is not None for v in py.values())
    assert report["languages"]["python"]["problems"] == len(mains)  # :raw twins are not counted as problems
    assert report["prompt_format"] == "FIM prompt through the LSP pipeline"
