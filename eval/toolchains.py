"""Find (and, where needed, prepare) the toolchains each benchmark language needs.

Nothing here downloads anything: Rust crates come from Debian's offline registry
(/usr/share/cargo/registry), Go packages from /usr/share/gocode, js-md5 from a directory
``.ci/toolchains.sh`` filled with npm. Shared artefacts live under the cache directory
(``~/.cache/aigc-code/`` unless ``AIGC_CODE_CACHE`` is set):

  rust-deps/<key>/      rand/regex/md5 rlibs built once by cargo; <key> hashes ``rustc -vV``
  go-build/             GOCACHE, warmed with the standard library and testify
  node/node_modules/    js-md5 (``npm install --prefix ~/.cache/aigc-code/node js-md5``)
  sandbox-locks/        which sandbox uids are in use (see sandbox.py)

A missing toolchain makes the language (or the one problem that needs the missing piece)
"skipped: toolchain missing: ..." -- never a model failure.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# The sandbox workers' environment. Python programs run in a fork of a worker and inherit it
# as is (rewriting os.environ in every child costs time), so it is exactly the clean
# environment they should see; nothing of the harness's own environment is passed on.
WORKER_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
GOPATH = "/usr/share/gocode"
CARGO_REGISTRY = "/usr/share/cargo/registry"
BOOST_HEADER = "/usr/include/boost/any.hpp"
OPENSSL_HEADER = "/usr/include/openssl/md5.h"

RUST_CARGO_TOML = """\
[package]
name = "aigc_eval_deps"
version = "0.0.0"
edition = "2021"

[lib]
path = "lib.rs"

[dependencies]
rand = "0.8"
# Debian ships regex without its optional perf crates (aho-corasick, memchr).
regex = { version = "1", default-features = false, features = ["std", "unicode"] }
md5 = "0.7"
"""
RUST_CARGO_CONFIG = f"""\
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "{CARGO_REGISTRY}"

[net]
offline = true
"""
RUST_CRATES = ("rand", "regex", "md5")

GO_WARMUP = """\
package main

import (
    "testing"
    "github.com/stretchr/testify/assert"
)

