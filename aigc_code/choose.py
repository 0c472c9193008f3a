"""Which suggestion goes first when the workspace's copy candidates meet the model's.

Rules (setting `choiceRule`; measured by `aigc-code eval repo`, see docs/benchmarks.md):
  copy-first   a continuation found in the workspace beats the model
  confident    a copy whose occurrences agree (it leads the runner-up) beats the model; a tied
               copy comes after the model's candidates (default: 17.4% next-line exact match
               over four held-out repositories with the 25M-token model, copy-first 16.8%,
               likelihood 8.2%, model-first 6.1%)
  model-first  the model's candidates first, copies after them
  likelihood   every candidate scored by the model (mean token log-probability under the same
               prompt, `aigc_code.scoring`); the best first. A backend that cannot score
               (a remote server) falls back to copy-first.
Both lists have been post-processed (trimmed, syntax-checked) already.
"""

from __future__ import annotations

from aigc_code.generation import CancellationToken
from aigc_code.postprocess import Suggestion

RULES = ("copy-first", "confident", "likelihood", "model-first")


def _dedup(items: list[Suggestion]) -> list[Suggestion]:
    seen: set[str] = set()
    out = []
    for s in items:
        if s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out


def _by_likelihood(model: list[Suggestion], copies: list[Suggestion], backend, prompt, cancel) -> list[Suggestion]:
    scorer = getattr(backend, "score", None)
    if scorer is None or not copies:
        return copies + model
    items = _dedup(copies + model)
    scores = scorer(prompt.prefix, prompt.suffix, [s.text for s in items], cancel)
    for s, value in zip(items, scores, strict=True):
        s.score = value
    return sorted(items, key=lambda s: -s.score)


def merge_candidates(
    model: list[Suggestion],
    copies: list[Suggestion],
    rule: str,
    backend=None,
    prompt=None,
    cancel: CancellationToken | None = None,
) -> tuple[list[Suggestion], str]:
    """(suggestions best first, where the first came from: "model" | "copy" | "")."""
    if rule == "model-first":
        merged = model + copies
    elif rule == "confident":
        merged = (
            [c for c in copies if c.finish_reason == "copy"] + model + [c for c in copies if c.finish_reason != "copy"]
        )
    elif rule == "likelihood":
        merged = _by_likelihood(model, copies, backend, prompt, cancel)
    else:  # copy-first
        merged = copies + model
    merged = _dedup(merged)
    chosen = "" if not merged else ("copy" if merged[0].finish_reason.startswith("copy") else "model")
    return merged, chosen
