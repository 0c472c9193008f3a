"""pass@k, the per-language summary, and completion trimming (pure functions)."""

from __future__ import annotations

from math import comb

import pytest
from aigc_code.eval.generation import open_braces, stop_sequences, trim_completion
from aigc_code.eval.metrics import pass_at_k, summarize_language
from aigc_code.eval.problems import Problem, load_humaneval_x


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (5, 2, 1, 0.4),  # c/n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 0, 10, 0.0),
        (10, 10, 10, 1.0),
        (3, 1, 3, 1.0),  # n - c < k: some sample always passes
        (100, 7, 10, 1 - comb(93, 10) / comb(100, 10)),
    ],
)
def test_pass_at_k_matches_the_formula(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 10)


def _recs(task, outcomes, **gen):
    return [
        (
            {"task_id": task, "sample": i, "syntax_ok": True, "generated_tokens": 10, "gen_ms": 100.0, **gen},
            {"status": "passed" if ok else "failed", "passed": ok, "exec_s": 0.5},
        )
        for i, ok in enumerate(outcomes)
    ]


def test_summary_averages_pass_at_k_over_problems():
    recs = _recs("T/0", [True] * 10) + _recs("T/1", [True, True] + [False] * 8)
    s = summarize_language(recs)
    assert s["problems"] == 2 and s["samples_per_problem"] == 10
    assert s["pass@1"] == pytest.approx((1.0 + 0.2) / 2)
    assert s["pass@10"] == pytest.approx((1.0 + 1.0) / 2)
    assert "pass@100" not in s  # n < 100
    assert s["generation"]["tokens_per_s"] == pytest.approx(100.0)
    assert s["generation"]["ms_per_problem"] == pytest.approx(1000.0)
    assert s["syntax_valid_rate"] == 1.0 and s["execution"]["programs"] == 20


def test_summary_excludes_skipped_and_counts_pending():
    skipped = {"status": "skipped", "passed": False, "detail": "toolchain missing: x", "exec_s": 0}
    recs = _recs("T/0", [True]) + [({"task_id": "T/1", "sample": 0}, skipped), ({"task_id": "T/2", "sample": 0}, None)]
    s = summarize_language(recs)
    assert s["pass@1"] == 1.0 and s["problems_scored"] == 1 and s["skipped"] == 1
    assert s["statuses"] == {"passed": 1, "pending": 1, "skipped": 1}


def test_python_completion_is_cut_where_the_function_ends():
    p = load_humaneval_x("python")[0]
    text = "    return True\n\n\ndef other():\n    pass\n"
    assert trim_completion(p, text, "length") == "    return True\n\n\n"
    assert trim_completion(p, "    x = 1\n    return x\n", "eos") == "    x = 1\n    return x\n"
    assert "\ndef " in stop_sequences(p)


@pytest.mark.parametrize("lang", ["cpp", "java", "javascript", "go", "rust"])
def test_brace_completion_ends_where_the_prompt_braces_close(lang):
    p = load_humaneval_x(lang)[0]
    depth = open_braces(p.setup + p.prompt, lang)
    assert depth == (2 if lang == "java" else 1)
    canonical = p.canonical_solution
    assert trim_completion(p, canonical + "\nint extra() { return 1; }\n", "length").strip() == canonical.strip()
    # the engine drops the stop sequence "\n}": it is put back
    cut = canonical.rstrip()
    assert cut.endswith("}")
    squash = lambda s: "".join(s.split())  # noqa: E731
    assert squash(trim_completion(p, cut[:-1].rstrip("\n"), "stop")) == squash(canonical)


def test_brace_counting_ignores_strings_comments_and_rust_lifetimes():
    js = Problem("x", "javascript", "const f = () => {\n", "")
    assert (
        trim_completion(js, "  const s = '}' + \"}\" + `}`; // }\n  /* } */ return s;\n}\nmore()", "length")
        == "  const s = '}' + \"}\" + `}`; // }\n  /* } */ return s;\n}\n"
    )
    rs = Problem("x", "rust", "fn f<'a>(s: &'a str) -> char {\n", "")
    assert trim_completion(rs, "    let c = '}';\n    c\n}\nfn g() {}", "length") == "    let c = '}';\n    c\n}\n"


def test_max_new_tokens_leaves_room_for_the_prompt(tiny_engine):
    from aigc_code.eval.generation import effective_max_new_tokens

    context = tiny_engine.max_context
    short, long = "def f():\n", "# filler line\n" * 400
    n_short = tiny_engine.count_tokens(short)
    assert effective_max_new_tokens(tiny_engine, short, 16) == 16
    assert effective_max_new_tokens(tiny_engine, short, 10 * context) == context - n_short - 8
    assert effective_max_new_tokens(tiny_engine, long, 10 * context) == context // 4  # prompt gets cut instead
