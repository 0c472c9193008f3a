"""A remote server's context window, when only the server knows the tokenizer.

The openai backend budgets prompts by character count (`ApproxTokens`, 3.5 characters a token).
Code that tokenizes densely — tabs, punctuation, a small vocabulary — overflows a small context:
llama.cpp serving the default model with `--n_ctx 512` counted 546 tokens in 1,317 characters of
Go that the estimate put at 377, and refused it. What a server says when a prompt is too long
(`overflow_from_response`) or its own count of the prompt calibrates the estimate (`calibrated`:
the ratio only falls, so the next prompt fits), and the refused prompt is cut to fit (`shrink`)
and sent once more.
"""

from __future__ import annotations

import re

from aigc_code.budget import ApproxTokens
from aigc_code.errors import BackendError

MIN_CALIBRATION_CHARS = 256  # shorter prompts (a `serve --check` probe) say little about code
MARGIN = 0.95  # a calibrated ratio keeps 5% in hand: files differ in how densely they tokenize
FLOOR = 1.0  # characters a token, at the least
SLACK = 8  # tokens kept free beside prompt and generation (the pipeline's budget keeps as many)

# What servers say when a prompt does not fit:
#   vLLM, llama-cpp-python, OpenAI: "This model's maximum context length is 512 tokens, however you
#     requested 610 tokens (546 in your prompt; 64 for the completion)"
#   TGI: "`inputs` tokens + `max_new_tokens` must be <= 512. Given: 546 `inputs` tokens and 64 ..."
#   llama-server: "the request exceeds the available context size ..." (no numbers)
_LIMIT = re.compile(r"maximum context length is (\d+)|must be <= (\d+)|context size[^\d]{0,20}(\d+)")
_PROMPT = re.compile(r"(\d+) (?:tokens )?in (?:your|the) (?:prompt|messages)|Given: (\d+) `inputs` tokens")
_TOO_LONG = ("context length", "context size", "context window", "must be <=", "too long", "exceeds")


class ContextOverflow(BackendError):
    """The server refused the prompt as longer than its context; what it said about sizes, if anything."""

    def __init__(self, message: str, limit: int | None = None, prompt_tokens: int | None = None):
        super().__init__(message)
        self.limit = limit
        self.prompt_tokens = prompt_tokens


def _first_number(pattern: re.Pattern, text: str) -> int | None:
    m = pattern.search(text)
    if m is None:
        return None
    return int(next(g for g in m.groups() if g is not None))


def overflow_from_response(status: int, body: str, url: str) -> ContextOverflow | None:
    """A `ContextOverflow` when an HTTP error answer says the prompt is too long, else None."""
    if status not in (400, 413, 422) or not any(k in body.lower() for k in _TOO_LONG):
        return None
    return ContextOverflow(
        f"completion endpoint {url} refused the prompt as longer than its context: {body[:300]}",
        limit=_first_number(_LIMIT, body),
        prompt_tokens=_first_number(_PROMPT, body),
    )


def calibrated(tokens: ApproxTokens, chars: int, server_tokens: int) -> ApproxTokens:
    """`tokens`, or a new counter with a lower characters-per-token ratio when the server counted
    `server_tokens` in `chars` characters. A new object, not a changed one: the prompt builder
    memoizes counts per counter (`budget.count_cached`)."""
    if server_tokens <= 0 or chars < MIN_CALIBRATION_CHARS:
        return tokens
    ratio = max(FLOOR, MARGIN * chars / server_tokens)
    return ApproxTokens(ratio) if ratio < tokens.chars_per_token else tokens


def fits(prompt_tokens: int, limit: int, max_new_tokens: int) -> bool:
    """Whether a prompt of `prompt_tokens` leaves room for the generation in a `limit`-token context."""
    return prompt_tokens + max_new_tokens + SLACK <= limit


def fraction_to_fit(prompt_tokens: int | None, limit: int | None, max_new_tokens: int) -> float:
    """How much of a refused prompt to keep: what the context holds besides the generation, over
    the server's count of the prompt (with the margin); half when either is unknown."""
    if not prompt_tokens or not limit:
        return 0.5
    room = limit - max_new_tokens - SLACK
    return max(0.0, min(0.9, MARGIN * room / prompt_tokens))


def shrink(prefix: str, suffix: str, fraction: float) -> tuple[str, str]:
    """Keep about `fraction` of each: the end of the prefix (from a line start, when one is near)
    and the start of the suffix (to a line end): the text nearest the cursor stays."""
    keep_prefix = int(len(prefix) * fraction)
    head = prefix[len(prefix) - keep_prefix :] if keep_prefix > 0 else ""
    cut = head.find("\n")
    if 0 <= cut < len(head) // 4:
        head = head[cut + 1 :]
    tail = suffix[: int(len(suffix) * fraction)]
    end = tail.rfind("\n")
    if end >= len(tail) * 3 // 4:
        tail = tail[: end + 1]
    return head, tail
