"""The language server: thin LSP handlers over `DocumentStore` and `CompletionPipeline`.

Requests
  textDocument/inlineCompletion  (LSP 3.18) the suggestion(s), best first
  textDocument/completion        fallback: one item carrying the best suggestion as a textEdit
  aigcCode/lastTiming            timings of the last completion (model time vs. server time)
  aigcCode/status                backend, settings, open documents, cache counters
Notifications
  textDocument/didOpen|didChange|didClose (incremental sync), workspace/didChangeConfiguration,
  $/cancelRequest (stops the generation), shutdown/exit.

Generation runs in one worker thread; handlers only await it, so the server keeps reading
messages (and cancellations) while the model runs. Every failure inside a handler becomes an
error response or a `window/logMessage`; none ends the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
import threading
import time
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
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from aigc_code import __version__
from aigc_code.backends import CancellationToken
from aigc_code.brackets import replaced_after_cursor
from aigc_code.cache import SuggestionCache
from aigc_code.errors import AigcCodeError
from aigc_code.pipeline import CompletionOutcome, CompletionPipeline, CompletionRequest, Timing

from .backend import BackendHolder
from .documents import UTF16, DocumentStore, PositionError, UnknownDocument, display_path
from .settings import SECTION, Settings, merge, section
from .transport import MAX_HEADER_LINE, run_framed, stdin_reader
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

    def structure_message(self, data: dict[str, Any]):
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
        if method is None or self._shutdown or message.jsonrpc != "2.0":
            super().handle_message(message)  # responses, and pygls' own refusals
        elif hasattr(message, "id"):
            # what pygls does, without its runtime-Protocol isinstance checks (~40 us each, two a message)
            contextvars.copy_context().run(self._handle_request, message.id, method, message.params)
        elif method in DOCUMENT_SYNC:
            self._notify_directly(method, message.params)
        else:
            contextvars.copy_context().run(self._handle_notification, method, message.params)

    def _notify_directly(self, method: str, params) -> None:
        handler = self.fm.features.get(method)
        if handler is None:
            return
        try:
            handler(params)
        except Exception as error:  # as pygls reports a failed notification handler
            log.exception("failed to handle %s", method)
            self._server._report_server_error(error, FeatureNotificationError)

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
        self.inflight: dict[str, CancellationToken] = {}
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
        self.protocol.set_writer(StdoutWriter(stdout))

        async def serve() -> None:
            reader = await stdin_reader(stdin, stdout, self.thread_pool)
            await run_framed(self._stop_event, reader, self.protocol)

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
        if loop is not None:
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

    async def complete(self, uri: str, position: types.Position, invoked: bool = False) -> CompletionOutcome | None:
        received = time.perf_counter()
        doc, index = self.cursor(uri, position)
        settings = self.settings
        if doc.language is None or doc.language not in settings.enabled_languages:
            return None
        token = CancellationToken()
        previous = self.inflight.get(uri)
        if previous is not None:
            previous.cancel()  # a newer request for the same document supersedes it
        self.inflight[uri] = token
        loop = asyncio.get_running_loop()
        try:
            if settings.debounce_ms:
                await asyncio.sleep(settings.debounce_ms / 1000)
                if token.cancelled:
                    return None
                doc, index = self.cursor(uri, position)
            others = [
                (d.snapshot(), display_path(d.uri, self.roots))
                for d in self.documents.recent(exclude=uri, limit=MAX_CONTEXT_DOCUMENTS)
                if d.language is not None
            ]
            request = CompletionRequest(
                doc=doc.snapshot(),
                path=display_path(uri, self.roots),
                cursor=index,
                settings=settings,
                others=others,
                invoked=invoked,
                file_path=local_path(uri),
            )
            outcome = await loop.run_in_executor(self.executor, self.pipeline.run, request, token, time.perf_counter())
        except asyncio.CancelledError:
            token.cancel()  # $/cancelRequest or shutdown: stop the model at its next token
            raise
        except AigcCodeError as exc:
            message = str(exc)
            if message not in self._reported:
                self._reported.add(message)
                self.log_to_client(logging.ERROR, message)
            raise JsonRpcInternalError(message) from None
        finally:
            if self.inflight.get(uri) is token:
                del self.inflight[uri]
        if outcome.timing.model_ms:
            self._backend_answered()
        current = self.documents.get(uri) if uri in self.documents else None
        if current is None or current.version != doc.version:
            return None  # edited (or closed) while generating: never answer with a stale suggestion
        outcome.timing.total_ms = (time.perf_counter() - received) * 1000
        self._last_timing = (uri, doc.version, outcome.timing)  # made a dict when asked for, not on this path
        t = outcome.timing
        log.debug(
            "completion %s:%d:%d mode=%s cache=%s total=%.1fms model=%.1fms suggestions=%d",
            uri,
            position.line,
            position.character,
            t.mode,
            t.cache_hit,
            t.total_ms,
            t.model_ms,
            t.suggestions,
        )
        return outcome


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


async def _inline_completion(ls: AigcServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    outcome = await ls.complete(params.text_document.uri, params.position, invoked)
    if outcome is None or not outcome.suggestions:
        return types.InlineCompletionList(items=[])
    after = _line_after_cursor(ls, params.text_document.uri, params.position)
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(insert_text=s.text, range=_replace_range(params.position, after, s.text))
            for s in outcome.suggestions
        ]
    )


def _line_after_cursor(ls: AigcServer, uri: str, position: types.Position) -> str:
    doc, index = ls.cursor(uri, position)
    end = doc.text.find("\n", index)
    return doc.text[index : end if end >= 0 else len(doc.text)].rstrip("\r")


def _replace_range(position: types.Position, after_cursor: str, text: str) -> types.Range:
    """The cursor, extended over the auto-closed brackets/quotes the suggestion closes itself (ASCII: one unit each)."""
    end = types.Position(line=position.line, character=position.character + replaced_after_cursor(after_cursor, text))
    return types.Range(start=position, end=end)


def _label(text: str) -> str:
    line = next((ln.strip() for ln in text.split("\n") if ln.strip()), text.strip())
    return line if len(line) <= 60 else line[:59] + "…"


def _documentation(ls: AigcServer, language: str, text: str) -> types.MarkupContent | str:
    caps = ls.client_capabilities.text_document
    item = caps.completion.completion_item if caps is not None and caps.completion is not None else None
    formats = (item.documentation_format if item is not None else None) or []
    if types.MarkupKind.Markdown in formats:
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```{language}\n{text}\n```")
    return text


async def _completion(ls: AigcServer, params: types.CompletionParams) -> types.CompletionList:
    invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    outcome = await ls.complete(params.text_document.uri, params.position, invoked)
    if outcome is None or not outcome.suggestions:
        return types.CompletionList(is_incomplete=True, items=[])
    best = outcome.suggestions[0]
    after = _line_after_cursor(ls, params.text_document.uri, params.position)
    doc = ls.documents.get(params.text_document.uri) if params.text_document.uri in ls.documents else None
    language = doc.language if doc is not None else ""
    item = types.CompletionItem(
        label=_label(best.text),
        kind=types.CompletionItemKind.Snippet,
        detail="aigc-code",
        documentation=_documentation(ls, language, best.text),
        sort_text="\u0000",
        filter_text=None,
        preselect=True,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=_replace_range(params.position, after, best.text), new_text=best.text),
        data={SECTION: outcome.timing.as_dict()},
    )
    return types.CompletionList(is_incomplete=True, items=[item])


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
    for token in list(ls.inflight.values()):
        token.cancel()
    ls.inflight.clear()


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
    server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(_inline_completion)
    server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "("], resolve_provider=False)
    )(_completion)
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
        for token in list(server.inflight.values()):
            token.cancel()
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
