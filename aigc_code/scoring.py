"""The model's judgement of given continuations: mean token log-probability of each text after
the same prompt the engine generates from, so that copy candidates and generated ones can be
compared on one scale (the `likelihood` choice rule).

The prompt is run once (the HF model: the engine's own cache belongs to generation); each
continuation then runs on a copy of that KV cache.
"""

from __future__ import annotations

import copy

import torch


@torch.inference_mode()
def score_continuations(engine, prefix: str, suffix: str, texts: list[str], cancel=None) -> list[float]:
    prompt = engine.build_prompt(prefix, suffix)
    with engine.lock:
        model = engine.model
        ids = torch.tensor([prompt.ids], device=engine.device)
        out = model(input_ids=ids, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        past = getattr(out, "cache", None)  # transformers 5 names it `cache`
        past = out.past_key_values if past is None else past
        scores = []
        for text in texts:
            if cancel is not None and cancel.cancelled:
                scores.append(float("-inf"))
                continue
            scores.append(_score_one(engine, model, past, first, prompt.heal + text))
    return scores


def _score_one(engine, model, past, first_logprobs: torch.Tensor, text: str) -> float:
    cont = engine.encode(text)
    if not cont:
        return float("-inf")
    total = float(first_logprobs[cont[0]])
    if len(cont) > 1:
        ids = torch.tensor([cont[:-1]], device=engine.device)
        cache = {engine._cache_kw: copy.deepcopy(past)}  # `cache` in transformers 5, else `past_key_values`
        logits = model(input_ids=ids, use_cache=True, **cache).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        targets = torch.tensor(cont[1:], device=logprobs.device)
        total += float(logprobs.gather(1, targets[:, None]).sum())
    return total / len(cont)
