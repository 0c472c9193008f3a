"""Atomic, resumable training checkpoints (shared by pretrain and finetune).

A checkpoint is a directory. It is written next to its final place as `NAME.tmp`, flushed to
disk, then swapped in with renames, so a run killed at any moment leaves either the previous
good checkpoint or the new one, never a half-written one. `NAME.old` is kept until the swap
is complete and is used if the newest checkpoint turns out to be unreadable.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from aigc_code.errors import CheckpointError


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_dir)` and atomically install tmp_dir as `target`."""
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / "COMPLETE").write_text("ok\n")
    _fsync_tree(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def latest(target: Path) -> Path | None:
    """The newest complete checkpoint directory (`target`, else `target.old`), or None."""
    for candidate in (target, target.with_name(target.name + ".old")):
        if (candidate / "COMPLETE").exists():
            return candidate
    if target.exists():
        raise CheckpointError(f"checkpoint {target} is incomplete (no COMPLETE marker) and no previous one exists")
    return None


def read_state(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt} has an unreadable state.json: {exc}") from exc


def load_torch(path: Path):
    """torch.load with a clear error for a truncated or corrupt file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                              f"delete it or resume from an earlier checkpoint") from exc
