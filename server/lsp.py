"""The language server: thin LSP handlers over `DocumentStore` and `CompletionPipeline`.

Requests
  textDocument/inlineCompletion  (LSP 3.18) the suggestion(s), best first
  textDocument/completion        fallback: one item carrying the best suggestion as a textEdit
  aigcCode/lastTiming            timings of the last completion (model time vs. server time)
  aigcCode/status                backend, settings, open documents, cache counters
Notifications
  textDocument/didOpen|didChange|didClose (incremental sync), workspace/didChangeConfiguration,
  $/cancelRequest (stops the generation), shutdown/exit.

Generation runs in one worker thread, so the server keeps reading messages (and cancellations)
while the model runs. A completion request is checked on the event loop (document, position)
and then run, rendered and answered by the worker itself (answer.py): no hop back to the loop.
The messages of every keystroke are read without cattrs (keystroke.py). Every failure inside a
handler becomes an error response or a `window/logMessage`; none ends the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsprotocol import types
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.exceptions import (
    FeatureNotificationError,
    FeatureRequestError,
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidParams,
)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from aigc_code import __version__
from aigc_code.backends import CancellationToken
from aigc_code.cache import SuggestionCache
from aigc_code.errors import AigcCodeError
from aigc_code.pipeline import CompletionOutcome, CompletionPipeline, CompletionRequest, Timing

from . import answer
from .answer import FrameWriter, Pending
from .backend import BackendHolder
from .documents import UTF16, DocumentStore, PositionError, UnknownDocument, display_path
from .keystroke import read_keystroke_message
from .settings import SECTION, Settings, merge, section
from .transport import MAX_HEADER_LINE, error_message, run_framed, serve_stdin
from .workspace import WorkspaceWatch, client_can_watch, local_path, watcher_registration

log = logging.getLogger("aigc_code.server")

LAST_TIMING = "aigcCode/lastTiming"
STATUS = "aigcCode/status"
UNAUTHORIZED = -32001
MAX_CONTEXT_DOCUMENTS = 10
# Documents are tracked by our DocumentStore (incremental tree-sitter parses), not by pygls' workspace.
# Document sync arrives on every keystroke and its handlers are plain functions: they are called
# directly (never reaching pygls' built-in sync handlers), without pygls' handler machinery (a forwarding generator, a uuid and two Futures for each:
# ~0.1 ms a keystroke, on the path of the request that follows it).
DOCUMENT_SYNC = frozenset({types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE, types.TEXT_DOCUMENT_DID_CLOSE})
# Completion requests: checked on the loop, then run, rendered and answered by the worker (answer.py).
ANSWERED_BY_WORKER = frozenset({types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION})


class _Malformed:
    """A message whose params did not match the method's schema: requests get -32602."""

    jsonrpc = "2.0"

    def __init__(self, msg_id: Any, method: str, detail: str):
        self.id = msg_id
        self.method = method
        self.detail = detail


