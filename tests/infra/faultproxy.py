"""An HTTP/1.1 reverse proxy with injected faults, latency and bandwidth limits, running in a background thread.

It sits between containerd (or any registry client) and a registry. Bodies are streamed, never buffered whole;
``Range`` requests and the ``?ns=`` query containerd appends pass through untouched. Rules are matched in order
against every request (method + regex on the path without its query); the first rule still having ``times`` left
(or a ``then`` action for after them) decides what happens to that request. A second listener (``control_url``)
lets other processes read and change the rules over HTTP (see ``ProxyClient``).

It also serves as a client's forward proxy (``HTTP_PROXY``: absolute-form request targets, sent upstream in origin
form; CONNECT is refused with 405), which is how CRI-O nodes reach it (``infra.crio``), and it answers a TLS
ClientHello with a 400 at once, as a plain-HTTP Go server does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

from infra._proxybase import ProxyBase, RecordBase

ACTIONS = frozenset(
    {"stall_accept", "stall_headers", "stall_mid_body", "close_mid_body", "close_no_body", "status", "slow", "hold"}
)
# A status rule's default body: the OCI distribution spec's error for that status, as a registry sends it (CRI-O
# words its errors from the body, containerd from the status line); other statuses say who answered.
_REGISTRY_ERRORS = {
    401: ("UNAUTHORIZED", "authentication required"),
    403: ("DENIED", "requested access to the resource is denied"),
    404: ("MANIFEST_UNKNOWN", "manifest unknown"),
    429: ("TOOMANYREQUESTS", "too many requests"),
}
# How a client words a refused pull after a ``status=401`` rule: containerd quotes the status line ("401
# Unauthorized"); CRI-O (containers/image) names the body's error code, "...: unauthorized" (without a
# WWW-Authenticate challenge it does not quote the message; a real registry's challenge makes it "authentication
# required").
PROXY_401 = re.compile(r'401 Unauthorized|authentication required|: unauthorized(?:$|[ "])')
_READ_SIZE = 64 << 10
_HEAD_LIMIT = 64 << 10
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class Rule:
    """One fault. ``path`` is a regex searched in the request path (query excluded); ``method`` None = any.

    ``times``: the rule applies to its first N matching requests (None = always). ``then``: what the rule does to
    every matching request after those N (None = it stops matching), e.g. ``Rule(path="/manifests/",
    status=401, times=2, then="stall_headers")`` answers 401 twice, then stalls: with containerd's two host entries
    one PullImage is refused and the next one hangs until its deadline, an order no timing can change.
    ``stall_accept`` rules are decided when a connection is accepted, before any request is read, so their
    ``method``/``path`` must stay unset (and they take no ``then``). ``hold``: the request waits, unanswered,
    until ``release_stalls()`` and then goes upstream as usual (a gate: the test decides when it passes).
    ``after_bytes``: body bytes sent before ``stall_mid_body``/``close_mid_body`` strike (default: half of the
    body, at most 256 KiB). ``status``/``body``/``headers``: the answer of a ``status`` rule. ``bandwidth_bps``:
    the rate of a ``slow`` response, in bytes per second.
    """

    path: str = ""
    action: str = "status"
    method: Optional[str] = None
    times: Optional[int] = None
    status: int = 500
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    bandwidth_bps: Optional[int] = None
    after_bytes: Optional[int] = None
    then: Optional[str] = None
    id: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        for action in (self.action, self.then):
            if action is not None and action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        if "slow" in (self.action, self.then) and not self.bandwidth_bps:
            raise ValueError("a slow rule needs bandwidth_bps")
        if self.action == "stall_accept" and (self.path or self.method):
            raise ValueError("stall_accept is decided at accept time: leave path and method unset")
        if self.then is not None and (self.times is None or "stall_accept" in (self.action, self.then)):
            raise ValueError("then needs times, and neither action may be stall_accept")
        re.compile(self.path)

    @property
    def current_action(self) -> str:
        """The action for the next matching request: ``action`` for the first ``times``, then ``then``."""
        if self.then is not None and self.times is not None and self.hits >= self.times:
            return self.then
        return self.action

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times and self.then is None:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        known = {f.name for f in dataclasses.fields(cls)} - {"id", "hits"}
        unknown = set(data) - known - {"id", "hits"}
        if unknown:
            raise ValueError(f"unknown rule fields {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RequestRecord(RecordBase):
    """One proxied request. ``status`` is what the client got (None: no answer); ``bytes`` = response body bytes."""

    range: Optional[str] = None
    status: Optional[int] = None
    bytes: int = 0
    ended: Optional[float] = None
    error: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Head:
    start_line: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> Optional[str]:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def encode(self) -> bytes:
        lines = [self.start_line, *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def wants_close(self) -> bool:
        return "close" in (self.get("connection") or "").lower() or self.start_line.endswith("HTTP/1.0")


class _TokenBucket:
    """Per-connection rate limit; a small burst keeps writes smooth without letting a whole blob through at once."""

    def __init__(self, rate_bps: int) -> None:
        self.rate = float(rate_bps)
        self.burst = max(16 << 10, self.rate / 20)
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self, amount: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= amount
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


def _connection_bucket(bucket: Optional[_TokenBucket], rate_bps: Optional[int]) -> Optional[_TokenBucket]:
    if not rate_bps:
        return None
    if bucket is None:
        return _TokenBucket(rate_bps)
    if bucket.rate != rate_bps:
        bucket.rate = float(rate_bps)
        bucket.burst = max(16 << 10, bucket.rate / 20)
    return bucket


class _ClientGone(Exception):
    """The downstream client closed its connection."""


_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello


async def _read_head(reader: asyncio.StreamReader, first: bytes = b"") -> Optional[_Head]:
    """The next request or response head; ``first``: bytes of it the caller already read."""
    try:
        raw = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise ValueError("header block too large") from exc
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return _Head(lines[0], headers)


class FaultProxy(ProxyBase[Rule, RequestRecord]):
    """``with FaultProxy(upstream="127.0.0.1:PORT", latency_s=0.03, bandwidth_bps=25 << 20) as px: ...``

    Rules and the request log: ``add_rule``, ``remove_rule``, ``clear_rules``, ``rules``, ``requests``,
    ``clear_requests`` (``infra._proxybase.ProxyBase``).
    """

    def __init__(self, upstream: str, latency_s: float = 0.0, bandwidth_bps: Optional[int] = None) -> None:
        super().__init__()
        self.upstream = upstream
        self.latency_s = latency_s
        self.bandwidth_bps = bandwidth_bps
        self.port = 0
        self.control_port = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._release: Optional[asyncio.Event] = None

    # ---- public API (any thread) ----------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}/_proxy/"

    def configure(self, latency_s: Optional[float] = None, bandwidth_bps: Optional[int] = -1) -> None:
        """Change latency and/or the per-connection bandwidth (None = unlimited; -1 = leave as is)."""
        if latency_s is not None:
            self.latency_s = latency_s
        if bandwidth_bps != -1:
            self.bandwidth_bps = bandwidth_bps

    def release_stalls(self) -> None:
        """Ends every connection currently held by a stall rule and lets every held (``hold``) request go on upstream;
        the rules themselves stay."""
        self._in_loop(self._release_now())

    def _thread_name(self) -> str:
        return f"faultproxy->{self.upstream}"

    # ---- loop side --------------------------------------------------------------------------------
    async def _start_servers(self) -> None:
        self._release = asyncio.Event()
        proxy = await asyncio.start_server(self._tracked(self._serve_client), "127.0.0.1", 0, limit=_HEAD_LIMIT)
        control = await asyncio.start_server(self._tracked(self._serve_control), "127.0.0.1", 0, limit=_HEAD_LIMIT)
        self._servers = [proxy, control]
        self.port = proxy.sockets[0].getsockname()[1]
        self.control_port = control.sockets[0].getsockname()[1]

    def _tracked(self, handler: Any) -> Any:
        async def wrapper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, _ClientGone, ValueError):
                pass
            finally:
                self._writers.discard(writer)
                self._tasks.discard(task)
                writer.transport.abort()

        return wrapper

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _release_now(self) -> None:
        if self._release is not None:
            self._release.set()
        self._release = asyncio.Event()

    async def _gate(self) -> None:
        """Waits for release_stalls() (or stop()); the request itself is left alone, to be forwarded after."""
        assert self._release is not None
        await self._release.wait()

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        """Keeps a connection open, answering nothing, until the client leaves, release_stalls() or stop()."""
        assert self._release is not None
        release = self._release

        async def until_eof() -> None:
            while await reader.read(_READ_SIZE):
                pass

        waiters = [asyncio.ensure_future(until_eof()), asyncio.ensure_future(release.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _match(self, method: str, path: str, at_accept: bool) -> Optional[Rule]:
        """A copy of the deciding rule, its ``action`` being the one that applies to this request."""
        with self._lock:
            for rule in self._rules:
                if (rule.action == "stall_accept") != at_accept:
                    continue
                if rule.matches(method, path):
                    action = rule.current_action
                    rule.hits += 1
                    return dataclasses.replace(rule, action=action, then=None, times=None)
        return None

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._conn_ids)
        if self._match("", "", at_accept=True) is not None:
            self._record(RequestRecord("", "", "", "stall_accept", conn_id, time.time()))
            await self._hold(reader)
            return
        first = await reader.read(1)
        if not first:
            return
        if first[0] == _TLS_HANDSHAKE:
            await self._refuse_tls(conn_id, writer)
            return
        bucket: Optional[_TokenBucket] = None
        upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = [None]
        try:
            while True:
                head = await _read_head(reader, first)
                first = b""
                if head is None:
                    return
                # re-read per request: configure() also applies to kept-alive connections
                bucket = _connection_bucket(bucket, self.bandwidth_bps)
                keep_going = await self._serve_request(conn_id, head, reader, writer, upstream, bucket)
                if not keep_going:
                    return
        finally:
            if upstream[0] is not None:
                upstream[0][1].transport.abort()

    async def _refuse_tls(self, conn_id: int, writer: asyncio.StreamWriter) -> None:
        """A TLS ClientHello on this plain-HTTP port: a 400 at once, as Go's net/http answers (it reads the
        hello as a malformed request line). Clients that try https first for an insecure registry
        (containers/image, i.e. CRI-O, podman, skopeo) then fall back to http at once; waiting for a header block
        that never comes would cost every pull their 10 s TLS handshake timeout instead."""
        self._record(RequestRecord("", "", "", "tls_refused", conn_id, time.time(), status=400))
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    async def _serve_request(
        self, conn_id: int, head: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
        bucket: Optional[_TokenBucket],
    ) -> bool:
        method, target, version = ([*head.start_line.split(" ", 2), "", ""])[:3]
        if method.upper() == "CONNECT":  # used as a forward proxy (HTTP_PROXY) for https: not offered
            self._record(RequestRecord(method, target, "", "connect_refused", conn_id, time.time(), status=405))
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        target = _origin_form(target)
        head = _Head(f"{method} {target} {version}", head.headers)
        path, _, query = target.partition("?")
        rule = self._match(method, path, at_accept=False)
        action = rule.action if rule else "pass"
        record = self._record(RequestRecord(method, path, query, action, conn_id, time.time(), head.get("range")))
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if rule is not None and rule.action == "stall_headers":
                await self._hold(reader)
                return False
            if rule is not None and rule.action == "hold":
                await self._gate()
                rule = None  # released: on upstream as any other request
            if rule is not None and rule.action == "status":
                await _copy_body(reader, None, _request_framing(head), None, None)
                await self._answer_status(writer, rule, record, send_body=method.upper() != "HEAD")
                return not head.wants_close()
            return await self._forward(head, method, reader, writer, upstream, bucket, rule, record)
        except (ConnectionError, asyncio.IncompleteReadError, _ClientGone) as exc:
            record.error = type(exc).__name__
            raise
        finally:
            record.ended = time.time()

    async def _answer_status(
        self, writer: asyncio.StreamWriter, rule: Rule, record: RequestRecord, send_body: bool = True
    ) -> None:
        """The rule's status answer; a HEAD answer has the body's headers but no body (else the bytes would be
        read as the start of the next response on a kept-alive connection)."""
        code, message = _REGISTRY_ERRORS.get(rule.status, ("PROXY_INJECTED", f"fault proxy answered {rule.status}"))
        body = (rule.body or json.dumps({"errors": [{"code": code, "message": message}]})).encode()
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}.get(
            rule.status, "Injected")
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *rule.headers.items()]
        if not send_body:
            body = b""
        writer.write(_Head(f"HTTP/1.1 {rule.status} {reason}", headers).encode() + body)
        await writer.drain()
        record.status = rule.status
        record.bytes = len(body)

    async def _upstream_exchange(
        self, head: _Head, reader: asyncio.StreamReader,
        upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    ) -> Optional[_Head]:
        """Sends the request upstream (reconnecting once when a kept-alive upstream connection went away)."""
        framing = _request_framing(head)
        for attempt in range(2):
            connection = upstream[0]
            if connection is None:
                host, _, port = self.upstream.rpartition(":")
                try:
                    connection = await asyncio.open_connection(host, int(port), limit=_HEAD_LIMIT)
                except OSError:
                    return None  # upstream down: the client gets a 502
                upstream[0] = connection
            up_reader, up_writer = connection
            try:
                up_writer.write(head.encode())
                await _copy_body(reader, up_writer, framing, None, None)
                response = await _read_head(up_reader)
            except ConnectionError:
                response = None
            if response is not None:
                return response
            up_writer.transport.abort()
            upstream[0] = None
            if framing != ("length", 0) or attempt:
                break  # a request body cannot be replayed
        return None

    async def _forward(
        self, head: _Head, method: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        upstream: list[Optional[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
        bucket: Optional[_TokenBucket], rule: Optional[Rule], record: RequestRecord,
    ) -> bool:
        response = await self._upstream_exchange(head, reader, upstream)
        if response is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            record.status = 502
            return False
        record.status = int(response.start_line.split(" ", 2)[1])
        framing = _response_framing(method, record.status, response)
        writer.write(response.encode())
        await writer.drain()
        assert upstream[0] is not None
        up_reader = upstream[0][0]
        if rule is not None and rule.action == "close_no_body":
            return False
        if rule is not None and rule.action in ("stall_mid_body", "close_mid_body"):
            limit = rule.after_bytes if rule.after_bytes is not None else _default_fault_offset(framing)
            record.bytes = await _copy_body(up_reader, writer, framing, bucket, limit)
            if rule.action == "stall_mid_body":
                await self._hold(reader)
            return False
        if rule is not None and rule.action == "slow":
            assert rule.bandwidth_bps is not None
            bucket = _TokenBucket(rule.bandwidth_bps)
        record.bytes = await _copy_body(up_reader, writer, framing, bucket, None)
        return not (framing[0] == "close" or response.wants_close() or head.wants_close())

    # ---- control endpoint -------------------------------------------------------------------------
    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        if head is None:
            return
        length = int(head.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        method, target = ([*head.start_line.split(" ", 2), ""])[:2]
        try:
            status, payload = self._control(method, target.partition("?")[0], body)
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = 400, {"error": str(exc)}
        data = json.dumps(payload).encode()
        writer.write(_Head(f"HTTP/1.1 {status} X", [("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(data))),
                                                     ("Connection", "close")]).encode() + data)
        await writer.drain()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        route = path.rstrip("/")
        if route == "/_proxy/rules" and method == "GET":
            return 200, [r.to_json() for r in self.rules]
        if route == "/_proxy/rules" and method == "POST":
            data = json.loads(body or b"null")
            items = data if isinstance(data, list) else [data]
            return 200, [self.add_rule(Rule.from_json(item)).to_json() for item in items]
        if route == "/_proxy/rules" and method == "DELETE":
            self.clear_rules()
            return 200, []
        match = re.fullmatch(r"/_proxy/rules/(\d+)", route)
        if match and method == "DELETE":
            found = self.remove_rule(int(match.group(1)))
            return (200 if found else 404), {"removed": found}
        if route == "/_proxy/requests" and method == "GET":
            return 200, [r.to_json() for r in self.requests]
        if route == "/_proxy/requests" and method == "DELETE":
            self.clear_requests()
            return 200, []
        if route == "/_proxy/config" and method == "GET":
            return 200, {"latency_s": self.latency_s, "bandwidth_bps": self.bandwidth_bps, "upstream": self.upstream}
        if route == "/_proxy/config" and method == "POST":
            data = json.loads(body or b"{}")
            self.configure(data.get("latency_s"), data.get("bandwidth_bps", -1))
            return 200, {"latency_s": self.latency_s, "bandwidth_bps": self.bandwidth_bps}
        if route == "/_proxy/release" and method == "POST":
            if self._release is not None:
                self._release.set()
            self._release = asyncio.Event()
            return 200, {}
        return 404, {"error": f"no route {method} {path}"}


def _origin_form(target: str) -> str:
    """``http://registry.test:5000/v2/x?y`` (a client using the proxy as HTTP_PROXY) -> ``/v2/x?y``; the Host
    header already names the registry, and every request goes to the one upstream."""
    match = re.match(r"(?i)https?://[^/?]*", target)
    if match is None:
        return target
    rest = target[match.end():]
    return rest if rest.startswith("/") else "/" + rest


# ---- body framing and copying -------------------------------------------------------------------------
_Framing = tuple[str, int]  # ("length", n) | ("chunked", 0) | ("close", 0)


def _request_framing(head: _Head) -> _Framing:
    if "chunked" in (head.get("transfer-encoding") or "").lower():
        return ("chunked", 0)
    return ("length", int(head.get("content-length") or 0))


def _response_framing(method: str, status: int, head: _Head) -> _Framing:
    if method.upper() == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
        return ("length", 0)
    if "chunked" in (head.get("transfer-encoding") or "").lower():
        return ("chunked", 0)
    length = head.get("content-length")
    return ("length", int(length)) if length is not None else ("close", 0)


def _default_fault_offset(framing: _Framing) -> int:
    if framing[0] == "length":
        return min(framing[1] // 2, 256 << 10)
    return 32 << 10


async def _send(writer: Optional[asyncio.StreamWriter], data: bytes, bucket: Optional[_TokenBucket]) -> None:
    if writer is None or not data:
        return
    if bucket is not None:
        await bucket.take(len(data))
    if writer.is_closing():
        raise _ClientGone()
    writer.write(data)
    await writer.drain()


async def _copy_body(
    src: asyncio.StreamReader, dst: Optional[asyncio.StreamWriter], framing: _Framing,
    bucket: Optional[_TokenBucket], limit: Optional[int],
) -> int:
    """Streams one body from src to dst (None = discard); stops after ``limit`` bytes. Returns bytes sent."""
    kind, length = framing
    if kind == "chunked":
        return await _copy_chunked(src, dst, bucket, limit)
    sent = 0
    remaining = length if kind == "length" else None
    while remaining is None or remaining > 0:
        want = _READ_SIZE if remaining is None else min(_READ_SIZE, remaining)
        if limit is not None:
            want = min(want, limit - sent)
            if want <= 0:
                break
        data = await src.read(want)
        if not data:
            if remaining is not None:
                raise asyncio.IncompleteReadError(b"", remaining)
            break
        await _send(dst, data, bucket)
        sent += len(data)
        if remaining is not None:
            remaining -= len(data)
    return sent


async def _copy_chunked(
    src: asyncio.StreamReader, dst: Optional[asyncio.StreamWriter], bucket: Optional[_TokenBucket],
    limit: Optional[int],
) -> int:
    """Copies a chunked body verbatim (framing included); ``limit`` counts raw bytes."""
    sent = 0
    while True:
        size_line = await src.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            trailer = size_line
            while True:
                line = await src.readuntil(b"\r\n")
                trailer += line
                if line == b"\r\n":
                    break
            await _send(dst, trailer, bucket)
            return sent + len(trailer)
        chunk = size_line + await src.readexactly(size + 2)
        if limit is not None and sent + len(chunk) > limit:
            await _send(dst, chunk[: max(0, limit - sent)], bucket)
            return limit
        await _send(dst, chunk, bucket)
        sent += len(chunk)


class ProxyClient:
    """Drives a FaultProxy of another process through its control URL."""

    def __init__(self, control_url: str, timeout_s: float = 10) -> None:
        self.base = control_url.rstrip("/") + "/"
        self.timeout_s = timeout_s

    def _call(self, method: str, route: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base + route, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read() or b"null")

    def add_rule(self, rule: Rule) -> dict[str, Any]:
        result: list[dict[str, Any]] = self._call("POST", "rules", rule.to_json())
        return result[0]

    def rules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "rules")
        return result

    def clear_rules(self) -> None:
        self._call("DELETE", "rules")

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "requests")
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def configure(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "config", settings)
        return result

    def release_stalls(self) -> None:
        self._call("POST", "release", {})
