"""What a generation is asked for and what it returns: plain data shared by every backend.

No torch here, so that the server and the OpenAI-compatible backend can use these types
without importing the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95
    n: int = 1
    stop: list[str] = field(default_factory=list)
    time_budget_s: float | None = None
    seed: int | None = None
    prompt_lookup: int = 8  # draft tokens per step from n-gram matches (greedy only; 0 = off)


@dataclass
class Candidate:
    text: str
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"  # stop | eos | length | time | cancelled
    token_ids: list[int] = field(default_factory=list)  # raw generated tokens, healed text included

    @property
    def mean_logprob(self) -> float:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else float("-inf")


@dataclass
class GenerationResult:
    candidates: list[Candidate]
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_ms: float = 0.0  # time to first token
    total_ms: float = 0.0
    reused_tokens: int = 0  # prompt tokens served from the previous request's KV cache

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""


class CancellationToken:
    """Set from any thread; generation stops before its next token. A plain flag: nothing waits on
    it, and storing or reading one attribute is atomic (a `threading.Event` costs ~30 us to make,
    cold, on every keystroke's request)."""

    __slots__ = ("cancelled",)

    def __init__(self):
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