class AigcProtocol(LanguageServerProtocol):
    """pygls' protocol, plus: malformed requests get an error response (pygls only logs them),
    a shared token gates TCP clients, and documents live only in our `DocumentStore`."""

    _server: AigcServer
    _handed_to_pygls = 0  # messages given to pygls whose handler task may not have started yet

    def structure_message(self, data: dict[str, Any]):
        keystroke = read_keystroke_message(data)  # didChange and completion requests: no cattrs
        if keystroke is not None:
            return keystroke
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and isinstance(data.get("method"), str)):
                raise
            cause = exc.__cause__
            detail = str(cause) if cause is not None else exc.message
            try:
                import cattrs

                if isinstance(cause, cattrs.ClassValidationError):
                    detail = "; ".join(cattrs.transform_error(cause))
            except Exception:  # pragma: no cover - message formatting only
                pass
            return _Malformed(data.get("id"), data["method"], detail)

    def handle_message(self, message):
        if isinstance(message, _Malformed):
            if message.id is None:  # a notification: nobody to answer, tell the log
                self._server.log_to_client(
                    logging.WARNING, f"malformed {message.method} notification ignored: {message.detail}"
                )
                return
            log.warning("malformed %s request %r: %s", message.method, message.id, message.detail)
            error = JsonRpcInvalidParams(f"invalid params for {message.method}: {message.detail}")
            self._send_response(message.id, None, error.to_response_error())
            return
        method = getattr(message, "method", None)
        if not self._server.authorized and method not in (types.INITIALIZE, types.EXIT, None):
            if hasattr(message, "id") and method is not None:
                error = JsonRpcException(
                    "not authorized: send the server's token in initializationOptions.aigcCode.token", code=UNAUTHORIZED
                )
                self._send_response(message.id, None, error.to_response_error())
            return
        ours = method is not None and not self._shutdown and message.jsonrpc == "2.0"
        if ours and method in ANSWERED_BY_WORKER and hasattr(message, "id"):
            self._answer_in_order(message.id, method, message.params)
        elif ours and method in DOCUMENT_SYNC and not hasattr(message, "id"):
            self._notify_directly(method, message.params)
        else:
            self._hand_to_pygls(message, method)

    def _hand_to_pygls(self, message, method: str | None) -> None:
        if method is None or self._shutdown or message.jsonrpc != "2.0":
            super().handle_message(message)  # responses, and pygls' own refusals
        elif hasattr(message, "id"):
            # what pygls does, without its runtime-Protocol isinstance checks (~40 us each, two a message)
            contextvars.copy_context().run(self._handle_request, message.id, method, message.params)
        else:
            contextvars.copy_context().run(self._handle_notification, method, message.params)
        # an async handler's task (didChangeConfiguration) runs its first step on the next loop turn
        self._handed_to_pygls += 1
        asyncio.get_running_loop().call_soon(self._pygls_turn_done)

    def _pygls_turn_done(self) -> None:
        self._handed_to_pygls -= 1

    def _answer_in_order(self, msg_id: Any, method: str, params) -> None:
        """A completion request is answered after the handler tasks already scheduled (settings
        pushed just before it apply first), as pygls' own request tasks would be; with none
        scheduled, at once (a loop turn costs ~0.05 ms on every keystroke)."""
        if self._handed_to_pygls:
            asyncio.get_running_loop().call_soon(self._server.answer_in_worker, msg_id, method, params)
        else:
            self._server.answer_in_worker(msg_id, method, params)

    def _notify_directly(self, method: str, params) -> None:
        handler = self.fm.features.get(method)
        if handler is None:
            return
        try:
            handler(params)
        except Exception as error:  # as pygls reports a failed notification handler
            log.exception("failed to handle %s", method)
            self._server._report_server_error(error, FeatureNotificationError)

    def _handle_cancel_notification(self, msg_id) -> None:
        pending = self._server.pending.pop(msg_id, None)
        if pending is None:
            super()._handle_cancel_notification(msg_id)
        else:  # answered now, as pygls answers a cancelled handler; the worker stops at its next token
            pending.cancel()
            self._server.reply(pending, answer.cancelled_response(msg_id))

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        """End this client's session without `sys.exit` (pygls' way logs a SystemExit traceback, and
        would end a TCP server that should wait for the next client)."""
        if (handler := self.fm.features.get(types.EXIT)) is not None:
            yield handler, args, None
        self._server.exit_code = 0 if self._shutdown else 1
        self._server._stop_event.set()
        if self.writer is not None:
            res = self.writer.close()
            if asyncio.iscoroutine(res):
                asyncio.ensure_future(res)


