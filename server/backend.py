"""The server's current backend: built from the settings, rebuilt when the settings that
name the model or endpoint change, and the load error kept (not retried) until they do.

A remote backend is "loaded" as soon as its client is built; whether its endpoint answers is
asked live (`BackendHolder.health`) so that `aigcCode/status` never says ready while it is down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from aigc_code.backends import Backend, make_backend
from aigc_code.errors import AigcCodeError, BackendError

from .settings import Settings

log = logging.getLogger("aigc_code.server")


def backend_from_settings(settings: Settings) -> Backend:
    return make_backend(
        settings.backend,
        model=settings.model,
        adapter=settings.adapter,
        endpoint=settings.endpoint,
        device=settings.device,
        fim_format=settings.fim_format,
        api_key=settings.api_key,
        timeout_s=settings.request_timeout_s,
        max_context=settings.max_context,
        threads=settings.threads,
        quantize=settings.quantize,
    )


class BackendHolder:
    def __init__(self, factory: Callable[[Settings], Backend] = backend_from_settings):
        self._factory = factory
        self._lock = threading.Lock()
        self._spec: tuple | None = None
        self._backend: Backend | None = None
        self._error: AigcCodeError | None = None
        self.load_ms = 0.0

    def ensure(self, settings: Settings) -> tuple[bool, str]:
        """Load the backend `settings` name unless it is loaded (or failed) already.

        Returns (ok, one-line description or error message). Blocking: call it from a worker.
        """
        spec = settings.backend_spec()
        with self._lock:
            if spec != self._spec:
                old, self._backend, self._error = self._backend, None, None
                self._spec = spec
                if old is not None:
                    try:
                        old.close()
                    except Exception:  # pragma: no cover - best effort
                        log.exception("closing the previous backend failed")
                start = time.perf_counter()
                try:
                    self._backend = self._factory(settings)
                except AigcCodeError as exc:
                    self._error = exc
                except Exception as exc:  # an unexpected failure still must not kill the server
                    log.exception("loading the backend failed")
                    self._error = BackendError(
                        f"loading the {settings.backend} backend failed: {type(exc).__name__}: {exc}"
                    )
                self.load_ms = (time.perf_counter() - start) * 1000
            if self._error is not None:
                return False, str(self._error)
            assert self._backend is not None
            return True, self._backend.describe()

    def get(self, settings: Settings) -> Backend:
        """The loaded backend; raises the load error (an `AigcCodeError`) if it failed."""
        self.ensure(settings)
        if self._error is not None:
            raise self._error
        assert self._backend is not None
        return self._backend

    def health(self, status: str) -> tuple[bool, str]:
        """(ready, status line) now: `status` (the load result) unless the loaded backend can be
        asked whether its endpoint answers, and it does not. Blocking (an HTTP call): run it off the loop."""
        backend = self._backend
        if backend is None or self._error is not None:
            return False, status
        check = getattr(backend, "health", None)
        if check is None:
            return True, status
        try:
            ok, message = check()
        except Exception as exc:  # a health probe must never break the status request
            ok, message = False, f"{type(exc).__name__}: {exc}"
        return (True, status) if ok else (False, f"error: {message}")

    def notices(self) -> list[str]:
        """One-time warnings the loaded backend has not handed over yet (drained)."""
        backend = self._backend
        pending = getattr(backend, "pending_warnings", None)
        if not pending:
            return []
        out = list(pending)
        pending.clear()
        return out

    @property
    def current(self) -> Backend | None:
        return self._backend

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
            self._backend = None
            self._spec = None
