"""Where an evaluation's completions come from, and how many requests are in flight.

A generator turns *units* -- lists of ``(problem, sample index)`` done together -- into
generation records (``completion``, ``raw``, timings):

* ``ReferenceGenerator``: the canonical solution (``--reference``);
* ``LocalGenerator``: the in-process engine, aligned batches of ``BATCH`` samples (one unit at a time);
* ``OpenAIGenerator``: an OpenAI-compatible ``/v1/completions`` server (vLLM, TGI, llama.cpp), one
  request a sample, ``--concurrency K`` requests in flight;
* ``InfillGenerator``: infilling tasks completed through the LSP server's pipeline
  (``aigc_code.pipeline.complete_once``: context, FIM prompt, stops, post-processing, syntax
  filter), recording both the post-processed suggestion and the backend's raw text.

``Scheduler`` runs units on K threads and measures how busy it kept the backend: the mean
number of requests in flight and the time with none in flight (idle).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from aigc_code.eval.generation import BATCH, generate, sample_seed, stop_sequences, trim_completion
from aigc_code.eval.infill import RAW_SUFFIX
from aigc_code.eval.problems import Problem

EXTENSIONS = {"python": "py", "cpp": "cpp", "java": "java", "javascript": "js", "go": "go", "rust": "rs"}


def _record(completion: str, raw: str, finish: str, tokens: int, prompt_tokens: int, ms: float, max_new: int) -> dict:
    return {
        "completion": completion,
        "raw": raw,
        "finish_reason": finish,
        "generated_tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "gen_ms": round(ms, 2),
        "max_new_tokens": max_new,
    }


class ReferenceGenerator:
    concurrency = 1

    def __init__(self, n: int):
        self.n = n

    def units(self, problem: Problem, missing: list[int]) -> list[list[tuple[Problem, int]]]:
        return [[(problem, i) for i in missing]]

    def generate(self, unit: list[tuple[Problem, int]]) -> list[tuple[Problem, int, dict]]:
        return [
            (p, i, {"completion": p.canonical_solution, "reference": True, "generated_tokens": 0, "gen_ms": 0.0})
            for p, i in unit
        ]

    def close(self) -> None:
        pass


class LocalGenerator:
    """The engine in this process; samples of a problem are decoded together in aligned batches, so
    a resumed run regenerates a batch whole (same seed) and keeps only the missing samples."""

    concurrency = 1

    def __init__(self, engine, cfg):
        self.engine, self.cfg = engine, cfg

    def units(self, problem: Problem, missing: list[int]) -> list[list[tuple[Problem, int]]]:
        out = []
        for start in range(0, self.cfg.samples, BATCH):
            want = [i for i in missing if start <= i < start + BATCH]
            if want:
                out.append([(problem, i) for i in want])
        return out

    def generate(self, unit: list[tuple[Problem, int]]) -> list[tuple[Problem, int, dict]]:
        p = unit[0][0]
        start = unit[0][1] // BATCH * BATCH
        size = min(BATCH, self.cfg.samples - start)
        c = self.cfg
        gens = generate(
            self.engine,
            p,
            size,
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            seed=c.seed,
            first_index=start,
            prompt_format=c.prompt_format,
        )
        out = []
        for _, i in unit:
            g = gens[i - start]
            out.append(
                (
                    p,
                    i,
                    _record(
                        g.completion,
                        g.raw,
                        g.finish_reason,
                        g.generated_tokens,
                        g.prompt_tokens,
                        g.gen_ms,
                        g.max_new_tokens,
                    ),
                )
            )
        return out

    def close(self) -> None:
        pass


def openai_backend(cfg, plain: bool):
    """The OpenAI-compatible client of aigc_code.remote; ``plain``: the prompt is sent as is."""
    from aigc_code.backends import make_backend

    return make_backend(
        "openai",
        endpoint=cfg.endpoint,
        model=cfg.model,
        fim_format="{prefix}" if plain else cfg.fim_format,
        timeout_s=cfg.request_timeout,
    )


def warm_up(backend) -> None:
    """Let the client ask the server what it is (flavour, context size) now, not inside the first request
    while K-1 others wait behind it."""
    probe = getattr(backend, "server", None)
    if callable(probe):
        try:
            probe()
        except Exception:  # noqa: BLE001 - the first request reports a dead server clearly
            pass


class OpenAIGenerator:
    """One ``/v1/completions`` request per sample (servers such as llama.cpp ignore ``n``), seeded per
    sample so that a resumed run asks exactly what an uninterrupted one would have."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.concurrency = cfg.concurrency
        self.backend = openai_backend(cfg, plain=cfg.prompt_format == "plain")
        warm_up(self.backend)

    def units(self, problem: Problem, missing: list[int]) -> list[list[tuple[Problem, int]]]:
        return [[(problem, i)] for i in missing]

    def generate(self, unit: list[tuple[Problem, int]]) -> list[tuple[Problem, int, dict]]:
        from aigc_code.generation import GenerationConfig

        p, i = unit[0]
        c = self.cfg
        req = GenerationConfig(
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            n=1,
            stop=stop_sequences(p),
            seed=sample_seed(p, i, c.seed),
        )
        res = self.backend.complete(p.setup + p.prompt, "", req)
        cand = res.candidates[0]
        tokens = len(cand.token_logprobs) or res.generated_tokens
        rec = _record(
            trim_completion(p, cand.text, cand.finish_reason),
            cand.text,
            cand.finish_reason,
            tokens,
            res.prompt_tokens,
            res.total_ms,
            c.max_new_tokens,
        )
        return [(p, i, rec)]

    def close(self) -> None:
        self.backend.close()


