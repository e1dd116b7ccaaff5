"""`aggregate-metrics`: the gRPC `/Metrics/Submit` server plus HTTP `/metrics` (JSON list) and `/healthz`.

As upstream (BEHAVIOR.md §6.4): Results are stored in memory keyed by `attempt_id` (a duplicate replaces the earlier
one and is logged); `/metrics` answers any method with Go `encoding/json` of the list (snake_case keys in field order,
zero fields omitted, `<>&` escaped, no trailing newline, `[]` when empty); every other path is
`404 page not found\\n`. If either server stops, the other is stopped too (exit 1).

Differences from upstream: a listen failure names the port AND the cause (upstream drops the cause); SIGTERM/SIGINT
stop both servers cleanly and exit 0 (upstream is killed); `/healthz` answers `ok` for probes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from image_prefetcher.errors import CommandError
from image_prefetcher.logs import configure_logging, get_logger

log = get_logger()

RESULT_FIELDS = ("attempt_id", "started_at", "image", "error", "duration_ms", "node", "size_bytes")
NOT_FOUND_BODY = b"404 page not found\n"
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)  # then listen on IPv4 only
# Go's encoding/json HTML-safe escaping plus its line/paragraph separator escapes.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class AggregateOptionsLike(Protocol):
    grpc_port: int
    http_port: int
    debug: bool


def go_json_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for raw, escaped in _GO_ESCAPES.items():
        encoded = encoded.replace(raw, escaped)
    return encoded


def result_json(result: Any) -> str:
    """One Result as Go's encoding/json writes the upstream struct (`json:"...,omitempty"` on every field)."""
    parts = []
    for name in RESULT_FIELDS:
        value = getattr(result, name)
        if not value:
            continue
        encoded = go_json_string(value) if isinstance(value, str) else str(int(value))
        parts.append(f'"{name}":{encoded}')
    return "{" + ",".join(parts) + "}"


def results_json(results: Iterable[Any]) -> bytes:
    return ("[" + ",".join(result_json(r) for r in results) + "]").encode("utf-8")


class ResultStore:
    """Thread-safe: the gRPC server (event loop) writes, the HTTP server (threads) reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[str, Any] = {}

    def add(self, result: Any) -> bool:
        """Store by attempt_id; returns True when it replaced an earlier Result with the same id."""
        with self._lock:
            duplicate = result.attempt_id in self._results
            self._results[result.attempt_id] = result
        return duplicate

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self._results.values())


class MetricsServicer:
    def __init__(self, store: ResultStore) -> None:
        self._store = store

    async def Submit(self, request_iterator: Any, context: Any) -> Any:
        from image_prefetcher._proto import metrics_pb2

        count = 0
        async for result in request_iterator:
            if self._store.add(result):
                log.info("duplicate metric submitted", attempt_id=result.attempt_id)
            log.debug("metric submitted", image=result.image, attempt_id=result.attempt_id)
            count += 1
        log.debug("metrics stream finished", count=count)
        return metrics_pb2.Empty()


def _handler_class(store: ResultStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "image-prefetcher"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._send(200, results_json(store.snapshot()), nosniff=False)
            elif path == "/healthz":
                self._send(200, b"ok", nosniff=False)
            else:
                self._send(404, NOT_FOUND_BODY, nosniff=True)

        def _send(self, status: int, body: bytes, nosniff: bool) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(min(length, 1 << 20))  # drain a request body so keep-alive stays in sync
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            if nosniff:
                self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http request", request=format % args)

    return Handler


class _DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        # Listen on all interfaces, IPv4 and IPv6, like Go's ":<port>".
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _listen_http(port: int, store: ResultStore) -> ThreadingHTTPServer:
    handler = _handler_class(store)
    try:
        return _DualStackHTTPServer(("::", port), handler)
    except OSError as err:
        if err.errno not in _NO_IPV6:  # anything but "no IPv6 here" is a real listen error
            raise CommandError(f"failed to listen on :{port}: {_reason(err)}") from None
    try:
        server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    except OSError as err:
        raise CommandError(f"failed to listen on :{port}: {_reason(err)}") from None
    server.daemon_threads = True
    return server


def _reason(err: OSError) -> str:
    return (err.strerror or str(err)).lower() if err.strerror else str(err)


def _probe_port(port: int) -> None:
    """gRPC does not say why a bind failed; a plain bind of the same port does (`address already in use`)."""
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return
        except OSError as err:
            if family == socket.AF_INET6 and err.errno in _NO_IPV6:
                continue
            raise CommandError(f"failed to listen on :{port}: {_reason(err)}") from None
        finally:
            probe.close()


async def _start_grpc(port: int, store: ResultStore) -> Any:
    import grpc

    from image_prefetcher._proto import metrics_pb2_grpc

    _probe_port(port)
    # so_reuseport=0: another process on the same port must be an error, not a silent second listener.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    metrics_pb2_grpc.add_MetricsServicer_to_server(MetricsServicer(store), server)
    bound = 0
    for address in (f"[::]:{port}", f"0.0.0.0:{port}"):
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound:
            break
    if not bound:
        raise CommandError(f"failed to listen on :{port}: the gRPC server could not bind it")
    await server.start()
    return server


async def serve(grpc_port: int, http_port: int, stop: asyncio.Event, ready: asyncio.Event | None = None) -> int:
    """Run both servers until `stop` is set (exit 0) or one of them ends by itself (exit 1)."""
    store = ResultStore()
    http_server = _listen_http(http_port, store)  # HTTP first: its errors carry the cause directly
    try:
        grpc_server = await _start_grpc(grpc_port, store)
    except BaseException:
        http_server.server_close()
        raise
    log.info("starting to serve", grpcSpec=f":{grpc_port}")
    log.info("starting to serve", httpSpec=f":{http_port}")
    loop = asyncio.get_running_loop()
    http_done = loop.run_in_executor(None, http_server.serve_forever)
    grpc_done = asyncio.ensure_future(grpc_server.wait_for_termination())
    stop_wait = asyncio.ensure_future(stop.wait())
    if ready is not None:
        ready.set()
    try:
        await asyncio.wait({http_done, grpc_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped_by_request = stop.is_set()
        await grpc_server.stop(grace=2)
        http_server.shutdown()
        http_server.server_close()
        await asyncio.gather(http_done, grpc_done, return_exceptions=True)
        stop_wait.cancel()
    if stopped_by_request:
        log.info("servers stopped")
        return 0
    log.error("a server stopped unexpectedly, stopped the other one too")
    return 1


async def _main_async(options: AggregateOptionsLike) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        return await serve(options.grpc_port, options.http_port, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("shutting down", signal=signal.Signals(sig).name)
    stop.set()


def main(options: AggregateOptionsLike) -> int:
    """Entry point of `image-prefetcher aggregate-metrics` (called by the CLI with the parsed flags)."""
    configure_logging(bool(options.debug))
    for name in ("grpc_port", "http_port"):
        port = getattr(options, name)
        if not 0 <= port <= 65535:
            raise CommandError(f"failed to listen on :{port}: invalid port")
    return asyncio.run(_main_async(options))
