"""One completion request, straight through:
document -> context -> prompt -> backend -> post-process -> suggestions.

Plain Python, no JSON-RPC: the LSP handlers take a snapshot of the documents on the event
loop and call `CompletionPipeline.run` in a worker thread; a `CancellationToken` set from the loop
(`$/cancelRequest`, a newer request for the same document, shutdown) stops it between
stages and the model between tokens.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable

from aigc_code.backends import Backend, CancellationToken, GenerationConfig
from aigc_code.context import MULTI, NONE, SINGLE, Budget, FileIndex, SourceFile, build_prompt, completion_mode, index_file, stop_sequences
from aigc_code.postprocess import Site, Suggestion, process

from .cache import SuggestionCache
from .documents import Snapshot
from .settings import Settings

SINGLE_LINE_MAX_TOKENS = 48


@dataclass
class CompletionRequest:
    doc: Snapshot
    path: str  # shown to the model
    cursor: int  # str index into doc.text
    settings: Settings
    others: list[tuple[Snapshot, str]] = field(default_factory=list)  # (snapshot, path)
    invoked: bool = False  # explicitly asked for (not an automatic trigger)


@dataclass
class Timing:
    mode: str = NONE
    cache_hit: bool = False
    queue_ms: float = 0.0  # waiting for the worker (a previous generation finishing)
    context_ms: float = 0.0  # mode, cache lookup, context and prompt
    model_ms: float = 0.0  # backend call, wall clock
    model_prompt_ms: float = 0.0  # backend's time to first token
    postprocess_ms: float = 0.0
    pipeline_ms: float = 0.0  # everything in the worker
    total_ms: float = 0.0  # request received -> response ready (set by the handler)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    candidates: int = 0
    suggestions: int = 0
    finish_reason: str = ""
    context_sections: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class CompletionOutcome:
    suggestions: list[Suggestion]
    timing: Timing
    cancelled: bool = False


class IndexCache:
    """`FileIndex` per (uri, version): other open files are indexed once per edit, not per request."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], FileIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, snap: Snapshot) -> FileIndex:
        key = (snap.uri, snap.version)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        idx = index_file(snap.text, snap.tree, snap.language or "", snap.src)
        with self._lock:
            self._items[key] = idx
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return idx


def fit_budget(settings: Settings, max_new_tokens: int, max_context: int | None) -> Budget:
    """Token budgets from the settings, scaled down to what the model's context can hold."""
    budget = Budget(settings.prefix_tokens, settings.suffix_tokens, settings.context_tokens)
    if not max_context:
        return budget
    room = max(16, max_context - max_new_tokens - 8)
    want = budget.prefix_tokens + budget.suffix_tokens + budget.context_tokens
    if want <= room:
        return budget
    scale = room / want
    return Budget(int(budget.prefix_tokens * scale), int(budget.suffix_tokens * scale), int(budget.context_tokens * scale))


def generation_request(settings: Settings, mode: str, stops: list[str]) -> GenerationConfig:
    max_new = settings.max_new_tokens if mode == MULTI else min(settings.max_new_tokens, SINGLE_LINE_MAX_TOKENS)
    temperature = settings.temperature
    if settings.n > 1 and temperature == 0.0:
        temperature = 0.2  # n greedy candidates would all be the same
    return GenerationConfig(
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=settings.top_p,
        n=settings.n,
        stop=stops,
        time_budget_s=settings.time_budget_ms / 1000 if settings.time_budget_ms else None,
        seed=settings.seed,
    )


class CompletionPipeline:
    def __init__(self, backend: Callable[[Settings], Backend], cache: SuggestionCache | None = None, index: IndexCache | None = None):
        self._backend = backend
        self.cache = cache if cache is not None else SuggestionCache()
        self.index = index if index is not None else IndexCache()

    def run(self, req: CompletionRequest, cancel: CancellationToken | None = None, queued_at: float | None = None) -> CompletionOutcome:
        start = time.perf_counter()
        cancel = cancel or CancellationToken()
        timing = Timing(queue_ms=(start - queued_at) * 1000 if queued_at else 0.0)
        outcome = CompletionOutcome([], timing)
        try:
            return self._run(req, cancel, timing, outcome)
        finally:
            timing.pipeline_ms = (time.perf_counter() - start) * 1000

    def _run(self, req: CompletionRequest, cancel: CancellationToken, timing: Timing, outcome: CompletionOutcome) -> CompletionOutcome:
        t0 = time.perf_counter()
        doc, settings = req.doc, req.settings
        language = doc.language or ""
        text = doc.text
        before, after = text[: req.cursor], text[req.cursor :]
        offset = len(before) if before.isascii() else len(before.encode("utf-8"))
        mode = completion_mode(doc.tree, doc.src, offset, language)
        if mode == NONE and req.invoked:
            mode = SINGLE
        timing.mode = mode
        if mode == NONE or cancel.cancelled:
            outcome.cancelled = cancel.cancelled
            return outcome

        cached = self.cache.get(language, before, after)
        if cached is not None:
            timing.cache_hit = True
            timing.context_ms = (time.perf_counter() - t0) * 1000
            outcome.suggestions = [Suggestion(t, 0.0, "cache") for t in cached]
            timing.suggestions = len(outcome.suggestions)
            return outcome

        backend = self._backend(settings)
        stops = stop_sequences(language, mode, doc.src, offset)
        request = generation_request(settings, mode, stops)
        budget = fit_budget(settings, request.max_new_tokens, backend.max_context)
        others = [snap.source_file(path) for snap, path in req.others if snap.language]
        snap_by_path = {path: snap for snap, path in req.others}
        snap_by_path[req.path] = doc

        def index(f: SourceFile) -> FileIndex:
            snap = snap_by_path.get(f.path)
            return self.index.get(snap) if snap is not None else index_file(f.text, f.tree, f.language, f.source())

        prompt = build_prompt(doc.source_file(req.path), req.cursor, others, backend.tokens, budget, index=index)
        timing.context_sections = prompt.context_sections
        t1 = time.perf_counter()
        timing.context_ms = (t1 - t0) * 1000
        if cancel.cancelled:
            outcome.cancelled = True
            return outcome

        result = backend.complete(prompt.prefix, prompt.suffix, request, cancel)
        t2 = time.perf_counter()
        timing.model_ms = (t2 - t1) * 1000
        timing.model_prompt_ms = result.prompt_ms
        timing.prompt_tokens = result.prompt_tokens
        timing.generated_tokens = result.generated_tokens
        timing.candidates = len(result.candidates)
        timing.finish_reason = ",".join(sorted({c.finish_reason for c in result.candidates}))
        if cancel.cancelled or any(c.finish_reason == "cancelled" for c in result.candidates):
            outcome.cancelled = True
            return outcome

        site = Site(doc.language, before, after, mode, tree=doc.tree)
        outcome.suggestions = process(result.candidates, site)
        if "\r\n" in text:  # the model writes \n; the document uses CRLF
            for s in outcome.suggestions:
                s.text = s.text.replace("\r\n", "\n").replace("\n", "\r\n")
        timing.postprocess_ms = (time.perf_counter() - t2) * 1000
        timing.suggestions = len(outcome.suggestions)
        self.cache.put(language, before, after, [s.text for s in outcome.suggestions])
        return outcome
