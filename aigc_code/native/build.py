"""Compile decode.c on first use with the system C compiler and load it with ctypes.

No torch headers, no build system: one `cc` call of a few seconds, cached under
`~/.cache/aigc-code/native/<hash>.so`, keyed on the source, the compiler's version, the flags and
the CPU (the code is built for it, `-march=native`). The library is written under a temporary name
and renamed into place, so two processes building at once never load half a file.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("aigc_code.native")

SOURCE = Path(__file__).with_name("decode.c")
# IEEE arithmetic on purpose (no -ffast-math): logits must match the torch path's. -std=c11 also means
# -ffp-contract=off (no fused multiply-adds): measured, FMAs gained nothing here (the step is memory-bound)
NATIVE_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno", "-std=c11"]
PORTABLE_FLAGS = ["-O3", "-shared", "-fPIC", "-fno-math-errno", "-std=c11"]
NATIVE_ENV = "AIGC_CODE_NATIVE"  # "0": never use the native step; "1": a build failure is an error

_loaded: dict[str, ctypes.CDLL | None] = {}


class NativeBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "aigc-code" / "native"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_key() -> str:
    """The CPU's model and feature flags: a library built with -march=native runs only where they match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    keep = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(keep[:2])


def _compiler_version(cc: str) -> str:
    proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def library_path(cc: str, flags: list[str]) -> Path:
    key = "\n".join([SOURCE.read_text(), _compiler_version(cc), " ".join(flags), _cpu_key()])
    return cache_dir() / f"decode-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def compile_library(cc: str, flags: list[str]) -> Path:
    """The cached library for these flags, compiled now if it is not there yet."""
    out = library_path(cc, flags)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.stem + ".", suffix=".so.partial", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise NativeBuildError(f"{cc} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        os.replace(tmp, out)  # atomic: another process sees no file or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _build_and_load() -> ctypes.CDLL:
    cc = compiler()
    if cc is None:
        raise NativeBuildError("no C compiler (cc, gcc or clang) on PATH")
    errors = []
    for flags in (NATIVE_FLAGS, PORTABLE_FLAGS):  # -march=native can be refused (an unknown CPU): then portable
        try:
            lib = ctypes.CDLL(str(compile_library(cc, flags)))
        except (NativeBuildError, OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
            continue
        log.debug("native decode step: %s", lib._name)
        return lib
    raise NativeBuildError("; ".join(errors))


def load_library() -> ctypes.CDLL | None:
    """The compiled decode step, or None (disabled, no compiler, build failed: the torch path is used).

    AIGC_CODE_NATIVE=0 turns it off; =1 turns a build failure into an error instead of a fallback.
    """
    setting = os.environ.get(NATIVE_ENV, "")
    if setting == "0":
        return None
    if "lib" not in _loaded:
        try:
            _loaded["lib"] = _build_and_load()
        except NativeBuildError as exc:
            _loaded["lib"] = None
            _loaded["error"] = exc  # type: ignore[assignment]
            log.debug("native decode step unavailable: %s", exc)
    if _loaded["lib"] is None and setting == "1":
        raise NativeBuildError(f"AIGC_CODE_NATIVE=1 but the native step did not build: {_loaded.get('error')}")
    return _loaded["lib"]