func TestWarm(t *testing.T) {
    assert.Equal(t, 1, 1)
}
"""


def default_cache_dir() -> Path:
    """``$AIGC_CODE_CACHE``, else ``$XDG_CACHE_HOME/aigc-code``, else ``~/.cache/aigc-code``."""
    base = os.environ.get("AIGC_CODE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aigc-code"
    )
    return Path(base)


class ToolchainMissing(RuntimeError):
    """A toolchain (or a piece of one) is not installed; the message names what to install."""


@dataclass
class Toolchain:
    language: str
    missing: str | None = None  # why the language cannot run at all, or None
    paths: dict = field(default_factory=dict)  # executables and artefacts the executor needs
    extras_missing: dict = field(default_factory=dict)  # optional piece -> reason (per-problem skips)


def _which(name: str) -> str | None:
    # Not realpath: rustup's proxies are symlinks to `rustup` that dispatch on their name.
    path = shutil.which(name)
    return os.path.abspath(path) if path else None


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# ----------------------------------------------------------------------------- detection


def _detect_python(tc: Toolchain, cache_dir: Path) -> None:
    import sys

    tc.paths["python"] = sys.executable


def _detect_cpp(tc: Toolchain, cache_dir: Path) -> None:
    gxx = _which("g++")
    if not gxx:
        tc.missing = "g++ (Debian package g++)"
    tc.paths["g++"] = gxx
    if not os.path.exists(BOOST_HEADER):
        tc.extras_missing["boost"] = "boost headers (Debian package libboost-dev)"
    if not os.path.exists(OPENSSL_HEADER):
        tc.extras_missing["openssl"] = "OpenSSL headers (Debian package libssl-dev)"


def _detect_java(tc: Toolchain, cache_dir: Path) -> None:
    javac, java = _which("javac"), _which("java")
    if not (javac and java):
        tc.missing = "javac/java (Debian package openjdk-17-jdk-headless)"
    tc.paths.update(javac=javac, java=java)


def _detect_javascript(tc: Toolchain, cache_dir: Path) -> None:
    node = _which("node") or _which("nodejs")
    if not node:
        tc.missing = "node (Debian package nodejs)"
    tc.paths["node"] = node
    md5 = find_js_md5(cache_dir)
    if md5:
        tc.paths["js-md5"] = md5
    else:
        tc.extras_missing["js-md5"] = "npm package js-md5 (run .ci/toolchains.sh)"


def _detect_go(tc: Toolchain, cache_dir: Path) -> None:
    go = _which("go")
    if not go:
        tc.missing = "go (Debian package golang-go)"
    elif not os.path.isdir(f"{GOPATH}/src/github.com/stretchr/testify/assert"):
        tc.missing = "testify (Debian package golang-github-stretchr-testify-dev)"
    tc.paths.update(go=go, gocache=str(cache_dir / "go-build"))


def _detect_rust(tc: Toolchain, cache_dir: Path) -> None:
    if not _which("rustc") or not _which("cargo"):
        tc.missing = "rustc and cargo"
        return
    for crate, pkg in (
        ("rand-0.8", "librust-rand-dev"),
        ("regex-1", "librust-regex-dev"),
        ("md5-0.7", "librust-md5-dev"),
    ):
        if not glob.glob(f"{CARGO_REGISTRY}/{crate}*"):
            tc.missing = f"crate {crate} (Debian package {pkg})"


_DETECT = {
    "python": _detect_python,
    "cpp": _detect_cpp,
    "java": _detect_java,
    "javascript": _detect_javascript,
    "go": _detect_go,
    "rust": _detect_rust,
}


def detect(language: str, cache_dir: Path | None = None) -> Toolchain:
    """What is installed for ``language`` (cheap; does not build anything)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    tc = Toolchain(language)
    step = _DETECT.get(language)
    if step is None:
        tc.missing = f"no executor for language {language!r}"
    else:
        step(tc, cache_dir)
    return tc


def find_js_md5(cache_dir: Path) -> str | None:
    candidates = [os.environ.get("AIGC_JS_MD5_DIR", ""), str(cache_dir / "node" / "node_modules" / "js-md5")]
    npm = _which("npm")
    for root in ("/usr/local/lib/node_modules", "/usr/lib/node_modules", "/usr/share/nodejs"):
        candidates.append(f"{root}/js-md5")
    if npm:
        candidates.append(str(Path(npm).parent.parent / "lib" / "node_modules" / "js-md5"))
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "package.json")):
            return c
    return None


# ----------------------------------------------------------------------------- preparation


def prepare(language: str, cache_dir: Path | None = None, log=None) -> Toolchain:
    """``detect`` plus one-off work (build Rust crates, warm the Go cache). Idempotent."""
    cache_dir = Path(cache_dir or default_cache_dir())
    tc = detect(language, cache_dir)
    if tc.missing:
        return tc
    try:
        if language == "rust":
            tc.paths.update(prepare_rust(cache_dir, log))
        elif language == "go":
            prepare_go(tc.paths["go"], Path(tc.paths["gocache"]), cache_dir, log)
    except ToolchainMissing as e:
        tc.missing = str(e)
    return tc


def rust_sysroot_rustc() -> tuple[str, str]:
    """The real rustc (not the rustup proxy, which needs $HOME) and its ``-vV`` text."""
    rustc = _which("rustc")
    res = _run([rustc, "--print", "sysroot"])
    if res.returncode != 0:
        raise ToolchainMissing(f"rustc does not run: {res.stderr.strip()[:300]}")
    real = os.path.join(res.stdout.strip(), "bin", "rustc")
    if not os.access(real, os.X_OK):
        real = rustc
    return real, _run([real, "-vV"]).stdout


