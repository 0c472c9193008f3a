"""Post-processing must keep what a perfect model would write: the true middle of every HumanEval-X
single-line infilling hole (eval/infill.py), fed through the same mode and filters the server uses,
survives in at least 95% of cases per language (before the block-header / closing-brace /
indentation fixes, 55-80% did)."""

from __future__ import annotations

import pytest
from aigc_code.eval.infill import infill_tasks
from aigc_code.eval.problems import load_humaneval_x

from aigc_code.languages import canonical
from aigc_code.pipeline import cursor_mode
from aigc_code.postprocess import Site, process
from aigc_code.snapshot import Snapshot


def kept_fraction(language: str, kind: str = "single") -> tuple[float, list[str]]:
    kept, lost = 0, []
    for problem in load_humaneval_x(language):
        for task in infill_tasks(problem):
            if kind not in task.task_id:
                continue
            lang = canonical(task.language) or task.language
            snap = Snapshot.parse(task.prompt + (task.suffix or ""), lang)
            cur = snap.cursor(len(task.prompt))
            site = Site(lang, cur.before, cur.after, cursor_mode(cur, True), tree=snap.tree)
            out = process([(task.canonical_solution, 0.0, "stop")], site)
            if out and out[0].text == task.canonical_solution:
                kept += 1
            else:
                lost.append(task.task_id)
    return kept / max(1, kept + len(lost)), lost


@pytest.mark.parametrize("language", ["python", "javascript", "go", "java", "rust", "cpp"])
def test_true_single_line_middles_survive(language):
    fraction, lost = kept_fraction(language)
    assert fraction >= 0.95, f"{language}: kept {fraction:.1%}; lost {lost[:10]}"
