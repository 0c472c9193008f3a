"""Which files of a workspace folder are indexed: discovery, ignore rules, safety checks.

A git work tree is listed with `git ls-files --cached --others --exclude-standard` (read-only:
`GIT_OPTIONAL_LOCKS=0`, nothing is written); any other folder is walked breadth-first, honouring
`.gitignore` files and skipping hidden folders, dependency folders and build outputs. Every path is
resolved (symlinks followed) and kept only when it stays inside the workspace folder. Each file
that is not indexed is counted under a reason, so a report can say what was skipped and why.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aigc_code.languages import language_for_path

log = logging.getLogger("aigc_code.workspace")

# Dependencies and environments: skipped even when git tracks them (vendored code is big and not the user's).
DEPENDENCY_DIRS = frozenset(
    {"node_modules", "vendor", "third_party", "bower_components", "site-packages", "venv", "__pycache__"}
)
# Build outputs: skipped when walking a folder; a git repository that tracks one means it (e.g. src/build/).
BUILD_DIRS = frozenset({"build", "dist", "out", "target", "coverage"})
SKIP_DIRS = DEPENDENCY_DIRS | BUILD_DIRS
GIT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class IndexLimits:
    """Caps that keep an index of any folder (a home directory, a million files) bounded.

    Defaults fit a 5,000-file repository in about 200 MB of memory (see docs/workspace-index.md).
    """

    max_file_bytes: int = 1_000_000
    max_files: int = 20_000
    max_total_bytes: int = 60_000_000  # source bytes kept; the process grows by about 3x that (measured)
    max_scanned: int = 300_000  # directory entries / listed paths looked at before discovery stops
    max_seconds: float = 120.0  # wall-clock cap of one build

    @classmethod
    def from_settings(cls, settings) -> IndexLimits:
        """The caps an `aigc_code.settings.Settings` asks for (indexMaxFiles, indexMaxFileKb, indexMaxTotalMb)."""
        return cls(
            max_file_bytes=settings.index_max_file_kb * 1024,
            max_files=settings.index_max_files,
            max_total_bytes=settings.index_max_total_mb * 1024 * 1024,
        )


@dataclass
class Skips:
    """Counts of files not indexed, by reason (plus a few example paths per reason for the log)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: str | Path = "") -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if path and len(shown) < 3:
            shown.append(str(path))

    def log_summary(self, root: str | Path = "") -> None:
        for reason, count in sorted(self.counts.items()):
            log.info("workspace %s: skipped %d file(s): %s (e.g. %s)", root, count, reason, self.examples.get(reason))


def resolve_root(root: str | Path) -> Path | None:
    """The real absolute path of a workspace folder, or None when it is not an existing folder."""
    try:
        path = Path(root).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return path if path.is_dir() else None


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def path_in_roots(path: Path, roots) -> str | None:
    """`path` relative to the first of `roots` that holds it, with `/` separators (what the model is
    shown for a workspace file, wherever the workspace lives on disk); None when no root holds it."""
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


def safe_resolve(path: Path, root: Path) -> tuple[Path | None, str]:
    """(real path, "") when `path` resolves to a regular file inside `root`, else (None, reason)."""
    try:
        real = path.resolve(strict=True)
    except RuntimeError:
        return None, "symlink-loop"
    except OSError as exc:
        return None, "symlink-loop" if exc.errno == 40 else "vanished"
    if not inside(real, root):
        return None, "outside-workspace"
    try:
        if not real.is_file():
            return None, "not-a-file"
    except OSError:
        return None, "unreadable"
    return real, ""


def skipped_dir(name: str, tracked: bool = False) -> bool:
    """Whether a folder of this name is not indexed (`tracked`: it is listed by git)."""
    if name.startswith(".") or name.endswith(".egg-info") or name in DEPENDENCY_DIRS:
        return True
    return not tracked and name in BUILD_DIRS


def path_reason(rel: str, tracked: bool = False) -> str:
    """Why a listed path (relative, '/'-separated) is not indexed by name alone ("" if it may be)."""
    parts = rel.split("/")
    if any(skipped_dir(part, tracked) for part in parts[:-1]):
        return "skipped-dir"
    if language_for_path(parts[-1]) is None:
        return "not-source"
    return ""


# ---------------------------------------------------------------------------------------- .gitignore


def _glob_regex(glob: str) -> str:
    """Regex text for one gitignore glob (`*`, `**`, `?`, `[...]`), matching a '/'-separated path."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out.append(r"\[")
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern
    negated: bool
    dir_only: bool


def parse_gitignore(text: str) -> list[IgnoreRule]:
    """The rules of one .gitignore file (common syntax: comments, `!`, trailing and leading `/`, globs)."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:] if negated else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _glob_regex(line.lstrip("/"))
        pattern = ("" if anchored else "(?:.*/)?") + body + "$"
        try:
            rules.append(IgnoreRule(re.compile(pattern), negated, dir_only))
        except re.error:
            continue
    return rules


