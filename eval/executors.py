"""Per-language executors: assemble a program, describe how to build and run it, judge it.

How each language is assembled and judged follows the HumanEval-X evaluator
(eval/README.md, "How programs are run"):

  python      prompt + completion + "\\n" + tests                 run in a forked warm worker
  cpp         missing standard #includes + prompt + completion + "\\n" + tests
              g++ -std=c++11 (-lcrypto -lssl when OpenSSL is used); exit 0 passes
  java        prompt + completion + "\\n" + tests -> Main.java; javac, java -cp . Main; exit 0
  javascript  prompt + completion + "\\n" + tests; node test.js; exit 0 AND nothing printed
              (console.assert only prints); js-md5 is provided in node_modules when required
  go          setup + prompt + completion + "\\n" + tests -> main_test.go with one merged
              import block (unused imports dropped, well-known ones added when referenced);
              go test -c (GOPATH mode, offline), then run the test binary; exit 0
  rust        prompt (doc comment + declaration) + completion + "\\n" + tests;
              rustc --edition 2021 --test against prebuilt rand/regex/md5; exit 0 and >= 1 test

Each program is compiled once and run once, every step in the sandbox (sandbox.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from aigc_code.eval import toolchains
from aigc_code.eval.problems import Problem
from aigc_code.eval.sandbox import GiB, MiB
from aigc_code.eval.toolchains import SYSTEM_PATH, WORKER_ENV, Toolchain
from aigc_code.eval.worker import SCRATCH


@dataclass
class Outcome:
    status: str  # passed | failed | compile_error | timeout | skipped | error
    passed: bool
    detail: str = ""
    exec_s: float = 0.0  # sandbox time of all steps

    def to_dict(self) -> dict:
        return asdict(self)


def _env(**extra: str) -> dict:
    env = {"PATH": SYSTEM_PATH, "HOME": SCRATCH, "TMPDIR": SCRATCH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update(extra)
    return env


def _tail(text: str, n: int = 1500) -> str:
    """``text``, or its start and end if long (the first error and the final verdict)."""
    text = text.strip()
    return text if len(text) <= n else text[: n // 3] + "\n...\n" + text[-(2 * n) // 3 :]


# Limits: JVM, Go and node reserve huge virtual ranges, so they get RLIMIT_DATA instead of RLIMIT_AS.
RUN_LIMITS = {"cpu_s": 20, "address_space": 2 * GiB, "nproc": 32, "fsize": 64 * MiB, "nofile": 256}
VM_LIMITS = {"cpu_s": 30, "address_space": None, "data": 2 * GiB, "nproc": 128, "fsize": 64 * MiB, "nofile": 512}
COMPILE_LIMITS = {
    "cpu_s": 120,
    "address_space": None,
    "data": 4 * GiB,
    "nproc": 128,
    "fsize": 512 * MiB,
    "nofile": 1024,
}


class Executor:
    language = ""
    run_timeout = 10.0
    compile_timeout = 90.0

    def __init__(self, toolchain: Toolchain, run_timeout: float | None = None):
        self.tc = toolchain
        if run_timeout:
            self.run_timeout = run_timeout

    # -- what the subclasses define
    def assemble(self, problem: Problem, completion: str) -> str:
        return problem.setup + problem.prompt + completion + "\n" + problem.tests

    def requirements(self, program: str) -> list[str]:
        """Optional toolchain pieces ``program`` needs (keys of ``Toolchain.extras_missing``)."""
        return []

    def job(self, program: str) -> dict:
        raise NotImplementedError

    def judge_run(self, step: dict) -> Outcome | None:
        """Language-specific verdict on a run step that exited 0 (None: passed)."""
        return None

    # -- shared
    def skip_reason(self, program: str) -> str | None:
        if self.tc.missing:
            return f"toolchain missing: {self.tc.missing}"
        for need in self.requirements(program):
            if need in self.tc.extras_missing:
                return f"toolchain missing: {self.tc.extras_missing[need]}"
        return None

    def judge(self, result: dict) -> Outcome:
        steps = result.get("steps") or []
        total = round(sum(s.get("duration_s", 0) for s in steps), 4)
        if result.get("error") or not steps:
            return Outcome("error", False, f"sandbox error: {result.get('error')}", total)
        last = steps[-1]
        output = (last.get("stderr") or "") + ("\n" + last["stdout"] if last.get("stdout") else "")
        if last["name"] == "compile" and last["returncode"] != 0:
            if last["timed_out"]:
                return Outcome("timeout", False, "compilation timed out", total)
            return Outcome("compile_error", False, _tail(output), total)
        if last["timed_out"]:
            return Outcome("timeout", False, f"timed out after {self.run_timeout:g} s", total)
        if last["output_limited"]:
            return Outcome("failed", False, "killed: printed too much output", total)
        if last["returncode"] is None:
            from aigc_code.eval.sandbox import describe_signal

            return Outcome("failed", False, f"killed by {describe_signal(last['signal'])}\n" + _tail(output), total)
        if last["returncode"] != 0:
            return Outcome("failed", False, f"exit status {last['returncode']}\n" + _tail(output), total)
        verdict = self.judge_run(last)
        if verdict is not None:
            verdict.exec_s = total
            return verdict
        return Outcome("passed", True, "", total)

    def run_step(self, argv: list[str], limits: dict | None = None, **kw) -> dict:
        limits = dict(limits or RUN_LIMITS)
        limits["cpu_s"] = max(limits["cpu_s"], int(self.run_timeout) + 5)  # the wall clock decides, normally
        return {
            "name": "run",
            "argv": argv,
            "env": kw.pop("env", _env()),
            "timeout_s": self.run_timeout,
            "limits": limits,
            **kw,
        }

    def compile_step(self, argv: list[str], env: dict | None = None, as_invoker: bool = False) -> dict:
        return {
            "name": "compile",
            "argv": argv,
            "env": env or _env(),
            "timeout_s": self.compile_timeout,
            "limits": COMPILE_LIMITS,
            "as_invoker": as_invoker,
        }


class PythonExecutor(Executor):
    language = "python"
    run_timeout = 5.0

    def assemble(self, problem: Problem, completion: str) -> str:
        program = problem.setup + problem.prompt + completion + "\n" + problem.tests
        if (
            problem.entry_point
            and re.search(r"^def check\(", problem.tests, re.M)
            and not re.search(r"^check\(", problem.tests, re.M)
        ):
            program += f"\n\ncheck({problem.entry_point})\n"  # HumanEval-style tests without the call
        return program

    def job(self, program: str) -> dict:
        limits = dict(RUN_LIMITS, cpu_s=int(self.run_timeout) + 2)
        # WORKER_ENV: the environment the forked interpreter already has (no HOME; TMPDIR unset -> /tmp,
        # which is the worker's private tmpfs).
        return {
            "steps": [
                {
                    "name": "run",
                    "python": program,
                    "env": dict(WORKER_ENV),
                    "timeout_s": self.run_timeout,
                    "limits": limits,
                }
            ]
        }


CPP_HELPER_INCLUDES = [
    "stdlib.h",
    "algorithm",
    "math.h",
    "stdio.h",
    "vector",
    "string",
    "climits",
    "cstring",
    "iostream",
    "cassert",
]


class CppExecutor(Executor):
    language = "cpp"

    def assemble(self, problem: Problem, completion: str) -> str:
        head = problem.setup + problem.prompt
        missing = [h for h in CPP_HELPER_INCLUDES if not re.search(rf"#\s*include\s*<{re.escape(h)}>", head)]
        includes = "".join(f"#include<{h}>\n" for h in missing)
        return includes + head + completion + "\n" + problem.tests

    def requirements(self, program: str) -> list[str]:
        needs = []
        if re.search(r"#\s*include\s*[<\"]boost/", program):
            needs.append("boost")
        if re.search(r"#\s*include\s*[<\"]openssl/", program):
            needs.append("openssl")
        return needs

    def job(self, program: str) -> dict:
        argv = [self.tc.paths["g++"], "-std=c++11", "-w", "-o", "prog", "prog.cpp"]
        if "openssl" in self.requirements(program):
            argv += ["-lcrypto", "-lssl"]
        return {"files": {"prog.cpp": program}, "steps": [self.compile_step(argv), self.run_step([f"{SCRATCH}/prog"])]}


JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto"]


class JavaExecutor(Executor):
    language = "java"
    run_timeout = 15.0

    def job(self, program: str) -> dict:
        javac = [
            self.tc.paths["javac"],
            *[f"-J{f}" for f in JVM_FLAGS],
            "-J-Xmx512m",
            "-encoding",
            "UTF-8",
            "-nowarn",
            "Main.java",
        ]
        java = [self.tc.paths["java"], *JVM_FLAGS, "-Xmx1g", "-cp", ".", "Main"]
        compile_step = self.compile_step(javac)
        compile_step["limits"] = dict(VM_LIMITS, cpu_s=120)
        return {"files": {"Main.java": program}, "steps": [compile_step, self.run_step(java, VM_LIMITS)]}


class JavaScriptExecutor(Executor):
    language = "javascript"

    def requirements(self, program: str) -> list[str]:
        return ["js-md5"] if re.search(r"""require\(\s*['"]js-md5['"]\s*\)""", program) else []

    def job(self, program: str) -> dict:
        job = {
            "files": {"test.js": program},
            "steps": [
                self.run_step(
                    [self.tc.paths["node"], "test.js"], VM_LIMITS, env=_env(NODE_PATH=f"{SCRATCH}/node_modules")
                )
            ],
        }
        if "js-md5" in self.requirements(program):
            job["copy"] = [[self.tc.paths["js-md5"], "node_modules/js-md5"]]
        return job

    def judge_run(self, step: dict) -> Outcome | None:
        if step["stdout"].strip() or step["stderr"].strip():  # console.assert prints and exits 0
            return Outcome(
                "failed",
                False,
                "printed output (a failed console.assert prints):\n" + _tail(step["stderr"] + step["stdout"]),
            )
        return None


GO_HELPER_IMPORTS = [
    "testing",
    "github.com/stretchr/testify/assert",
    "math",
    "strings",
    "fmt",
    "strconv",
    "time",
    "bytes",
    "regexp",
    "sort",
    "math/rand",
    "crypto/md5",
    "unicode",
    "errors",
    "reflect",
]
_GO_IMPORT_BLOCK = re.compile(r"^import\s*\(([^)]*)\)[ \t]*$", re.M)
_GO_IMPORT_ONE = re.compile(r"^import\s+((?:[\w.]+\s+)?\"[^\"]+\")[ \t]*$", re.M)
_GO_PACKAGE = re.compile(r"^package\s+\w+[ \t]*$", re.M)
_GO_SPEC = re.compile(r"^\s*(?:([\w.]+)\s+)?\"([^\"]+)\"")
_GO_NOISE = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|`[^`]*`|'(?:\\.|[^'\\\n])+'", re.S)


def assemble_go(source: str) -> str:
    """One ``package main``, one import block: the program's imports plus well-known packages it
    references, minus any import it does not use (Go rejects unused imports)."""
    specs: list[tuple[str | None, str]] = []

    def take_block(m: re.Match) -> str:
        for line in m.group(1).splitlines():
            s = _GO_SPEC.match(line)
            if s:
                specs.append((s.group(1), s.group(2)))
        return ""

    def take_one(m: re.Match) -> str:
        s = _GO_SPEC.match(m.group(1))
        specs.append((s.group(1), s.group(2)))
        return ""

    body = _GO_IMPORT_BLOCK.sub(take_block, source)
    body = _GO_IMPORT_ONE.sub(take_one, body)
    body = _GO_PACKAGE.sub("", body)
    code = _GO_NOISE.sub(" ", body)
    kept, names = [], set()
    for alias, path in specs + [(None, p) for p in GO_HELPER_IMPORTS]:
        name = alias or path.rsplit("/", 1)[-1]
        if any(path == p and alias == a for a, p in kept):
            continue
        if alias in ("_", "."):
            kept.append((alias, path))
        elif name not in names and re.search(rf"(?<![\w.]){re.escape(name)}\.", code):
            kept.append((alias, path))
            names.add(name)
    imports = "".join(f'    {a + " " if a else ""}"{p}"\n' for a, p in kept)
    return f"package main\n\nimport (\n{imports})\n" + body.lstrip("\n")


class GoExecutor(Executor):
    language = "go"

    def assemble(self, problem: Problem, completion: str) -> str:
        return assemble_go(problem.setup + "\n" + problem.prompt + completion + "\n" + problem.tests)

    def job(self, program: str) -> dict:
        env = toolchains.go_env(self.tc.paths["gocache"], SCRATCH)
        # Compiled as the invoking user: the shared GOCACHE is theirs. Go runs no code at build time
        # (cgo is off); the test binary itself runs sandboxed.
        build = self.compile_step(
            [self.tc.paths["go"], "test", "-c", "-o", "prog.test", "main_test.go"], env, as_invoker=True
        )
        return {
            "files": {"main_test.go": program},
            "steps": [build, self.run_step([f"{SCRATCH}/prog.test"], VM_LIMITS)],
        }

    def judge_run(self, step: dict) -> Outcome | None:
        if "no tests to run" in step["stdout"] + step["stderr"]:
            return Outcome("failed", False, "no tests ran")
        return None


_RUST_RESULT = re.compile(r"test result: ok\. (\d+) passed")


class RustExecutor(Executor):
    language = "rust"

    def job(self, program: str) -> dict:
        p = self.tc.paths
        argv = [
            p["rustc"],
            "--edition",
            "2021",
            "--test",
            "main.rs",
            "-o",
            "prog",
            "-C",
            "debuginfo=0",
            "-A",
            "warnings",
            "-L",
            f"dependency={p['deps_dir']}",
        ]
        for crate, rlib in sorted(p["extern"].items()):
            argv += ["--extern", f"{crate}={rlib}"]
        # Compiled as the invoking user: rustc and the prebuilt crates live in their home.
        # No code runs at build time (no proc-macro crates are available); the test binary runs sandboxed.
        build = self.compile_step(argv, as_invoker=True)
        return {
            "files": {"main.rs": program},
            "steps": [build, self.run_step([f"{SCRATCH}/prog"], VM_LIMITS, env=_env(RUST_BACKTRACE="0"))],
        }

    def judge_run(self, step: dict) -> Outcome | None:
        m = _RUST_RESULT.search(step["stdout"])
        if not m or int(m.group(1)) == 0:
            return Outcome("failed", False, "no tests ran")
        return None


EXECUTORS: dict[str, type[Executor]] = {
    cls.language: cls
    for cls in (PythonExecutor, CppExecutor, JavaExecutor, JavaScriptExecutor, GoExecutor, RustExecutor)
}


def make_executor(language: str, cache_dir: Path | None = None, run_timeout: float | None = None, log=None) -> Executor:
    """An executor whose toolchain is detected and prepared (Rust crates built, Go cache warm)."""
    tc = toolchains.prepare(language, cache_dir, log=log)
    return EXECUTORS[language](tc, run_timeout)
