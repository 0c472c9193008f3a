"""One completion request, straight through:
snapshot -> mode -> context -> prompt -> backend (+ copy candidates) -> post-process -> suggestions.

Plain Python, no JSON-RPC: the LSP handlers take a snapshot of the documents on the event loop
and call `CompletionPipeline.run` in a worker thread; `aigc-code complete`, the repository
benchmark and the infilling benchmark call the same `run` (through `complete_once`). A
`CancellationToken` set from another thread (`$/cancelRequest`, a newer request for the same
document, shutdown) stops it between stages and the model between tokens.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from aigc_code.backends import Backend, CancellationToken, GenerationConfig
from aigc_code.budget import Budget
from aigc_code.cache import SuggestionCache
from aigc_code.choose import merge_candidates
from aigc_code.mode import MULTI, NONE, SINGLE, completion_mode, stop_sequences
from aigc_code.outline import FileIndex, index_file
from aigc_code.postprocess import Site, Suggestion, process
from aigc_code.prompt import Prompt, build_prompt
from aigc_code.settings import Settings
from aigc_code.snapshot import Cursor, Snapshot, SourceFile

if TYPE_CHECKING:  # pragma: no cover
    from aigc_code.generation import GenerationResult
    from aigc_code.workspace import WorkspaceIndex

SINGLE_LINE_MAX_TOKENS = 48


@dataclass
class CompletionRequest:
    doc: Snapshot
    path: str  # shown to the model
    cursor: int  # str index into doc.text
    settings: Settings
    others: list[tuple[Snapshot, str]] = field(default_factory=list)  # (snapshot, path)
    invoked: bool = False  # explicitly asked for (not an automatic trigger)
    file_path: str | None = None  # the document's path on disk, when it has one (workspace lookups)


@dataclass
class Timing:
    mode: str = NONE
    cache_hit: bool = False
    queue_ms: float = 0.0  # waiting for the worker (a previous generation finishing)
    context_ms: float = 0.0  # mode, cache lookup, context and prompt
    retrieval_ms: float = 0.0  # workspace index: copy candidates and retrieved chunks (inside context_ms)
    model_ms: float = 0.0  # backend call, wall clock
    model_prompt_ms: float = 0.0  # backend's time to first token
    postprocess_ms: float = 0.0
    pipeline_ms: float = 0.0  # everything in the worker
    total_ms: float = 0.0  # request received -> response ready (set by the handler)
    answered_at_ms: float = 0.0  # the server's time.perf_counter() (ms) just before the response is written
    prompt_tokens: int = 0
    generated_tokens: int = 0
    candidates: int = 0
    copy_candidates: int = 0
    suggestions: int = 0
    chosen: str = ""  # where the first suggestion came from: model | copy | cache
    finish_reason: str = ""
    context_sections: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class CompletionOutcome:
    suggestions: list[Suggestion]
    timing: Timing
    cancelled: bool = False
    raw: list[str] = field(default_factory=list)  # the backend's candidates before post-processing


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
    return Budget(
        int(budget.prefix_tokens * scale), int(budget.suffix_tokens * scale), int(budget.context_tokens * scale)
    )


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


def cursor_mode(cur: Cursor, invoked: bool) -> str:
    """Complete here at all, one line or a block? An explicit request always gets one line."""
    doc = cur.snap
    mode = completion_mode(doc.tree, doc.src, cur.byte, doc.language or "")
    return SINGLE if mode == NONE and invoked else mode


def to_document_newlines(suggestions: list[Suggestion], text: str) -> None:
    """The model writes \n; a document that uses CRLF gets CRLF (the document is scanned only for
    a suggestion that has a line break: not for one-line ones, most of them)."""
    if any("\n" in s.text for s in suggestions) and "\r\n" in text:
        for s in suggestions:
            s.text = s.text.replace("\r\n", "\n").replace("\n", "\r\n")


class CompletionPipeline:
    def __init__(
        self,
        backend: Callable[[Settings], Backend],
        cache: SuggestionCache | None = None,
        index: IndexCache | None = None,
        workspace: WorkspaceIndex | None = None,
    ):
        self._backend = backend
        self.cache = cache if cache is not None else SuggestionCache()
        self.index = index if index is not None else IndexCache()
        self.workspace = workspace

    def run(
        self, req: CompletionRequest, cancel: CancellationToken | None = None, queued_at: float | None = None
    ) -> CompletionOutcome:
        start = time.perf_counter()
        cancel = cancel or CancellationToken()
        timing = Timing(queue_ms=(start - queued_at) * 1000 if queued_at else 0.0)
        outcome = CompletionOutcome([], timing)
        try:
            return self._run(req, cancel, outcome)
        finally:
            timing.pipeline_ms = (time.perf_counter() - start) * 1000

    def _run(self, req: CompletionRequest, cancel: CancellationToken, outcome: CompletionOutcome) -> CompletionOutcome:
        t0 = time.perf_counter()
        timing = outcome.timing
        doc, settings = req.doc, req.settings
        language = doc.language or ""
        cur = doc.cursor(req.cursor)
        timing.mode = mode = cursor_mode(cur, req.invoked)
        if mode == NONE or cancel.cancelled:
            outcome.cancelled = cancel.cancelled
            return outcome
        cached = self.cache.get(language, cur.before, cur.after)
        if cached is not None:
            timing.cache_hit, timing.chosen = True, "cache"
            timing.context_ms = (time.perf_counter() - t0) * 1000
            outcome.suggestions = [Suggestion(t, 0.0, "cache") for t in cached]
            timing.suggestions = len(outcome.suggestions)
            return outcome

        backend = self._backend(settings)
        request = generation_request(settings, mode, stop_sequences(language, mode, doc.src, cur.byte))
        copies = self._copy_candidates(req, cur, timing)
        prompt = self._prompt(req, cur, backend, request, timing)
        timing.context_sections = prompt.context_sections
        timing.context_ms = (time.perf_counter() - t0) * 1000
        if cancel.cancelled:
            outcome.cancelled = True
            return outcome

        t1 = time.perf_counter()
        if prompt.files:  # the checkpoint's repository format (Qwen2.5-Coder, StarCoder2)
            result = backend.complete(prompt.prefix, prompt.suffix, request, cancel, files=prompt.files, path=req.path)
        else:
            result = backend.complete(prompt.prefix, prompt.suffix, request, cancel)
        self._record_model(timing, result, t1)
        if cancel.cancelled or any(c.finish_reason == "cancelled" for c in result.candidates):
            outcome.cancelled = True
            return outcome
        outcome.raw = [c.text for c in result.candidates]

        t2 = time.perf_counter()
        before, after = cur.window()
        site = Site(doc.language, before, after, mode, tree=doc.tree)
        suggestions = process(result.candidates, site)
        outcome.suggestions, timing.chosen = merge_candidates(
            suggestions, process(copies, site), settings.choice_rule, backend, prompt, cancel
        )
        timing.copy_candidates = len(copies)
        to_document_newlines(outcome.suggestions, doc.text)
        timing.postprocess_ms = (time.perf_counter() - t2) * 1000
        timing.suggestions = len(outcome.suggestions)
        self.cache.put(language, cur.before, cur.after, [s.text for s in outcome.suggestions])
        return outcome

    # -- steps ----------------------------------------------------------------------------------
    def _prompt(
        self, req: CompletionRequest, cur: Cursor, backend: Backend, request: GenerationConfig, timing: Timing
    ) -> Prompt:
        budget = fit_budget(req.settings, request.max_new_tokens, backend.max_context)
        others = [snap.source_file(path) for snap, path in req.others if snap.language]
        snap_by_path = {path: snap for snap, path in req.others}
        snap_by_path[req.path] = req.doc

        def index(f: SourceFile) -> FileIndex:
            snap = snap_by_path.get(f.path)
            return self.index.get(snap) if snap is not None else index_file(f.text, f.tree, f.language, f.source())

        t0 = time.perf_counter()
        retrieved = self._retrieve(req, cur) if req.settings.index_context else []
        timing.retrieval_ms += (time.perf_counter() - t0) * 1000
        prompt = build_prompt(
            req.doc.source_file(req.path),
            cur.index,
            others,
            backend.tokens,
            budget,
            index=index,
            retrieved=retrieved,
            structured=bool(getattr(backend, "repo_format", False)),
        )
        return prompt

    def _workspace_ready(self, req: CompletionRequest) -> bool:
        return self.workspace is not None and req.settings.workspace_index and req.file_path is not None

    def _retrieve(self, req: CompletionRequest, cur: Cursor) -> list:
        if not self._workspace_ready(req):
            return []
        window = cur.before[-1500:] + cur.after[:500]
        return self.workspace.retrieve(req.file_path, req.doc.language or "", window, max_chunks=4, exclude=window)

    def _copy_candidates(self, req: CompletionRequest, cur: Cursor, timing: Timing) -> list:
        if not (req.settings.copy_candidates and self._workspace_ready(req)):
            return []
        from aigc_code.generation import Candidate

        t0 = time.perf_counter()
        found = self.workspace.copy_candidates(req.file_path, cur.before, cur.after, max_candidates=3)
        timing.retrieval_ms += (time.perf_counter() - t0) * 1000
        # a copy that ties with a different runner-up is right ~5% of the time (docs/workspace-index.md)
        return [Candidate(text=c.text, finish_reason="copy" if c.margin > 0 else "copy-tie") for c in found]

    @staticmethod
    def _record_model(timing: Timing, result: GenerationResult, t1: float) -> None:
        timing.model_ms = (time.perf_counter() - t1) * 1000
        timing.model_prompt_ms = result.prompt_ms
        timing.prompt_tokens = result.prompt_tokens
        timing.generated_tokens = result.generated_tokens
        timing.candidates = len(result.candidates)
        timing.finish_reason = ",".join(sorted({c.finish_reason for c in result.candidates}))


def complete_once(
    text: str,
    cursor: int,
    path: str,
    language: str,
    settings: Settings,
    backend: Backend,
    workspace: WorkspaceIndex | None = None,
    invoked: bool = True,
    others: list[tuple[Snapshot, str]] | None = None,
    cancel: CancellationToken | None = None,
    shown_path: str | None = None,
) -> CompletionOutcome:
    """One completion at `str` index `cursor` of `text` through the very pipeline the LSP server runs.

    `path` is the file's path on disk (workspace lookups when `workspace` is given); the model is
    shown `shown_path` (default: `path`): the server shows a path relative to its workspace folder,
    and a prompt must not depend on where a benchmark keeps its copy of a repository."""
    from pathlib import Path

    absolute = Path(path).absolute()
    doc = Snapshot.parse(text, language or None, absolute.as_uri())
    pipeline = CompletionPipeline(lambda _s: backend, cache=SuggestionCache(capacity=0), workspace=workspace)
    file_path = str(absolute)
    request = CompletionRequest(
        doc, shown_path or path, cursor, settings, others=others or [], invoked=invoked, file_path=file_path
    )
    return pipeline.run(request, cancel)
