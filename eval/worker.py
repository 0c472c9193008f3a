"""A pre-started sandbox worker (the harness side, ``WorkerPool``, is in pool.py).

A worker is a separate Python process (``python3 -I .../eval/worker.py``) started with a
minimal environment (``toolchains.WORKER_ENV``). It needs only the standard library and
sandbox.py, so it can run on a different interpreter than the harness: as root, the system
``python3`` is preferred, because the sandbox uid must be able to read the interpreter's
standard library for programs' own imports (a venv built from a Python under /root cannot).

At start-up a worker imports the standard-library modules benchmark programs commonly use,
enters its namespaces and claims its sandbox uid (``sandbox.isolate_worker``),
then serves jobs, one at a time, over its stdin/stdout as JSON lines. Python programs are
run in a ``fork`` of the warm interpreter (no interpreter start-up, ~1 ms), compiled
languages by exec-ing their toolchain -- both through ``sandbox.run``.

Job:    {"id": int, "files": {relpath: text}, "copy": [[abs_src, relpath], ...],
         "steps": [{"name": str, "argv": [...] | "python": src, "env": {..}, "timeout_s": float,
                    "limits": {..Limits fields..}, "as_invoker": bool}],
         "max_output": int}
Steps run in order in one scratch directory; the first step that does not exit 0 ends the
job. ``@SCRATCH@`` in argv/env values is replaced by the scratch directory's path.
Result: {"id": int, "steps": [{"name": str, ..StepResult fields..}], "error": str | None}
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import sys
from dataclasses import asdict

try:
    from aigc_code.eval import sandbox
except ImportError:  # started as a script by an interpreter without aigc-code installed (see pool.py)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sandbox  # type: ignore[no-redef]

    del sys.path[0]

# Imported before forking so that programs find them already loaded (the point of the pool): what
# HumanEval programs import, plus a few other staples. Kept short -- a bigger worker forks slower.
PREIMPORT = (
    "typing math random copy string collections re hashlib itertools functools heapq bisect operator "
    "traceback atexit types"
).split()

SCRATCH = "@SCRATCH@"


# ----------------------------------------------------------------------------- worker side


def _subst(value: str, scratch: str) -> str:
    return value.replace(SCRATCH, scratch)


def run_job(iso: sandbox.Isolation, job: dict) -> dict:
    scratch = sandbox.make_scratch(iso, job.get("files", {}))
    results = []
    try:
        for src, rel in job.get("copy", []):
            dst = os.path.join(scratch, rel)
            if os.path.isdir(src):
                shutil.copytree(src, dst, symlinks=False)
            else:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
        sandbox.chown_tree(iso, scratch)
        for step in job["steps"]:
            argv = [_subst(a, scratch) for a in step["argv"]] if step.get("argv") else None
            env = {k: _subst(v, scratch) for k, v in step.get("env", {}).items()}
            res = sandbox.run(
                iso,
                scratch,
                argv=argv,
                python=step.get("python"),
                env=env,
                timeout_s=float(step.get("timeout_s", 10)),
                limits=sandbox.Limits(**step.get("limits", {})),
                as_invoker=bool(step.get("as_invoker", False)),
                max_output=int(job.get("max_output", 32 * 1024)),
            )
            results.append({"name": step.get("name", "run"), **res.to_dict()})
            if res.returncode != 0:
                break
        return {"id": job.get("id"), "steps": results, "error": None}
    finally:
        sandbox.remove_scratch(scratch)


def _read_lines(fd: int):
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    opts = {argv[i]: argv[i + 1] for i in range(0, len(argv) - 1, 2)}  # an odd argv is rejected below
    if len(argv) % 2 or "--cache-dir" not in opts or set(opts) - {"--cache-dir", "--uid-base", "--namespaces"}:
        sys.exit(
            "usage: python3 -I worker.py --cache-dir DIR [--uid-base N] [--namespaces 0|1]"
            "  (internal: started by pool.py)"
        )
    cache_dir, uid_base = opts["--cache-dir"], int(opts.get("--uid-base", sandbox.DEFAULT_UID_BASE))
    namespaces = opts.get("--namespaces", "1") != "0"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's business
    sandbox._libc.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for name in PREIMPORT:
        __import__(name)
    out_fd = os.dup(1)
    os.set_inheritable(out_fd, False)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    iso = sandbox.isolate_worker(cache_dir, uid_base, namespaces)
    gc.freeze()  # forked children then never make the collector walk (and copy) the worker's objects
    _write_all(out_fd, json.dumps({"ready": True, "isolation": asdict(iso), "pid": os.getpid()}).encode() + b"\n")
    for line in _read_lines(0):
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            result = run_job(iso, job)
        except Exception as e:  # noqa: BLE001 - report, keep serving
            result = {"id": job.get("id"), "steps": [], "error": f"{type(e).__name__}: {e}"}
        _write_all(out_fd, json.dumps(result).encode() + b"\n")
    if not iso.private_tmp:  # a private /tmp vanishes with the worker's mount namespace
        sandbox.remove_scratch(iso.scratch_base)


if __name__ == "__main__":
    main()