class _Recording:
    """Forwards to a backend and keeps the last result (the raw text before post-processing)."""

    def __init__(self, backend):
        self.backend = backend
        self.kind, self.max_context, self.tokens = backend.kind, backend.max_context, backend.tokens
        self.last = None

    def complete(self, prefix, suffix, request, cancel=None):
        self.last = self.backend.complete(prefix, suffix, request, cancel)
        return self.last

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        pass


class InfillGenerator:
    """Each infilling task through ``complete_once`` (the LSP server's pipeline); the same request's
    raw backend text is recorded as the task ``<id>:raw``, so one run measures what post-processing
    adds or costs."""

    def __init__(self, cfg, backend, concurrency: int = 1):
        from aigc_code.settings import Settings

        self.cfg, self.backend, self.concurrency = cfg, backend, concurrency
        self.settings = Settings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)

    def units(self, problem: Problem, missing: list[int]) -> list[list[tuple[Problem, int]]]:
        if problem.task_id.endswith(RAW_SUFFIX):  # generated with its main task
            return []
        raw = raw_twin(problem)
        return [[(problem, i), (raw, i)] for i in missing]

    def generate(self, unit: list[tuple[Problem, int]]) -> list[tuple[Problem, int, dict]]:
        import dataclasses

        from aigc_code.pipeline import complete_once

        (p, i), (raw_p, _) = unit
        settings = dataclasses.replace(self.settings, seed=sample_seed(p, i, self.cfg.seed))
        rec = _Recording(self.backend)
        before = p.setup + p.prompt
        path = str(Path("/nonexistent/aigc-eval") / f"{p.task_id.replace('/', '_')}.{EXTENSIONS[p.language]}")
        t0 = time.perf_counter()
        outcome = complete_once(before + p.suffix, len(before), path, p.language, settings, rec)
        ms = (time.perf_counter() - t0) * 1000
        result = rec.last
        raw = result.candidates[0].text if result and result.candidates else ""
        post = outcome.suggestions[0].text if outcome.suggestions else ""
        finish = result.candidates[0].finish_reason if result and result.candidates else "none"
        tokens = result.generated_tokens if result else 0
        prompt_tokens = result.prompt_tokens if result else 0
        return [
            (
                p,
                i,
                {
                    **_record(post, raw, finish, tokens, prompt_tokens, ms, self.settings.max_new_tokens),
                    "mode": outcome.timing.mode,
                },
            ),
            (raw_p, i, {**_record(raw, raw, finish, 0, 0, 0.0, self.settings.max_new_tokens), "variant": "raw"}),
        ]

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close:
            close()


def raw_twin(task: Problem) -> Problem:
    import dataclasses

    return dataclasses.replace(task, task_id=task.task_id + RAW_SUFFIX)


class Scheduler:
    """Runs units with ``concurrency`` in flight and measures the in-flight count over time, from the
    first request's start to the last one's end (idle: time in between with none in flight)."""

    def __init__(self, concurrency: int):
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self._area = self._idle = self._full = 0.0
        self._t0 = self._last = self._t1 = None

    def _tick(self, delta: int) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._t0 is None:
                self._t0 = self._last = now
            dt = now - self._last
            self._area += self.in_flight * dt
            self._idle += dt if self.in_flight == 0 else 0.0
            self._full += dt if self.in_flight >= self.concurrency else 0.0
            self._last = now
            self.in_flight += delta
            self.requests += delta > 0
            if delta < 0:
                self._t1 = now

    def _timed(self, fn, unit):
        self._tick(+1)
        try:
            return fn(unit)
        finally:
            self._tick(-1)

    def run(self, units: list, fn, on_done) -> None:
        """``fn(unit)`` for every unit; ``on_done(result)`` in this thread as results arrive."""
        if self.concurrency == 1:
            for u in units:
                on_done(self._timed(fn, u))
            return
        self._run_threads(units, fn, on_done)

    def _run_threads(self, units: list, fn, on_done) -> None:
        """K daemon threads take units from a queue; this thread writes the results as they come. On
        Ctrl-C or a failed request nothing waits for the requests still in flight (daemon threads; the
        caller closes the client); the samples already written are kept for the resume."""
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for u in units:
            todo.put(u)
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    unit = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((True, self._timed(fn, unit)))
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    done.put((False, e))

        for k in range(min(self.concurrency, len(units))):
            threading.Thread(target=worker, name=f"eval-gen-{k}", daemon=True).start()
        try:
            for _ in range(len(units)):
                ok, value = self._next(done)
                if not ok:
                    raise value
                on_done(value)
        finally:
            stop.set()

    @staticmethod
    def _next(done: queue.SimpleQueue):
        while True:  # a timeout keeps the wait interruptible by Ctrl-C
            try:
                return done.get(timeout=0.5)
            except queue.Empty:
                continue

    def stats(self) -> dict | None:
        if self._t0 is None or self._t1 is None:
            return None
        wall = self._t1 - self._t0
        return {
            "requests": self.requests,
            "concurrency": self.concurrency,
            "wall_s": round(wall, 3),
            "mean_in_flight": round(self._area / wall, 2) if wall > 0 else None,
            "idle_s": round(self._idle, 3),
            "all_slots_busy_s": round(self._full, 3),
        }