class AigcServer(LanguageServer):
    def __init__(self, settings: Settings | None = None, token: str | None = None, holder: BackendHolder | None = None):
        super().__init__(
            "aigc-code",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=AigcProtocol,
            max_workers=2,
        )
        self.base_settings = settings or Settings()
        self.init_settings = self.base_settings
        self.settings = self.base_settings
        self.required_token = token
        self.authorized = token is None
        self.position_encoding = UTF16
        self.roots: list[str] = []
        self.documents = DocumentStore()
        self.backends = holder or BackendHolder()
        self.cache = SuggestionCache(self.settings.cache_size)
        self.pipeline = CompletionPipeline(self.backends.get, self.cache)
        self.repository = WorkspaceWatch()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigc-generate")
        self.inflight: dict[str, CancellationToken] = {}  # uri -> the running request's token
        self.pending: dict[Any, Pending] = {}  # request id -> a request the worker will answer
        self._inflight_lock = threading.Lock()
        self._last_timing: tuple[str, int, Timing] | None = None  # (uri, version, timing) of the last completion
        self.backend_status = "not loaded"
        self._reported: set[str] = set()  # backend errors already sent to the client's log
        self._pending_problems: list[str] = []  # settings problems found before `initialized`
        self._loop: asyncio.AbstractEventLoop | None = None
        self.exit_code: int | None = None  # set by the `exit` notification

    # -- transports: pygls' own, but with the hardened framing loop of transport.py ----------
    def start_io(self, stdin=None, stdout=None) -> None:
        self._stop_event = threading.Event()
        stdin, stdout = stdin or sys.stdin.buffer, stdout or sys.stdout.buffer
        self.protocol.set_writer(FrameWriter(stdout))

        async def serve() -> None:
            await serve_stdin(self._stop_event, stdin, stdout, self.thread_pool, self.protocol)

        try:
            asyncio.run(serve())
        except BrokenPipeError:
            log.error("the client closed the connection")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    # -- messages to the client ---------------------------------------------------------------
    def log_to_client(self, level: int, message: str) -> None:
        """Python log record + `window/logMessage` (from any thread)."""
        log.log(level, "%s", message)
        kind = (
            types.MessageType.Error
            if level >= logging.ERROR
            else types.MessageType.Warning
            if level >= logging.WARNING
            else types.MessageType.Info
            if level >= logging.INFO
            else types.MessageType.Log
        )
        params = types.LogMessageParams(type=kind, message=f"aigc-code: {message}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None or isinstance(self.protocol.writer, FrameWriter):
            # a stdio frame is written whole from any thread: in program order, so a message the
            # worker logs while answering a request arrives before its answer
            self.window_log_message(params)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self.window_log_message, params)

    def report_server_error(self, error: Exception, source) -> None:
        """pygls' out-of-band errors: log them (and tell the client) instead of a popup."""
        if source == FeatureRequestError:
            return  # already answered as an error response
        text = (
            f"a message body is not valid JSON ({error})"
            if isinstance(error, json.JSONDecodeError)
            else f"{source.__name__}: {error}"
        )
        try:
            self.log_to_client(logging.ERROR, text)
        except Exception:  # pragma: no cover
            log.exception("failed to report an error")

    # -- settings and backend -----------------------------------------------------------------
    def apply_settings(self, new: Settings, problems: list[str]) -> None:
        old = self.settings
        self.settings = new
        for problem in problems:
            self.log_to_client(logging.WARNING, problem)
        if new.cache_size != self.cache.capacity:
            self.cache.capacity = new.cache_size
        generation_keys = (
            "max_new_tokens",
            "temperature",
            "top_p",
            "n",
            "seed",
            "prefix_tokens",
            "suffix_tokens",
            "context_tokens",
            "time_budget_ms",
        )
        if new.backend_spec() != old.backend_spec() or any(getattr(new, k) != getattr(old, k) for k in generation_keys):
            self.cache.clear()
        if new.backend_spec() != old.backend_spec():
            self.schedule_backend_load()

    def schedule_backend_load(self) -> None:
        """Load the configured backend in the worker (requests queue behind it)."""
        settings = self.settings
        loop = asyncio.get_running_loop()

        async def load() -> None:
            self.backend_status = "loading"
            ok, message = await loop.run_in_executor(self.executor, self.backends.ensure, settings)
            if ok:  # the first generation is slow (allocations, kernels): pay it before saying "ready"
                await loop.run_in_executor(self.executor, _warm_up, self.backends.current)
            if settings is not self.settings and settings.backend_spec() != self.settings.backend_spec():
                return  # superseded by a newer configuration
            self.backend_status = message if ok else f"error: {message}"
            if ok:
                self.log_to_client(logging.INFO, f"ready: {message} (loaded in {self.backends.load_ms:.0f} ms)")
            else:
                self.log_to_client(logging.ERROR, f"cannot load the model: {message}")
                self.window_show_message(
                    types.ShowMessageParams(
                        type=types.MessageType.Error, message=f"aigc-code: cannot load the model: {message}"
                    )
                )

        asyncio.ensure_future(load())

    # -- completion ---------------------------------------------------------------------------
    def cursor(self, uri: str, position: types.Position):
        try:
            doc = self.documents.get(uri)
        except UnknownDocument as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        try:
            index = doc.index_at(position.line, position.character, self.position_encoding, strict=True)
        except PositionError as exc:
            raise JsonRpcInvalidParams(f"position out of range in {uri}: {exc}") from None
        return doc, index

    def _backend_answered(self) -> None:
        """A model call succeeded: reported errors are forgotten (a later outage is reported again)
        and the backend's one-time warnings (e.g. a server that ignores `n`) go to the client's log."""
        if self._reported:
            self._reported.clear()
            self.log_to_client(logging.INFO, "the backend answers again")
        for notice in self.backends.notices():
            self.log_to_client(logging.WARNING, notice)

    @property
    def last_timing(self) -> dict | None:
        """The last completion's timings (`aigcCode/lastTiming`)."""
        if self._last_timing is None:
            return None
        uri, version, timing = self._last_timing
        return {"uri": uri, "version": version, **timing.as_dict()}

    # -- completion requests: checked here on the loop, answered by the worker ------------------
    def answer_in_worker(self, msg_id: Any, method: str, params) -> None:
        """Check the cursor, register the request, and hand it to the worker (after the debounce)."""
        received = time.perf_counter()
        uri = params.text_document.uri
        try:
            doc, _ = self.cursor(uri, params.position)
        except JsonRpcException as exc:
            self.send_payload(error_message(msg_id, exc.code, exc.message))
            return
        settings = self.settings
        if doc.language is None or doc.language not in settings.enabled_languages:
            self.send_payload(answer.response(msg_id, self._render(method, params, None, None)))
            return
        token = CancellationToken()
        with self._inflight_lock:
            previous = self.inflight.get(uri)
            if previous is not None:
                previous.cancel()  # a newer request for the same document supersedes it
            self.inflight[uri] = token
        pending = self.pending[msg_id] = Pending(msg_id, method, params, token, received)
        if settings.debounce_ms:
            asyncio.get_running_loop().call_later(settings.debounce_ms / 1000, self._submit, pending)
        else:
            self._submit(pending)

    def _submit(self, pending: Pending) -> None:
        """Snapshot the documents (on the loop) and queue the generation."""
        if pending.token.cancelled:  # overtaken by typing during the debounce, or cancelled
            self._finish(pending, None, None)
            return
        try:
            doc, index = self.cursor(pending.uri, pending.params.position)
        except JsonRpcException as exc:  # the document was closed during the debounce
            self.reply(pending, error_message(pending.msg_id, exc.code, exc.message))
            return
        others = [
            (d.snapshot(), display_path(d.uri, self.roots))
            for d in self.documents.recent(exclude=pending.uri, limit=MAX_CONTEXT_DOCUMENTS)
            if d.language is not None
        ]
        request = CompletionRequest(
            doc=doc.snapshot(),
            path=display_path(pending.uri, self.roots),
            cursor=index,
            settings=self.settings,
            others=others,
            invoked=_invoked(pending.method, pending.params),
            file_path=local_path(pending.uri),
        )
        try:
            self.executor.submit(self._answer, pending, request, time.perf_counter())
        except RuntimeError:  # the executor is shut down: the session is ending
            self.reply(pending, answer.cancelled_response(pending.msg_id))

    def _answer(self, pending: Pending, request: CompletionRequest, queued: float) -> None:
        """In the worker: generate, render and send the response."""
        try:
            outcome = self._generate(request, pending.token, pending.received, queued)
        except JsonRpcException as exc:
            self.reply(pending, error_message(pending.msg_id, exc.code, exc.message))
            return
        except Exception as exc:  # a bug must still answer the request, and not end the worker
            log.exception("completion failed")
            self.reply(pending, error_message(pending.msg_id, JsonRpcInternalError.CODE, f"Internal error: {exc!r}"))
            return
        self._finish(pending, request, outcome)

    def _finish(self, pending: Pending, request: CompletionRequest | None, outcome: CompletionOutcome | None) -> None:
        if pending.cancelled:
            self.reply(pending, answer.cancelled_response(pending.msg_id))
        else:
            result = self._render(pending.method, pending.params, request, outcome)
            self.reply(pending, answer.response(pending.msg_id, result), outcome.timing if outcome else None)

    def _render(self, method: str, params, request: CompletionRequest | None, outcome: CompletionOutcome | None):
        if method == types.TEXT_DOCUMENT_INLINE_COMPLETION:
            return answer.inline_result(request, outcome, params.position)
        result = answer.completion_list(request, outcome, params.position, self.client_capabilities, SECTION)
        return self.protocol._converter.unstructure(result)

    def _release(self, pending: Pending) -> None:
        with self._inflight_lock:
            if self.inflight.get(pending.uri) is pending.token:
                del self.inflight[pending.uri]
        if self.pending.get(pending.msg_id) is pending:
            self.pending.pop(pending.msg_id, None)

    def cancel_all(self) -> None:
        """Shutdown or a closed connection: stop every generation; pending requests answer RequestCancelled."""
        for pending in list(self.pending.values()):
            pending.cancel()
            self.reply(pending, answer.cancelled_response(pending.msg_id))
        with self._inflight_lock:
            for token in self.inflight.values():
                token.cancel()
            self.inflight.clear()

    def reply(self, pending: Pending, payload: dict, timing: Timing | None = None) -> None:
        """The one answer to a pending request (a cancellation may have answered it already);
        the request stops being in flight. `timing.answered_at_ms` gets the moment the answer goes
        to the client (perf_counter: one clock for every process on this machine, `bench lsp`'s too)."""
        self._release(pending)
        if pending.claim():
            stamp = None if timing is None else (lambda t: setattr(timing, "answered_at_ms", t * 1000))
            self.send_payload(payload, stamp)

    def send_payload(self, payload: dict, on_write: Callable[[float], None] | None = None) -> None:
        """Write a JSON-RPC message from any thread: a stdio frame at once (`FrameWriter`), any
        other transport on the loop. `on_write` gets time.perf_counter() as the message goes out."""
        writer = self.protocol.writer
        if isinstance(writer, FrameWriter) and writer.write_message(payload, on_write):
            return
        if on_write is not None:
            on_write(time.perf_counter())
        if isinstance(writer, FrameWriter) or self._loop is None:
            self.protocol._send_data(payload)
        else:
            self._loop.call_soon_threadsafe(self.protocol._send_data, payload)

    def _generate(
        self, request: CompletionRequest, token: CancellationToken, received: float, queued: float
    ) -> CompletionOutcome | None:
        """The pipeline, in the worker; None when the document changed meanwhile (never answer
        with a stale suggestion). Backend errors become an error response, reported once."""
        try:
            outcome = self.pipeline.run(request, token, queued)
        except AigcCodeError as exc:
            message = str(exc)
            if message not in self._reported:
                self._reported.add(message)
                self.log_to_client(logging.ERROR, message)
            raise JsonRpcInternalError(message) from None
        if outcome.timing.model_ms:
            self._backend_answered()
        uri = request.doc.uri
        current = self.documents.get(uri) if uri in self.documents else None
        if current is None or current.version != request.doc.version:
            return None
        outcome.timing.total_ms = (time.perf_counter() - received) * 1000
        self._last_timing = (uri, request.doc.version, outcome.timing)  # made a dict when asked for, not on this path
        if log.isEnabledFor(logging.DEBUG):
            t = outcome.timing
            log.debug(
                "completion %s:%d mode=%s cache=%s total=%.1fms model=%.1fms suggestions=%d",
                uri,
                request.cursor,
                t.mode,
                t.cache_hit,
                t.total_ms,
                t.model_ms,
                t.suggestions,
            )
        return outcome


