"""Typing-session benchmark: KV reuse across keystrokes and prompt-lookup decoding vs plain generate.

A scripted session types the canonical solutions of HumanEval-X problems (real code in six
languages) a few characters at a time and asks for a completion after each burst, the way an
editor does. Every variant answers the same requests in the same run, so the printed ratios
compare like with like on a noisy machine.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from dataclasses import dataclass
from importlib import resources

LANG_FILES = {
    "python": "humaneval_python",
    "javascript": "humaneval_js",
    "go": "humaneval_go",
    "java": "humaneval_java",
    "cpp": "humaneval_cpp",
    "rust": "humaneval_rust",
}


@dataclass
class Request:
    language: str
    prefix: str
    suffix: str


def load_problems(language: str) -> list[dict]:
    data = resources.files("aigc_code.eval.data") / f"{LANG_FILES[language]}.jsonl.gz"
    with gzip.open(data.open("rb"), "rt") as f:
        return [json.loads(line) for line in f]


def typing_session(
    requests: int = 200,
    languages=("python", "javascript", "go", "java", "rust", "cpp"),
    burst: int = 3,
    per_problem: int = 12,
) -> list[Request]:
    """Keystroke bursts through canonical solutions, round-robin over languages."""
    out: list[Request] = []
    problems = {lang: load_problems(lang) for lang in languages}
    index = 0
    while len(out) < requests:
        for lang in languages:
            problem = problems[lang][index % len(problems[lang])]
            head = problem.get("declaration") if lang == "rust" else problem["prompt"]
            body = problem["canonical_solution"]
            after = "\n" + problem["test"][:300]  # the text after the cursor stays put while typing
            for k in range(1, per_problem + 1):
                out.append(Request(lang, head + body[: min(len(body), k * burst)], after))
        index += 1
    return out[:requests]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _latencies(ttft: list[float], total: list[float], tokens: int) -> dict:
    """One engine's summary over a session: time to first token, request time, throughput."""
    return {
        "ttft_p50_ms": statistics.median(ttft),
        "total_p50_ms": statistics.median(total),
        "total_p95_ms": _percentile(total, 0.95),
        "tokens_per_s": tokens / (sum(total) / 1000),
        "generated_tokens": tokens,
    }


def run_engine(engine, session: list[Request], max_new_tokens: int, prompt_lookup: int) -> dict:
    from aigc_code.engine import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=max_new_tokens, prompt_lookup=prompt_lookup, stop=["\n\n"])
    ttft, total, tokens, texts = [], [], 0, []
    engine.forget_cache()
    for req in session:
        result = engine.complete(req.prefix, req.suffix, cfg)
        ttft.append(result.prompt_ms)
        total.append(result.total_ms)
        tokens += result.generated_tokens
        texts.append(result.candidates[0].token_ids)
    return {**_latencies(ttft, total, tokens), "outputs": texts}


def run_hf_generate(engine, session: list[Request], max_new_tokens: int) -> dict:
    """Baseline: transformers' own `model.generate` on the same FIM prompt, from scratch each time."""
    import torch

    ttft, total, tokens = [], [], 0
    for req in session:
        prompt = engine.build_prompt(req.prefix, req.suffix, max_new_tokens)
        ids = torch.tensor([prompt.ids], device=engine.device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            engine.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=1,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
            t1 = time.perf_counter()
            out = engine.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
            t2 = time.perf_counter()
        ttft.append((t1 - t0) * 1000)
        total.append((t2 - t1) * 1000)
        tokens += out.shape[1] - ids.shape[1]
    return _latencies(ttft, total, tokens)


def bench_typing(model=None, requests: int = 200, max_new_tokens: int = 32, device: str | None = None) -> dict:
    from aigc_code.engine import load_engine

    session = typing_session(requests)
    engine = load_engine(model, device=device, reuse_kv=False)
    run_engine(engine, session[:5], max_new_tokens, 0)  # warm-up
    results = {"hf_generate": run_hf_generate(engine, session, max_new_tokens)}
    results["engine_plain"] = run_engine(engine, session, max_new_tokens, prompt_lookup=0)
    engine.reuse_kv = True
    results["engine_kv_reuse"] = run_engine(engine, session, max_new_tokens, prompt_lookup=0)
    results["engine_kv_reuse_lookup"] = run_engine(engine, session, max_new_tokens, prompt_lookup=8)
    identical = results["engine_kv_reuse_lookup"]["outputs"] == results["engine_plain"]["outputs"]
    for r in results.values():
        r.pop("outputs", None)
    base = results["hf_generate"]
    plain = results["engine_plain"]
    return {
        "device": str(engine.device),
        "model": engine.name,
        "requests": len(session),
        "languages": sorted({r.language for r in session}),
        "max_new_tokens": max_new_tokens,
        "results": results,
        "ratios": {
            "ttft_hf_generate_over_kv_reuse": base["ttft_p50_ms"] / results["engine_kv_reuse"]["ttft_p50_ms"],
            "ttft_plain_over_kv_reuse": plain["ttft_p50_ms"] / results["engine_kv_reuse"]["ttft_p50_ms"],
            "total_hf_generate_over_best": base["total_p50_ms"] / results["engine_kv_reuse_lookup"]["total_p50_ms"],
            "tokens_per_s_lookup_over_no_lookup": results["engine_kv_reuse_lookup"]["tokens_per_s"]
            / results["engine_kv_reuse"]["tokens_per_s"],
        },
        "greedy_identical_with_lookup": identical,
    }


def bench_quantize(model=None, lines: int = 120, max_new_tokens: int = 24) -> dict:
    """int8 dynamic quantization vs fp32: speed and next-line exact match on held-out code."""
    from aigc_code.engine import GenerationConfig, load_engine

    cases = []
    for lang in ("python", "javascript", "go", "java"):
        for problem in load_problems(lang)[100:]:
            body = problem["canonical_solution"].splitlines(keepends=True)
            for i in range(1, len(body)):
                if body[i].strip():
                    cases.append((problem["prompt"] + "".join(body[:i]), body[i].rstrip("\n"), "".join(body[i + 1 :])))
                    break
    cases = cases[:lines]
    out = {}
    for name, quantize in (("fp32", None), ("int8", "int8")):
        engine = load_engine(model, device="cpu", quantize=quantize, reuse_kv=False)
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop=["\n"], prompt_lookup=0)
        engine.complete(cases[0][0], "", cfg)
        t0 = time.perf_counter()
        hits, tokens = 0, 0
        for prefix, line, rest in cases:
            result = engine.complete(prefix, rest, cfg)
            tokens += result.generated_tokens
            hits += result.text.strip() == line.strip()
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "tokens_per_s": tokens / seconds, "next_line_exact_match": hits / len(cases)}
    return {
        "cases": len(cases),
        **out,
        "speed_ratio_int8_over_fp32": out["int8"]["tokens_per_s"] / out["fp32"]["tokens_per_s"],
    }
