"""Turning a benchmark prompt into a completion with aigc-code's engine.

The prompt is the benchmark's prompt as is (the convention of model cards and
bigcode-evaluation-harness); ``--prompt-format fim`` frames it as FIM with an empty suffix.

Stop sequences end generation where a function body ends; ``trim_completion`` then cuts the
text at the same boundary (the engine may also stop for length or EOS):

* python: a line that starts at column 0 ends the body (same effect as the usual stop
  sequences "\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#").
* brace languages: the completion ends where the braces the prompt left open are closed.
  Generation stops at "\\n}" (a closing brace at column 0 -- the function's, or for Java the
  class's); the engine drops the stop text, so it is put back before trimming.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from aigc_code.eval.problems import Problem

PY_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]
BRACE_STOPS = ["\n}"]
BATCH = 16  # candidates decoded together


def stop_sequences(problem: Problem) -> list[str]:
    base = PY_STOPS if problem.language == "python" else BRACE_STOPS
    return base + [s for s in problem.stop if s not in base]


def _skip_quoted(text: str, i: int, quote: str) -> int:
    """Index after the string starting at ``i`` (a backtick string may span lines and has no escapes)."""
    j, n = i + 1, len(text)
    while j < n and text[j] != quote:
        if text[j] == "\\" and quote != "`":
            j += 1
        elif text[j] == "\n" and quote != "`":
            break
        j += 1
    return j + 1


def _skip_literal(text: str, i: int, language: str) -> int | None:
    """Index after the comment, string or character literal starting at ``i``; None if none starts there."""
    c = text[i]
    if text.startswith("//", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    if text.startswith("/*", i):
        j = text.find("*/", i + 2)
        return len(text) if j < 0 else j + 2
    if c == '"' or c == "`" or (c == "'" and language != "rust"):
        return _skip_quoted(text, i, c)
    if c == "'" and language == "rust":  # a char literal, or a lifetime ('a) which we skip over
        m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
        return i + (m.end() if m else 1)
    return None


def _brace_depth_scan(text: str, language: str, depth: int, stop_at_zero: bool = True) -> tuple[int, int | None]:
    """Scan ``text`` starting at brace ``depth``; return (final depth, index just after the brace
    that brings depth to 0, or None). Skips comments, strings and character literals."""
    i, n = 0, len(text)
    while i < n:
        skip = _skip_literal(text, i, language)
        if skip is not None:
            i = skip
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0 and stop_at_zero:
                return 0, i + 1
        i += 1
    return depth, None


def open_braces(prompt: str, language: str) -> int:
    return max(0, _brace_depth_scan(prompt, language, 0, stop_at_zero=False)[0])


def trim_completion(problem: Problem, text: str, finish_reason: str = "") -> str:
    if problem.language == "python":
        m = re.search(r"\n(?=\S)", text)  # the first line back at column 0 ends the body
        return text[: m.start() + 1] if m else text
    depth = open_braces(problem.setup + problem.prompt, problem.language)
    if depth == 0:
        return text
    if finish_reason == "stop" and _brace_depth_scan(text, problem.language, depth)[1] is None:
        text = text + "\n}"  # the engine cut the stop sequence "\n}" off
    _, end = _brace_depth_scan(text, problem.language, depth)
    return text[:end] + "\n" if end is not None else text


def syntax_ok(language: str, code: str) -> bool | None:
    """True/False: does tree-sitter parse ``code`` without errors; None: no grammar available."""
    try:
        from aigc_code.languages import ts_parser

        tree = ts_parser(language).parse(code.encode("utf-8"))
    except Exception:  # noqa: BLE001 - grammar wheel missing or broken: not the model's fault
        return None
    return not tree.root_node.has_error


@dataclass
class Generated:
    completion: str
    raw: str
    finish_reason: str
    generated_tokens: int
    prompt_tokens: int
    gen_ms: float
    max_new_tokens: int


def effective_max_new_tokens(engine, prefix: str, requested: int) -> int:
    """``requested``, unless the model's context is too small for prompt + that many tokens: then
    what is left after the prompt, but at least a quarter of the context (the engine then cuts the
    prompt's start; the signature at its end is kept)."""
    context = int(getattr(engine, "max_context", 0) or 0)
    if context <= 0:
        return requested
    prompt_tokens = engine.count_tokens(prefix) if hasattr(engine, "count_tokens") else 0
    return max(1, min(requested, max(context // 4, context - prompt_tokens - 8)))


def sample_seed(problem: Problem, index: int, seed: int) -> int:
    """A seed per (problem, sample index): the same samples on resume, whatever was done before."""
    return (zlib.crc32(f"{problem.language}:{problem.task_id}:{index}".encode()) ^ seed) & 0x7FFFFFFF


def generate(
    engine,
    problem: Problem,
    n: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    first_index: int = 0,
    prompt_format: str = "plain",
) -> list[Generated]:
    """``n`` completions of ``problem`` (decoded in batches of ``BATCH``), trimmed to the function.
    ``prompt_format``: "plain" (the prompt as is, the published convention) or "fim" (a FIM prompt
    with an empty suffix)."""
    from aigc_code.engine import GenerationConfig

    prefix = problem.setup + problem.prompt
    max_new_tokens = effective_max_new_tokens(engine, prefix, max_new_tokens)
    out: list[Generated] = []
    while len(out) < n:
        k = min(BATCH, n - len(out))
        idx = first_index + len(out)
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            n=k,
            stop=stop_sequences(problem),
            seed=sample_seed(problem, idx, seed),
        )
        res = engine.complete(prefix, "", config=cfg) if prompt_format == "fim" else engine.generate(prefix, cfg)
        per_ms = res.total_ms / max(1, len(res.candidates))
        for cand in res.candidates:
            tokens = len(cand.token_logprobs) or len(getattr(cand, "token_ids", []) or [])
            out.append(
                Generated(
                    completion=trim_completion(problem, cand.text, cand.finish_reason),
                    raw=cand.text,
                    finish_reason=cand.finish_reason,
                    generated_tokens=tokens,
                    prompt_tokens=res.prompt_tokens,
                    gen_ms=round(per_ms, 2),
                    max_new_tokens=max_new_tokens,
                )
            )
    return out[:n]