def _invoked(method: str, params) -> bool:
    """An explicit request (not an automatic trigger while typing)?"""
    context = params.context
    if method == types.TEXT_DOCUMENT_INLINE_COMPLETION:
        return context is not None and context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    return context is None or context.trigger_kind == types.CompletionTriggerKind.Invoked


def _warm_up(backend) -> None:
    """One 1-token generation on a freshly loaded local model (remote backends are left alone)."""
    if getattr(backend, "kind", None) != "local":
        return
    from aigc_code.generation import GenerationConfig

    try:
        backend.complete("def main(", "", GenerationConfig(max_new_tokens=1, prompt_lookup=0))
    except Exception as exc:  # a failed warm-up is not a failed load: the real request reports errors
        log.warning("warm-up generation failed: %s", exc)


# ---------------------------------------------------------------------------------------------
# Handlers


def _initialize(ls: AigcServer, params: types.InitializeParams) -> None:
    ls._loop = asyncio.get_running_loop()
    options = params.initialization_options
    raw = section(options) if options is not None else None
    if ls.required_token is not None:
        given = (raw or {}).get("token") if isinstance(raw, dict) else None
        if given is None and isinstance(options, dict):
            given = options.get("token")
        if given != ls.required_token:
            raise JsonRpcException(
                "not authorized: wrong or missing initializationOptions.aigcCode.token", code=UNAUTHORIZED
            )
        ls.authorized = True
    if raw:
        raw = {k: v for k, v in raw.items() if k != "token"}
    new, problems = merge(ls.base_settings, raw)
    ls.init_settings = new
    ls.settings = new
    ls._pending_problems = problems
    ls.cache.capacity = new.cache_size
    encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
    ls.position_encoding = str(getattr(encoding, "value", encoding))
    roots = [f.uri for f in (params.workspace_folders or [])]
    if params.root_uri:
        roots.append(params.root_uri)
    ls.roots = roots
    ls.schedule_backend_load()  # in the background, right away: the first request should not wait for it