def ignored(rules_stack: list[tuple[str, list[IgnoreRule]]], rel: str, is_dir: bool) -> bool:
    """Whether `rel` (relative to the root) is ignored by the .gitignore files above it; last match wins."""
    verdict = False
    for base, rules in rules_stack:
        if base and not rel.startswith(base + "/"):
            continue
        sub = rel[len(base) + 1 :] if base else rel
        for rule in rules:
            if (is_dir or not rule.dir_only) and rule.regex.match(sub):
                verdict = not rule.negated
    return verdict


# ---------------------------------------------------------------------------------------- listing


def git_files(root: Path, limits: IndexLimits, skips: Skips, cancel: threading.Event | None) -> Iterator[str] | None:
    """Relative paths from `git ls-files`, or None when `root` is not inside a git work tree."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0")
    try:
        probe = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0 or probe.stdout.strip() != "true":
        return None
    return _stream_git(root, env, limits, skips, cancel)


def _stream_git(root: Path, env: dict, limits: IndexLimits, skips: Skips, cancel) -> Iterator[str]:
    cmd = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    seen, pending = 0, b""
    try:
        while chunk := proc.stdout.read(65536):
            pending += chunk
            *names, pending = pending.split(b"\0")
            for name in names:
                seen += 1
                if _stop_scan(seen, limits, skips, cancel):
                    return
                yield os.fsdecode(name)
    finally:
        proc.kill()
        proc.wait()


def _stop_scan(seen: int, limits: IndexLimits, skips: Skips, cancel: threading.Event | None) -> bool:
    """Whether a listing stops here: over the scan limit (recorded as a skip) or cancelled."""
    if seen > limits.max_scanned:
        skips.add("scan-limit")
        return True
    return cancel is not None and cancel.is_set()


def walk_files(root: Path, limits: IndexLimits, skips: Skips, cancel: threading.Event | None) -> Iterator[str]:
    """Relative paths of files under `root`, breadth-first, honouring .gitignore files; never follows
    directory symlinks (file symlinks are resolved and checked by the caller)."""
    queue: list[tuple[str, list[tuple[str, list[IgnoreRule]]]]] = [("", [])]
    seen = 0
    while queue:
        rel_dir, stack = queue.pop(0)
        directory = root / rel_dir if rel_dir else root
        stack = stack + _dir_rules(directory, rel_dir)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            skips.add("unreadable-dir", directory)
            log.debug("cannot list %s: %s", directory, exc)
            continue
        for entry in entries:
            seen += 1
            if _stop_scan(seen, limits, skips, cancel):
                return
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            kind = _entry_kind(entry)
            if kind == "dir":
                if skipped_dir(entry.name) or ignored(stack, rel, True):
                    skips.add("skipped-dir", rel)
                else:
                    queue.append((rel, stack))
            elif kind == "other":
                skips.add("not-a-file", rel)
            elif not ignored(stack, rel, False):
                yield rel


def _entry_kind(entry: os.DirEntry) -> str:
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=True) or entry.is_symlink() else "other"
    except OSError:
        return "file"  # let the caller classify it (vanished, loop, unreadable)


def _dir_rules(directory: Path, rel_dir: str) -> list[tuple[str, list[IgnoreRule]]]:
    try:
        text = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rules = parse_gitignore(text)
    return [(rel_dir, rules)] if rules else []


def list_candidates(
    root: Path, limits: IndexLimits, skips: Skips, cancel: threading.Event | None = None
) -> Iterator[tuple[Path, str]]:
    """(real path, language) of every source file under `root` that passes the name and path checks."""
    listing = git_files(root, limits, skips, cancel)
    listed = 0
    if listing is not None:
        for real, language in _checked(root, listing, skips, tracked=True):
            listed += 1
            yield real, language
    if listing is None or listed == 0:  # not a work tree, or a folder git ignores (e.g. inside ~/.pyenv)
        yield from _checked(root, walk_files(root, limits, skips, cancel), skips)


def _checked(root: Path, listing: Iterator[str], skips: Skips, tracked: bool = False) -> Iterator[tuple[Path, str]]:
    for rel in listing:
        reason = path_reason(rel, tracked)
        if reason:
            skips.add(reason, rel)
            continue
        real, reason = safe_resolve(root / rel, root)
        if real is None:
            skips.add(reason, rel)
            continue
        language = language_for_path(real)
        if language is None:
            skips.add("not-source", rel)
            continue
        yield real, language
