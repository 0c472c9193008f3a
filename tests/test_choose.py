"""Choice rules and the model's scores of given continuations (the `likelihood` rule), on the
shipped model: a score is the mean log-probability the engine itself gives those tokens."""

from __future__ import annotations

import pytest
import torch

from aigc_code.backends import LocalBackend
from aigc_code.choose import RULES, merge_candidates
from aigc_code.engine import load_engine
from aigc_code.generation import GenerationConfig
from aigc_code.postprocess import Suggestion
from aigc_code.scoring import score_continuations

PREFIX = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
SUFFIX = "\n\ndef median(values):\n    return sorted(values)[len(values) // 2]\n"


@pytest.fixture(scope="module")
def engine():
    return load_engine(None, reuse_kv=False)


def test_score_is_the_mean_logprob_of_one_full_forward(engine):
    """Scores reuse the prompt's KV cache per text; a single forward over prompt + text must agree."""
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.0, stop=["\n"], prompt_lookup=0)
    greedy = engine.complete(PREFIX, SUFFIX, cfg).candidates[0].text
    assert greedy.strip()
    texts = [greedy, "    return total / len(values)", "zq}}#@!xv"]
    scores = score_continuations(engine, PREFIX, SUFFIX, texts)
    prompt = engine.build_prompt(PREFIX, SUFFIX)
    for text, score in zip(texts, scores, strict=True):
        cont = engine.encode(prompt.heal + text)
        ids = torch.tensor([prompt.ids + cont])
        with torch.inference_mode():
            logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), -1)
        at = len(prompt.ids) - 1
        expected = sum(float(logprobs[at + i, t]) for i, t in enumerate(cont)) / len(cont)
        assert score == pytest.approx(expected, abs=1e-4)
    assert scores[0] > scores[2]  # the model's own greedy line beats noise


def test_rules_order_copies_and_model_candidates(engine):
    model = [Suggestion("    return total / len(values)", -0.5, "stop")]
    agreed = Suggestion("    return total / n", 0.0, "copy")
    tied = Suggestion("    return None", 0.0, "copy-tie")
    assert set(RULES) == {"copy-first", "confident", "likelihood", "model-first"}
    order = {rule: [s.text for s in merge_candidates(model, [agreed, tied], rule)[0]] for rule in RULES[:2]}
    assert order["copy-first"][0] == agreed.text
    assert order["confident"] == [agreed.text, model[0].text, tied.text]
    merged, chosen = merge_candidates(model, [agreed], "model-first")
    assert chosen == "model" and merged[0].text == model[0].text
    # likelihood: the backend scores every candidate; without a scorer it is copy-first
    backend = LocalBackend.__new__(LocalBackend)
    backend.engine = engine

    class _Prompt:
        prefix, suffix = PREFIX, SUFFIX

    scored, _ = merge_candidates(model, [agreed, tied], "likelihood", backend, _Prompt())
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    assert all(s.score < 0 for s in scored)
    assert merge_candidates(model, [agreed], "likelihood", object(), _Prompt())[0][0].text == agreed.text
