"""`aigc-code serve`: run the LSP server over stdio (default) or TCP.

`app` is a Typer app with the one command `serve`; `serve_command` can also be registered
directly on another Typer app, and `serve()` called from Python.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from aigc_code.options import (
    AdapterOpt,
    BackendOpt,
    DeviceOpt,
    EndpointOpt,
    FimFormatOpt,
    MaxContextOpt,
    ModelOpt,
    QuantizeOpt,
    ThreadsOpt,
    check_quantize,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

app = typer.Typer(
    help="The aigc-code language server.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)


@app.callback()
def _main() -> None:
    """The aigc-code language server (LSP over stdio or TCP)."""


def setup_logging(level: str = "INFO", log_file: str | Path | None = None) -> None:
    """Logs go to stderr (stdout carries the protocol) and optionally to a file."""
    numeric = getattr(logging, str(level).upper(), None)
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(numeric)
    # pygls logs every message it sends at INFO, and a traceback for every error response; httpx
    # (the openai backend) a line for every HTTP request.
    for name in ("pygls", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    for name in ("pygls.protocol.json_rpc", "pygls.server"):
        logging.getLogger(name).addFilter(_expected_errors)


def _expected_errors(record: logging.LogRecord) -> bool:
    """Drop pygls' tracebacks for errors that are answered or reported in one line anyway
    (invalid params, cancellation, a body that is not JSON)."""
    import json

    from pygls.exceptions import JsonRpcException, JsonRpcInternalError

    if isinstance(record.msg, str) and record.msg.startswith("Unable to deserialize message"):
        return False  # AigcProtocol answers or reports it with a readable message
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, json.JSONDecodeError):
        return False
    return not (isinstance(exc, JsonRpcException) and not isinstance(exc, JsonRpcInternalError))


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_backend(settings) -> tuple[bool, str]:
    """Load the backend and ask it for one token: (ok, one line)."""
    import time

    from aigc_code.backends import GenerationConfig
    from aigc_code.errors import AigcCodeError

    from .backend import BackendHolder

    holder = BackendHolder()
    ok, message = holder.ensure(settings)
    if not ok:
        return False, message
    backend = holder.current
    start = time.perf_counter()
    try:
        backend.complete("def main():\n    ", "", GenerationConfig(max_new_tokens=1))
    except AigcCodeError as exc:
        return False, str(exc)
    first = (time.perf_counter() - start) * 1000
    # described again: a remote backend knows what it talks to (model, FIM layout) only after asking
    return True, f"{backend.describe()}; loaded in {holder.load_ms:.0f} ms, first token in {first:.0f} ms"


def serve(
    model: str | None = None,
    adapter: str | None = None,
    backend: str = "local",
    endpoint: str | None = None,
    device: str | None = None,
    fim_format: str = "starcoder",
    threads: int | None = None,
    quantize: str | None = None,
    max_context: int | None = None,
    tcp: bool = False,
    host: str = "127.0.0.1",
    port: int = 2087,
    allow_remote: bool = False,
    token: str | None = None,
    log_file: str | None = None,
    log_level: str = "INFO",
    check: bool = False,
) -> int:
    """Run the server until the client exits; returns the process exit status."""
    from .settings import Settings

    setup_logging(log_level, log_file)
    log = logging.getLogger("aigc_code.server")
    if backend not in ("local", "openai"):
        print(f"error: unknown backend {backend!r}: use local or openai", file=sys.stderr)
        return 2
    settings = Settings(
        model=model,
        adapter=adapter,
        backend=backend,
        endpoint=endpoint,
        device=device,
        fim_format=fim_format,
        threads=threads,
        quantize=quantize,
        max_context=max_context,
    )
    if check:
        ok, line = check_backend(settings)
        print(("ok: " if ok else "error: ") + line)
        return 0 if ok else 1
    token = token or os.environ.get("AIGC_CODE_TOKEN") or None
    if tcp and not is_loopback(host):
        if not allow_remote:
            print(
                f"error: --host {host} is not a loopback address: anyone who can reach it could use the model. "
                "Pass --allow-remote to bind it anyway (and --token SECRET so that clients must authenticate).",
                file=sys.stderr,
            )
            return 2
        if not token:
            log.warning("serving on %s:%d without --token: any client that can connect may use the server", host, port)

    from .lsp import create_server, serve_tcp

    if tcp:
        import asyncio

        try:
            asyncio.run(serve_tcp(settings, host, port, token))
        except OSError as exc:
            print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            log.info("interrupted")
            return 130
        return 0
    server = create_server(settings, token=token)
    # stdout carries the protocol: keep the real one for it and point fd 1 (and
    # sys.stdout) at stderr, so that stray prints from libraries cannot corrupt it.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    log.info("aigc-code LSP server on stdio (pid %d)", os.getpid())
    server.start_io(sys.stdin.buffer, protocol_out)
    code = server.exit_code if server.exit_code is not None else (0 if server.protocol._shutdown else 1)
    log.info("exiting (status %d)", code)
    return code


@app.command("serve")
def serve_command(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    backend: BackendOpt = "local",
    endpoint: EndpointOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quantize: QuantizeOpt = None,
    fim_format: FimFormatOpt = "starcoder",
    max_context: MaxContextOpt = None,
    tcp: Annotated[
        bool, typer.Option("--tcp", help="Listen on TCP instead of stdio (one session per client).")
    ] = False,
    host: Annotated[
        str, typer.Option("--host", help="TCP address to bind (non-loopback needs --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 2087,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow binding a non-loopback address.")] = False,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            help="Shared secret TCP clients must send in initializationOptions.aigcCode.token "
            "(or set $AIGC_CODE_TOKEN).",
        ),
    ] = None,
    log_file: Annotated[Optional[str], typer.Option("--log-file", help="Also write logs to this file.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    check: Annotated[
        bool, typer.Option("--check", help="Load the model / reach the backend, print one line, exit 0 (ok) or 1.")
    ] = False,
):
    """Run the LSP server (stdio by default): inline completion, completion fallback, incremental sync."""
    code = serve(
        model=model,
        adapter=adapter,
        backend=backend,
        endpoint=endpoint,
        device=device,
        fim_format=fim_format,
        threads=threads,
        quantize=check_quantize(quantize),
        max_context=max_context,
        tcp=tcp,
        host=host,
        port=port,
        allow_remote=allow_remote,
        token=token,
        log_file=log_file,
        log_level=log_level,
        check=check,
    )
    logging.shutdown()
    if not check and code in (0, 1):
        sys.stderr.flush()
        os._exit(code)  # worker threads (a generation, the stdin reader) must not keep the process alive
    raise typer.Exit(code)


def main() -> None:
    app()