def prepare_rust(cache_dir: Path, log=None) -> dict:
    rustc, version = rust_sysroot_rustc()
    key = hashlib.sha256((version + RUST_CARGO_TOML + RUST_CARGO_CONFIG).encode()).hexdigest()[:16]
    root = cache_dir / "rust-deps" / key
    manifest = root / "manifest.json"
    with _locked(cache_dir / "rust-deps" / ".lock"):
        if manifest.exists():
            data = json.loads(manifest.read_text())
            if all(os.path.exists(p) for p in data["extern"].values()):
                return data
        if log:
            log(f"building Rust crates {', '.join(RUST_CRATES)} offline into {root} (once)")
        (root / ".cargo").mkdir(parents=True, exist_ok=True)
        (root / "Cargo.toml").write_text(RUST_CARGO_TOML)
        (root / "lib.rs").write_text("")
        (root / ".cargo" / "config.toml").write_text(RUST_CARGO_CONFIG)
        cargo = os.path.join(os.path.dirname(rustc), "cargo")  # same toolchain as rustc, no rustup proxy
        if not os.access(cargo, os.X_OK):
            cargo = _which("cargo")
        env = dict(
            os.environ,
            PATH=f"{os.path.dirname(rustc)}:{os.environ.get('PATH', SYSTEM_PATH)}",
            CARGO_HOME=str(root / "cargo-home"),
            CARGO_TARGET_DIR=str(root / "target"),
            RUSTC=rustc,
        )
        res = _run([cargo, "build", "--release", "--offline", "--message-format=json"], cwd=root, env=env, timeout=1800)
        if res.returncode != 0:
            raise ToolchainMissing(f"building the Rust crates failed: {res.stderr.strip()[-800:]}")
        extern, deps_dir = {}, None
        for line in res.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] in RUST_CRATES:
                rlib = next((f for f in msg["filenames"] if f.endswith(".rlib")), None)
                if rlib:
                    extern[msg["target"]["name"]] = rlib
                    deps_dir = os.path.dirname(rlib)
        if set(extern) != set(RUST_CRATES):
            raise ToolchainMissing(f"cargo did not produce rlibs for {sorted(set(RUST_CRATES) - set(extern))}")
        data = {"rustc": rustc, "extern": extern, "deps_dir": deps_dir, "rustc_version": version}
        manifest.write_text(json.dumps(data, indent=1))
        return data


def go_env(gocache: str, scratch: str) -> dict:
    return {
        "PATH": SYSTEM_PATH,
        "HOME": scratch,
        "TMPDIR": scratch,
        "GOCACHE": gocache,
        "GOPATH": GOPATH,
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "LANG": "C.UTF-8",
    }


def prepare_go(go: str, gocache: Path, cache_dir: Path, log=None) -> None:
    """Compile the standard library and testify into the shared GOCACHE once (~15 s cold)."""
    stamp = gocache / ".aigc-warm"
    if stamp.exists():
        return
    with _locked(cache_dir / "go-build.lock"):
        if stamp.exists():
            return
        if log:
            log(f"warming the Go build cache {gocache} (once)")
        gocache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "main_test.go").write_text(GO_WARMUP)
            res = _run(
                [go, "test", "-c", "-o", "warm.test", "main_test.go"], cwd=d, env=go_env(str(gocache), d), timeout=900
            )
        if res.returncode != 0:
            raise ToolchainMissing(f"go cannot build a testify test offline: {res.stderr.strip()[-800:]}")
        stamp.write_text("ok\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m aigc_code.eval.toolchains [--prepare] [LANG...]``: show / prepare toolchains."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--prepare", action="store_true", help="build Rust crates and warm the Go cache")
    ap.add_argument("languages", nargs="*", default=["python", "cpp", "java", "javascript", "go", "rust"])
    args = ap.parse_args(argv)
    bad = 0
    for lang in args.languages:
        tc = (prepare if args.prepare else detect)(lang, log=print)
        state = f"missing {tc.missing}" if tc.missing else "ok"
        extra = "; ".join(f"no {v}" for v in tc.extras_missing.values())
        print(f"{lang:11s} {state}{' (' + extra + ')' if extra else ''}")
        bad += bool(tc.missing)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