def _initialized(ls: AigcServer, params: types.InitializedParams) -> None:
    ls._loop = asyncio.get_running_loop()
    for problem in ls._pending_problems:
        ls.log_to_client(logging.WARNING, problem)
    ls._pending_problems = []
    start_workspace_index(ls)


def start_workspace_index(ls: AigcServer) -> None:
    """Index the workspace folders in the background; ask the client to report file changes."""

    def done(report: dict) -> None:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.get("skipped", {}).items())) or "none"
        ls.log_to_client(
            logging.INFO,
            f"workspace index: {report.get('files', 0)} files in {report.get('seconds', 0):.1f} s (skipped: {skipped})",
        )

    ls.repository.start(ls.roots, ls.settings, on_done=done)
    ls.pipeline.workspace = ls.repository.index
    if ls.repository.index is not None and client_can_watch(ls.client_capabilities):
        asyncio.ensure_future(_register_watcher(ls))


async def _register_watcher(ls: AigcServer) -> None:
    try:
        await ls.client_register_capability_async(watcher_registration())
    except Exception as exc:  # the client refused: the index still follows open buffers and saves
        ls.log_to_client(logging.WARNING, f"file watcher registration failed: {exc}")


def _did_open(ls: AigcServer, params: types.DidOpenTextDocumentParams) -> None:
    d = params.text_document
    ls.documents.open(d.uri, d.language_id, d.version, d.text)
    ls.repository.buffer(d.uri, d.text)


