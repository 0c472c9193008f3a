"""A repository's source files, filtered and split for finetuning.

Files come from `git ls-files` in a git checkout (tracked plus untracked-but-not-ignored, so
.gitignore is respected), else from a directory walk that skips VCS, build, dependency and
vendored folders. A file is used when its extension is one of the supported languages and it
passes the shared filters (`sourcefiles.read_text`: binary, minified, generated, huge), holds no
credential (`secrets.scan`) and is not an exact or near duplicate of a file already taken. The
train/validation split is by file: the files with the smallest seeded hashes of their paths are
held out, so the split does not depend on listing order or on the machine.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aigc_code.errors import AigcCodeError
from aigc_code.finetune import secrets
from aigc_code.languages import language_for_path
from aigc_code.sourcefiles import Deduplicator, read_text

SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".bzr",
    "CVS",
    "_darcs",
    "node_modules",
    "bower_components",
    "jspm_packages",
    "vendor",
    "vendors",
    "third_party",
    "third-party",
    "thirdparty",
    "Pods",
    "Carthage",
    "build",
    "dist",
    "out",
    "target",
    "_build",
    "cmake-build-debug",
    "cmake-build-release",
    ".next",
    ".nuxt",
    ".svelte-kit",
    ".gradle",
    ".idea",
    ".vscode",
    ".cache",
    "coverage",
    "htmlcov",
    "__pycache__",
    ".venv",
    "venv",
    ".env",
    ".tox",
    ".nox",
    ".eggs",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "site-packages",
}


class DataError(AigcCodeError):
    """The repository gives nothing (or too little) to finetune on."""


@dataclass
class SourceFile:
    path: str  # relative to the repository, with forward slashes
    language: str
    text: str


@dataclass
class RepoData:
    root: Path
    source: str  # "git" or "walk"
    train: list[SourceFile]
    val: list[SourceFile]
    excluded: Counter = field(default_factory=Counter)  # reason -> number of files
    secrets: list[dict] = field(default_factory=list)  # {"path", "rules": [{"rule", "line"}]}
    languages: Counter = field(default_factory=Counter)

    def fingerprint(self) -> str:
        """Changes when the file list, the split or any file's content changes."""
        h = hashlib.sha1()
        for split, files in (("train", self.train), ("val", self.val)):
            for f in files:
                h.update(f"{split}\0{f.path}\0".encode())
                h.update(hashlib.sha1(f.text.encode()).digest())
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            "repo": str(self.root),
            "file_source": self.source,
            "train_files": len(self.train),
            "val_files": len(self.val),
            "train_chars": sum(len(f.text) for f in self.train),
            "val_chars": sum(len(f.text) for f in self.val),
            "languages": dict(sorted(self.languages.items())),
            "excluded": dict(sorted(self.excluded.items())),
            "secrets": self.secrets,
            "val_paths": [f.path for f in self.val],
        }


def _skipped_dir(rel: Path) -> bool:
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1])


def git_files(root: Path) -> list[str] | None:
    """Paths (relative to `root`) that git knows and does not ignore, or None if not a git checkout."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    paths = {p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p}
    return sorted(paths)


def walk_files(root: Path) -> list[str]:
    out = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry)
            elif entry.is_file():
                out.append(entry.relative_to(root).as_posix())
    return sorted(out)


def split_key(path: str, seed: int) -> bytes:
    """Files with the smallest keys are held out: a seeded, order-independent draw by path."""
    return hashlib.sha1(f"{seed}:{path}".encode()).digest()


def collect(repo: Path, seed: int = 0, val_fraction: float = 0.1, max_files: int | None = None) -> RepoData:
    """Read, filter, deduplicate and split the source files of `repo`."""
    root = Path(repo).expanduser()
    if not root.is_dir():
        raise DataError(f"repository {root} is not a directory; pass a folder or a git checkout")
    listed = git_files(root)
    source = "git"
    if not listed:  # not a git checkout, or a folder the enclosing checkout ignores
        listed, source = walk_files(root), "walk"
    data = RepoData(root=root.resolve(), source=source, train=[], val=[])
    dedup = Deduplicator()
    kept: list[SourceFile] = []
    for rel in listed:
        file = _admit(root, rel, data, dedup)
        if file is not None:
            kept.append(file)
            if max_files is not None and len(kept) >= max_files:
                break
    if len(kept) < 2:
        raise DataError(
            f"{root} has {len(kept)} usable source file(s) after filtering "
            f"({_excluded_text(data.excluded)}); finetuning needs at least 2 "
            f"(one to train on, one to validate on)"
        )
    n_val = min(len(kept) - 1, max(1, round(val_fraction * len(kept))))
    val = sorted(kept, key=lambda f: split_key(f.path, seed))[:n_val]
    val_paths = {f.path for f in val}
    data.train = [f for f in kept if f.path not in val_paths]
    data.val = [f for f in kept if f.path in val_paths]
    data.languages.update(f.language for f in kept)
    return data


def _admit(root: Path, rel: str, data: RepoData, dedup: Deduplicator) -> SourceFile | None:
    """The file as a training candidate, or None (the reason counted in `data.excluded`)."""
    path = root / rel
    language = language_for_path(rel)
    reason = None
    if language is None:
        reason = "not a supported language"
    elif _skipped_dir(Path(rel)):
        reason = "vendored or build folder"
    elif path.is_symlink() or not path.is_file():
        reason = "not a regular file"
    if reason:
        data.excluded[reason] += 1
        return None
    text, reason = read_text(path)
    if text is None:
        data.excluded[reason.split(":")[0]] += 1
        return None
    findings = secrets.scan(text)
    if findings:
        data.excluded["secret"] += 1
        data.secrets.append({"path": rel, "rules": [f.to_json() for f in findings]})
        return None
    reason = dedup.check_and_add(text)
    if reason:
        data.excluded[reason] += 1
        return None
    return SourceFile(rel, language, text)


def _excluded_text(excluded: Counter) -> str:
    if not excluded:
        return "none excluded"
    return ", ".join(f"{n} {reason}" for reason, n in excluded.most_common())
