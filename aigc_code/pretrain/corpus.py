"""Build the multi-language pretraining corpus from code that exists offline on a Debian machine.

Sources (all reachable without a model/data-set download):
  python      CPython's standard library (tests excluded)
  javascript  npm packages installed into a scratch folder
  typescript  the same npm packages (.ts / .d.ts files)
  c / cpp     /usr/include (C headers, libstdc++ and Boost headers)
  go          the Go standard library (Debian golang-go) and /usr/share/gocode
  rust        crates from Debian librust-*-dev in /usr/share/cargo/registry
  java        the JDK's own sources (Debian openjdk-17-source, src.zip)

Files are filtered (binary, minified, generated, huge), deduplicated (exact and near), capped per
language and split into train/validation by a hash of their path, so the split is deterministic.
Output: DIR/train.jsonl, DIR/val.jsonl ({"lang", "path", "text"} a line) and DIR/stats.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import track

from aigc_code.languages import language_for_path
from aigc_code.sourcefiles import Deduplicator, read_text

NPM_PACKAGES = [
    "lodash",
    "express",
    "axios",
    "vue",
    "rxjs",
    "zod",
    "commander",
    "yargs",
    "date-fns",
    "eslint",
    "mocha",
    "webpack",
    "typeorm",
    "@nestjs/core",
    "@types/node",
    "typescript",
    "prettier",
    "chalk",
    "immer",
    "redux",
    "mobx",
    "koa",
    "fastify",
    "jquery",
    "three",
    "d3",
    "preact",
    "hono",
]

# Packages that must never enter pretraining: the finetune and repository benchmarks use them as
# "unseen" code (a folder of this name, or a versioned one such as Debian's `itertools-0.10.5`).
HELD_OUT_PACKAGES = {
    "python": ("boltons", "more_itertools", "toolz"),
    "javascript": ("underscore",),
    "go": ("cobra",),
    "rust": ("itertools",),
}
_HELD_OUT_NAMES = {name for names in HELD_OUT_PACKAGES.values() for name in names}


def is_held_out(parts: tuple[str, ...]) -> bool:
    """True for a path inside a held-out package (`toolz/`, `itertools-0.10.5/`)."""
    for part in parts:
        name = part.rsplit("-", 1)[0] if "-" in part and part.rsplit("-", 1)[1][:1].isdigit() else part
        if name in _HELD_OUT_NAMES:
            return True
    return False


SKIP_DIRS = {
    "test",
    "tests",
    "testdata",
    "__pycache__",
    ".git",
    "node_modules",
    "dist-test",
    "idlelib",
    "fixtures",
    "examples",
    "benchmarks",
    "site-packages",
    "ensurepip",
    "build",
}


@dataclass
class Source:
    lang: str | None  # None: by extension
    root: Path
    extensions: tuple[str, ...] = ()
    skip_dirs: set[str] = field(default_factory=lambda: set(SKIP_DIRS))


def default_sources(scratch: Path) -> list[Source]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    go_roots = sorted(Path("/usr/lib").glob("go-*/src"))
    npm_root = scratch / "npm" / "node_modules"
    npm_skip = SKIP_DIRS - {"node_modules"} | {"min", "umd", "cjs", "esm5", "bundles"}
    return [
        Source("python", stdlib, (".py",)),
        Source(None, npm_root, (".js", ".mjs", ".ts", ".tsx"), npm_skip),
        Source("c", Path("/usr/include"), (".h",), SKIP_DIRS | {"c++", "boost"}),
        Source("cpp", Path("/usr/include/c++"), ("", ".h", ".tcc")),
        Source("cpp", Path("/usr/include/boost"), (".hpp",)),
        *[Source("go", r, (".go",)) for r in go_roots],
        Source("go", Path("/usr/share/gocode/src"), (".go",)),
        Source("rust", Path("/usr/share/cargo/registry"), (".rs",)),
        Source("java", scratch / "jdk-src", (".java",)),
    ]


def install_npm_packages(scratch: Path) -> None:
    target = scratch / "npm"
    if (target / "node_modules").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "init", "-y"], cwd=target, check=True, capture_output=True)
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", *NPM_PACKAGES]
    subprocess.run(cmd, cwd=target, check=True)


def extract_jdk_sources(scratch: Path, modules=("java.base", "java.net.http", "java.sql", "java.logging")) -> None:
    target = scratch / "jdk-src"
    zips = sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"))
    if target.exists() or not zips:
        return
    with zipfile.ZipFile(zips[0]) as z:
        for name in z.namelist():
            if name.endswith(".java") and name.split("/")[0] in modules:
                z.extract(name, target)


def iter_files(source: Source):
    if not source.root.exists():
        return
    for path in sorted(source.root.rglob("*")):
        rel_parts = path.relative_to(source.root).parts
        if any(p in source.skip_dirs or p.startswith(".") for p in rel_parts[:-1]):
            continue
        if is_held_out(rel_parts[:-1]):
            continue
        if path.suffix not in source.extensions or not path.is_file():
            continue
        if path.name.endswith((".min.js", ".bundle.js")) or "test" in path.name.lower():
            continue
        lang = source.lang or language_for_path(path)
        if lang == "typescriptreact":
            lang = "typescript"
        if lang:
            yield lang, path


def is_validation(path: str, fraction: float) -> bool:
    digest = hashlib.sha1(path.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def build_corpus(out: Path, scratch: Path, max_chars_per_language: int = 8_000_000, val_fraction: float = 0.03) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    install_npm_packages(scratch)
    extract_jdk_sources(scratch)
    dedup = Deduplicator()
    chars: Counter = Counter()
    files: Counter = Counter()
    rejected: dict[str, Counter] = defaultdict(Counter)
    with open(out / "train.jsonl", "w") as train, open(out / "val.jsonl", "w") as val:
        for source in default_sources(scratch):
            candidates = list(iter_files(source))
            for lang, path in track(candidates, description=f"{source.root}"[:60]):
                if chars[lang] >= max_chars_per_language:
                    break
                text, reason = read_text(path)
                reason = reason or dedup.check_and_add(text)
                if reason:
                    rejected[lang][reason] += 1
                    continue
                record = {"lang": lang, "path": str(path), "text": text}
                split = val if is_validation(str(path), val_fraction) else train
                split.write(json.dumps(record) + "\n")
                chars[lang] += len(text)
                files[lang] += 1
    expected = {source.lang for source in default_sources(scratch)} - {None} | {"javascript", "typescript"}
    stats = {
        "missing_languages": sorted(expected - set(files)),
        "chars": dict(chars),
        "files": dict(files),
        "rejected": {k: dict(v) for k, v in rejected.items()},
        "val_fraction": val_fraction,
        "max_chars_per_language": max_chars_per_language,
        "npm_packages": NPM_PACKAGES,
        "held_out_packages": {k: list(v) for k, v in HELD_OUT_PACKAGES.items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def load_split(corpus: Path, split: str) -> list[dict]:
    path = corpus / f"{split}.jsonl"
    if not path.exists():
        sys.exit(f"error: {path} not found; build the corpus first with `aigc-code pretrain corpus --out {corpus}`")
    with open(path) as f:
        return [json.loads(line) for line in f]