def _did_change(ls: AigcServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    try:
        ls.documents.change(uri, params.text_document.version, params.content_changes, ls.position_encoding)
    except UnknownDocument as exc:
        ls.log_to_client(logging.WARNING, f"didChange ignored: {exc}")
        return
    ls.repository.buffer(uri, ls.documents.get(uri).text)
    token = ls.inflight.get(uri)
    if token is not None:
        token.cancel()  # the user kept typing: the pending suggestion would be stale


def _did_close(ls: AigcServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    with ls._inflight_lock:
        token = ls.inflight.pop(uri, None)
    if token is not None:
        token.cancel()
    ls.documents.close(uri)
    ls.repository.disk(uri)  # the buffer is gone: the index goes back to the file on disk


def _did_save(ls: AigcServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.repository.disk(params.text_document.uri)


def _did_change_watched_files(ls: AigcServer, params: types.DidChangeWatchedFilesParams) -> None:
    ls.repository.watched(params.changes)


async def _did_change_configuration(ls: AigcServer, params: types.DidChangeConfigurationParams) -> None:
    raw = section(params.settings)
    if raw is None and not params.settings:
        caps = ls.client_capabilities.workspace
        if caps is not None and caps.configuration:
            try:
                result = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
                )
                raw = result[0] if result and isinstance(result[0], dict) else None
            except Exception as exc:
                ls.log_to_client(logging.WARNING, f"workspace/configuration failed: {exc}")
                return
    if raw is None:
        if params.settings:
            ls.log_to_client(logging.WARNING, f"didChangeConfiguration without an {SECTION!r} section ignored")
        return
    raw = {k: v for k, v in raw.items() if k != "token"}
    new, problems = merge(ls.init_settings, raw)
    ls.apply_settings(new, problems)
    ls.log_to_client(logging.INFO, "settings updated")


def _answered_by_worker(ls: AigcServer, params: Any = None) -> None:  # pragma: no cover - never called
    """Registered so that the capability is announced; `AigcProtocol.handle_message` routes these
    requests to `AigcServer.answer_in_worker` before pygls would call a handler."""
    raise JsonRpcInternalError("completion requests are answered by the worker")


def _last_timing(ls: AigcServer, params: Any = None) -> dict | None:
    return ls.last_timing


async def _status(ls: AigcServer, params: Any = None) -> dict:
    # a remote endpoint is asked now (off the loop): "ready" only while it answers
    ready, backend = await asyncio.get_running_loop().run_in_executor(None, ls.backends.health, ls.backend_status)
    return {
        "version": __version__,
        "backend": backend,
        "ready": ready,
        "settings": ls.settings.public(),
        "documents": len(ls.documents),
        "positionEncoding": ls.position_encoding,
        "cache": {"entries": len(ls.cache), "hits": ls.cache.hits, "misses": ls.cache.misses},
        "workspace": ls.repository.public(),
    }


def _shutdown(ls: AigcServer, params: Any = None) -> None:
    ls.repository.stop()
    ls.cancel_all()


def create_server(
    settings: Settings | None = None, token: str | None = None, holder: BackendHolder | None = None
) -> AigcServer:
    server = AigcServer(settings, token, holder)
    server.feature(types.INITIALIZE)(_initialize)
    server.feature(types.INITIALIZED)(_initialized)
    server.feature(types.TEXT_DOCUMENT_DID_OPEN)(_did_open)
    server.feature(types.TEXT_DOCUMENT_DID_CHANGE)(_did_change)
    server.feature(types.TEXT_DOCUMENT_DID_CLOSE)(_did_close)
    server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))(_did_save)
    server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)(_did_change_watched_files)
    server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(_did_change_configuration)
    server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(_answered_by_worker)
    server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "("], resolve_provider=False)
    )(_answered_by_worker)
    server.feature(LAST_TIMING)(_last_timing)
    server.feature(STATUS)(_status)
    server.feature(types.SHUTDOWN)(_shutdown)
    return server


