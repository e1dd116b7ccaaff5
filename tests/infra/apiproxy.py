"""An HTTPS reverse proxy in front of a real Kubernetes API server, with injected API faults and a request log.

It sits between the modules (their kubeconfig points at ``url``) and the API server: TLS on both sides (its own
serving certificate, issued by the caller from the cluster's CA for 127.0.0.1, so the kubeconfig keeps the cluster's
CA; upstream it verifies the server against that CA), every header passed on as it came (``Authorization``
included: the API server authenticates the modules' own token). Rules are matched in order against every request
(method, regex on the path, regex on the query, watch or not); the first rule with ``times`` left decides what
happens to it:

- ``status``: answered here with ``status``, ``headers`` (e.g. ``Retry-After``) and ``body`` (default: a
  Kubernetes ``Status`` object), never forwarded;
- ``reset``: the connection is reset (RST) once the request is read, never forwarded;
- ``reset_after``: forwarded and answered upstream (a write takes effect), then the connection is reset instead
  of passing the answer on;
- ``close_watch``: a watch whose stream is cut (connection closed, no terminating chunk) after ``after_events``
  events;
- ``watch_gone``: a watch that gets, after ``after_events`` events, an ``ERROR`` event with a 410 ``Expired``
  Status and then ends, as the API server ends a watch whose resourceVersion is too old.

``revoke()`` answers 401 to every request from then on (a token revoked mid-run). The proxy is controlled
in-process (the test that owns it); ``requests`` is the log: one ``ApiRequest`` per request, with what the client
got. Request and response bodies are streamed, never buffered whole (watch streams are re-chunked one event per
chunk).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from infra._proxybase import ProxyBase, RecordBase
from infra.faultproxy import _copy_body, _Head, _read_head, _request_framing, _response_framing

ACTIONS = frozenset({"status", "reset", "reset_after", "close_watch", "watch_gone"})
WATCH_ACTIONS = frozenset({"close_watch", "watch_gone"})
_HEAD_LIMIT = 64 << 10
_REASONS = {401: ("Unauthorized", "Unauthorized"), 403: ("Forbidden", "Forbidden"), 404: ("Not Found", "NotFound"),
            409: ("Conflict", "Conflict"), 410: ("Gone", "Expired"), 429: ("Too Many Requests", "TooManyRequests"),
            500: ("Internal Server Error", "InternalError"), 502: ("Bad Gateway", "InternalError"),
            503: ("Service Unavailable", "ServiceUnavailable"), 504: ("Gateway Timeout", "Timeout")}


def is_watch(query: str) -> bool:
    """``watch=true`` (or ``1``) in a query string: a watch request."""
    values = urllib.parse.parse_qs(query).get("watch", [])
    return any(value.lower() in ("true", "1") for value in values)


def status_object(code: int, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` (what the API server sends with an error), reason by code."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": _REASONS.get(code, ("Error", "Unknown"))[1], "code": code}


def gone_event() -> bytes:
    """The watch event of an expired resourceVersion, as the API server sends it (one JSON line)."""
    status = status_object(410, "too old resource version (injected by the API fault proxy)")
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


@dataclass
class ApiRule:
    """One fault. ``path``/``query``: regexes searched in the path and in the query string; ``method`` None = any;
    ``watch`` None = watches and other requests, True = watches only, False = no watches. ``times``: the rule
    applies to its first N matching requests (None = always). ``after_events``: events passed through before a
    ``close_watch``/``watch_gone`` strikes (0: at once). ``status``/``headers``/``body``: the answer of a
    ``status`` rule (``body`` None: a Status object naming the proxy)."""

    path: str = ""
    action: str = "status"
    method: Optional[str] = None
    query: str = ""
    watch: Optional[bool] = None
    times: Optional[int] = None
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Optional[str] = None
    after_events: int = 0
    id: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {sorted(ACTIONS)}")
        if self.action in WATCH_ACTIONS and self.watch is False:
            raise ValueError(f"{self.action} acts on watch streams: watch=False never matches one")
        if self.after_events < 0:
            raise ValueError("after_events must be 0 or more")
        re.compile(self.path)
        re.compile(self.query)

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        watching = is_watch(query)
        if (self.watch is not None and self.watch != watching) or (self.action in WATCH_ACTIONS and not watching):
            return False
        return re.search(self.path, path) is not None and re.search(self.query, query) is not None

    def answer_body(self) -> bytes:
        if self.body is not None:
            return self.body.encode()
        message = f"the API fault proxy answered {self.status}"
        return json.dumps(status_object(self.status, message)).encode()


@dataclass
class ApiRequest(RecordBase):
    """One proxied request. ``status``: what the client got (None: no answer, e.g. a reset); ``events``: watch
    events passed on; ``upstream``: whether it reached the API server."""

    user_agent: str = ""
    status: Optional[int] = None
    events: int = 0
    upstream: bool = False
    ended: Optional[float] = None
    error: Optional[str] = None

    @property
    def watch(self) -> bool:
        return is_watch(self.query)


class ApiProxy(ProxyBase[ApiRule, ApiRequest]):
    """``with ApiProxy("https://127.0.0.1:PORT", ca_path, cert_path, key_path) as px: px.url ...``

    Rules and the request log: ``add_rule(rule, first=False)``, ``remove_rule``, ``clear_rules``, ``rules``,
    ``requests``, ``clear_requests`` (``infra._proxybase.ProxyBase``); ``revoke()``, ``rule(id)``,
    ``drop_connections()``.
    """

    def __init__(self, upstream_url: str, ca_path: Path, cert_path: Path, key_path: Path) -> None:
        super().__init__()
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != "https" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream must be https://HOST:PORT, got {upstream_url!r}")
        self.upstream = (parsed.hostname, parsed.port)
        self.ca_path = ca_path
        self.port = 0
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(str(cert_path), str(key_path))
        self._upstream_tls = ssl.create_default_context(cafile=str(ca_path))
        self._server: Optional[asyncio.AbstractServer] = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- public API (any thread) ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def revoke(self) -> ApiRule:
        """Every request from now on is answered 401 Unauthorized, as after the token was revoked."""
        return self.add_rule(ApiRule(action="status", status=401), first=True)

    def rule(self, rule_id: int) -> ApiRule:
        """A copy of the rule as it is now (``hits`` so far)."""
        return next(r for r in self.rules if r.id == rule_id)

    def drop_connections(self) -> None:
        """Closes every client connection at once (watches included), as a restarting API server does."""
        self._in_loop(self._abort_all())

    def _thread_name(self) -> str:
        return f"apiproxy->{self.upstream[1]}"

    # ---- loop side --------------------------------------------------------------------------------
    async def _start_servers(self) -> None:
        self._server = await asyncio.start_server(self._serve_client, "127.0.0.1", 0, ssl=self._server_tls,
                                                  limit=_HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._abort_all()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _match(self, method: str, path: str, query: str) -> Optional[ApiRule]:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, query):
                    rule.hits += 1
                    return dataclasses.replace(rule)
        return None

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn_id = next(self._conn_ids)
        upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = [None]
        try:
            while True:
                head = await _read_head(reader)
                if head is None or not await self._serve_request(conn_id, head, reader, writer, upstream):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError, asyncio.CancelledError):
            pass  # cancelled: stop() (ends quietly, else asyncio logs every cancelled connection)
        finally:
            if upstream[0] is not None:
                upstream[0][1].transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve_request(self, conn_id: int, head: _Head, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter,
                             upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]) -> bool:
        """One request; False when the connection must end."""
        method, target, _version = ([*head.start_line.split(" ", 2), "", ""])[:3]
        path, _, query = target.partition("?")
        rule = self._match(method, path, query)
        record = self._record(ApiRequest(method, path, query, rule.action if rule else "pass", conn_id, time.time(),
                                         head.get("user-agent") or ""))
        try:
            if rule is not None and rule.action in ("status", "reset"):
                await _copy_body(reader, None, _request_framing(head), None, None)
                if rule.action == "reset":
                    record.error = "reset"
                    return False
                body = rule.answer_body()
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                           *rule.headers.items()]
                reason = _REASONS.get(rule.status, ("Injected", ""))[0]
                writer.write(_Head(f"HTTP/1.1 {rule.status} {reason}", headers).encode() + body)
                await writer.drain()
                record.status = rule.status
                return not head.wants_close()
            return await self._forward(head, method, reader, writer, upstream, rule, record)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            record.error = record.error or type(exc).__name__
            raise
        finally:
            record.ended = time.time()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.upstream
        return await asyncio.open_connection(host, port, ssl=self._upstream_tls, server_hostname=host,
                                             limit=_HEAD_LIMIT)

    async def _forward(self, head: _Head, method: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
                       rule: Optional[ApiRule], record: ApiRequest) -> bool:
        framing = _request_framing(head)
        connection = upstream[0]
        if connection is None:
            try:
                connection = upstream[0] = await self._connect_upstream()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                # The API server is down (restarting): the client's connection goes, as through a load balancer.
                record.error = f"upstream unreachable: {type(exc).__name__}"
                await _copy_body(reader, None, framing, None, None)
                return False
        up_reader, up_writer = connection
        up_writer.write(head.encode())
        await _copy_body(reader, up_writer, framing, None, None)
        response = await _read_head(up_reader)
        if response is None:
            record.error = "upstream closed before answering"
            return False
        record.upstream = True
        status = int(response.start_line.split(" ", 2)[1])
        response_framing = _response_framing(method, status, response)
        if rule is not None and rule.action == "reset_after":
            await _copy_body(up_reader, None, response_framing, None, None)
            record.error = f"reset after the API server answered {status}"
            return False
        record.status = status
        writer.write(response.encode())
        await writer.drain()
        if record.watch and status == 200 and response_framing[0] == "chunked":
            return await self._copy_watch(up_reader, writer, upstream, rule, record)
        await _copy_body(up_reader, writer, response_framing, None, None)
        return not (response_framing[0] == "close" or response.wants_close() or head.wants_close())

    async def _copy_watch(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
                          rule: Optional[ApiRule], record: ApiRequest) -> bool:
        """Passes a watch stream on one event per chunk; a watch rule strikes after its ``after_events``."""
        pending = b""

        async def send(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        async def strike() -> bool:
            assert rule is not None
            if rule.action == "watch_gone":
                await send(gone_event())
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                record.error = f"410 event injected after {record.events} event(s)"
                # The client's stream ended cleanly and its connection stays usable; the upstream one is mid-stream.
                assert upstream[0] is not None
                upstream[0][1].transport.abort()
                upstream[0] = None
                return True
            record.error = f"watch closed after {record.events} event(s)"
            return False

        if rule is not None and rule.action in WATCH_ACTIONS and rule.after_events == 0:
            return await strike()
        while True:
            size_line = await up_reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await up_reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                if pending:
                    await send(pending)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            pending += (await up_reader.readexactly(size + 2))[:-2]
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                await send(line + b"\n")
                record.events += 1
                if rule is not None and rule.action in WATCH_ACTIONS and record.events >= rule.after_events:
                    return await strike()
