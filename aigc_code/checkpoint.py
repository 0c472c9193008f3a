"""Atomic, resumable training checkpoints (shared by pretrain and finetune).

A checkpoint is a directory. It is written next to its final place as `NAME.tmp`, flushed to
disk, then swapped in with renames, so a run killed at any moment leaves either the previous
good checkpoint or the new one, never a half-written one. The previous checkpoint is kept as
`NAME.old`. A manifest of file sizes (the `COMPLETE` marker) detects a checkpoint damaged
afterwards (a truncated copy, a full disk): it is refused with an error naming the good one.
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
    manifest = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / "COMPLETE").write_text(json.dumps(manifest, indent=1))
    _fsync_tree(tmp)
    if (target / "COMPLETE").exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    else:
        shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def problem(ckpt: Path) -> str:
    """Why `ckpt` cannot be resumed from ("" if it is intact)."""
    try:
        manifest = json.loads((ckpt / "COMPLETE").read_text())
    except (OSError, json.JSONDecodeError):
        return "it is incomplete (no valid COMPLETE manifest)"
    for name, size in manifest.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is truncated or damaged ({path.stat().st_size} of {size} bytes)"
    return ""


def latest(target: Path) -> Path | None:
    """The newest checkpoint directory, checked against its manifest; None when there is none.

    A damaged newest checkpoint is an error (not a silent fallback): the message names the
    previous intact checkpoint, which is left untouched, and how to use it.
    """
    old = target.with_name(target.name + ".old")
    if not target.exists():
        if old.exists() and not problem(old):
            return old  # killed between the two renames of a swap
        return None
    reason = problem(target)
    if not reason:
        return target
    hint = (
        f"the previous checkpoint {old} is intact: move it to {target} to resume from it"
        if old.exists() and not problem(old)
        else "no intact previous checkpoint exists; start without --resume"
    )
    raise CheckpointError(f"checkpoint {target} cannot be resumed: {reason}; {hint}")


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
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            f"delete it or resume from an earlier checkpoint"
        ) from exc