async def _serve_connection(reader, writer, make_server) -> None:
    """One TCP client: its own server state (documents, settings, session), the shared model."""
    server = make_server()
    server._stop_event = threading.Event()
    server.protocol.set_writer(writer)
    peer = writer.get_extra_info("peername")
    log.info("client %s connected", peer)
    try:
        await run_framed(server._stop_event, reader, server.protocol)
    finally:
        server.repository.stop()
        server.executor.shutdown(wait=False, cancel_futures=True)
        server.cancel_all()
        if not writer.is_closing():
            writer.close()
        log.info("client %s left", peer)


async def serve_tcp(settings: Settings, host: str, port: int, token: str | None = None, on_listening=None) -> None:
    """Serve LSP clients on host:port, one server session per connection, until cancelled.
    The model is loaded once and shared; "listening" is logged only once the bind succeeded."""
    holder = BackendHolder()

    def make() -> AigcServer:
        return create_server(settings, token=token, holder=holder)

    listener = await asyncio.start_server(lambda r, w: _serve_connection(r, w, make), host, port, limit=MAX_HEADER_LINE)
    bound = listener.sockets[0].getsockname() if listener.sockets else (host, port)
    log.info("aigc-code LSP server listening on %s:%d", bound[0], bound[1])
    if on_listening is not None:
        on_listening(bound)
    async with listener:
        try:
            await listener.serve_forever()
        finally:
            holder.close()
