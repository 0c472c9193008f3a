"""The LSP side of the workspace index: which folders, when to build it, and how editor events
keep it current. The index itself (`aigc_code.workspace`) is plain library code.

Built in a background thread after `initialized` from `workspaceFolders` / `rootUri`; completions
are answered while it builds (with what it holds so far). Open buffers replace their file's disk
text (`didOpen`/`didChange`); `didSave`, `didClose` and `workspace/didChangeWatchedFiles` re-read
the disk. Nothing is ever written into the workspace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from lsprotocol import types

from aigc_code.languages import LANGUAGES
from aigc_code.settings import Settings

from .documents import uri_to_path

log = logging.getLogger("aigc_code.server")

WATCHER_ID = "aigc-code-workspace-files"
QUIET_S = 0.5  # seconds without an edit before open buffers are re-indexed
# every extension the index takes (aigc_code.languages), for the client's file watcher
_EXTENSIONS = ",".join(sorted({ext.lstrip(".") for lang in LANGUAGES.values() for ext in lang.extensions}))


def local_path(uri: str) -> str | None:
    """Filesystem path of a `file:` URI, else None (untitled buffers, other schemes)."""
    return uri_to_path(uri) if uri.startswith("file:") else None


def watcher_registration() -> types.RegistrationParams:
    watcher = types.FileSystemWatcher(glob_pattern=f"**/*.{{{_EXTENSIONS}}}")
    options = types.DidChangeWatchedFilesRegistrationOptions(watchers=[watcher])
    return types.RegistrationParams(
        registrations=[
            types.Registration(id=WATCHER_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES, register_options=options)
        ]
    )


def client_can_watch(capabilities: types.ClientCapabilities | None) -> bool:
    workspace = capabilities.workspace if capabilities is not None else None
    watched = workspace.did_change_watched_files if workspace is not None else None
    return bool(watched is not None and watched.dynamic_registration)


class WorkspaceWatch:
    """Owns the server's `WorkspaceIndex` (None until started, or when the setting is off)."""

    def __init__(self) -> None:
        self.index = None
        self.report: dict | None = None
        self.status = "off"
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._quiet: asyncio.TimerHandle | None = None

    def start(self, root_uris: list[str], settings: Settings, on_done=None) -> None:
        roots = list(dict.fromkeys(p for p in (local_path(u) for u in root_uris) if p and Path(p).is_dir()))
        if not settings.workspace_index or not roots:
            self.status = "off" if not settings.workspace_index else "no workspace folder"
            return
        from aigc_code.workspace import IndexLimits, WorkspaceIndex

        self.index = WorkspaceIndex(roots, IndexLimits.from_settings(settings))
        self.status = "indexing"
        self._thread = threading.Thread(target=self._build, args=(on_done,), name="aigc-index", daemon=True)
        self._thread.start()

    def _build(self, on_done) -> None:
        start = time.perf_counter()
        try:
            self.report = self.index.build(cancel=self._cancel)
        except Exception as exc:  # a workspace that vanished, permissions: the server carries on without it
            log.exception("workspace index failed")
            self.status = f"error: {exc}"
            return
        files = self.report.get("files", 0) if isinstance(self.report, dict) else 0
        self.status = f"ready: {files} files in {time.perf_counter() - start:.1f} s"
        if on_done is not None:
            on_done(self.report)

    def stop(self) -> None:
        self._cancel.set()

    # -- editor events --------------------------------------------------------------------------
    def buffer(self, uri: str, text: str) -> None:
        """A buffer's new text (on the event loop): indexed when typing pauses for QUIET_S, or before a
        lookup from another file; not on every keystroke."""
        if self.index is None:
            return
        path = local_path(uri)
        if path is None:
            return
        self.index.buffer(path, text)
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = asyncio.get_running_loop().call_later(QUIET_S, self._flush_in_background)

    def _flush_in_background(self) -> None:
        future = asyncio.get_running_loop().run_in_executor(None, self.index.flush)
        future.add_done_callback(_log_flush_failure)

    def disk(self, uri: str) -> None:
        path = local_path(uri)
        if self.index is not None and path is not None:
            self.index.update(path)

    def watched(self, changes: list[types.FileEvent]) -> None:
        if self.index is None:
            return
        for change in changes:
            path = local_path(change.uri)
            if path is None:
                continue
            if change.type == types.FileChangeType.Deleted:
                self.index.remove(path)
            else:
                self.index.update(path)

    def public(self) -> dict:
        out = {"status": self.status}
        if self.report:
            out.update({k: v for k, v in self.report.items() if k in ("files", "skipped", "seconds", "bytes")})
        return out


def _log_flush_failure(future: asyncio.Future) -> None:
    """A failed re-index of open buffers is logged (the server and the index carry on)."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("re-indexing open buffers failed: %s", future.exception())
