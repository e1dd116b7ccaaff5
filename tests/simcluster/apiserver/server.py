"""The HTTPS front end: TLS, authentication, routing, the request log, and the ``ApiServer`` handle."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, TextIO

import yaml

from . import errors, openapi, proxy, watch
from .auth import TokenAuthority, User, forbidden_text
from .certs import make_certs
from .errors import ApiError
from .ops import Api, WriteOptions, WriteResult, now_rfc3339
from .resources import Registry, ResourceDef
from .selectors import make_matcher
from .store import Store
from .tables import accepts_table, to_table

PUBLIC_PATHS = {"/version", "/version/", "/healthz", "/livez", "/readyz"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-simcluster", "gitCommit": "simcluster",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0",
           "compiler": "gc", "platform": "linux/amd64"}


def query_bool(query: dict[str, str], key: str) -> bool:
    """Booleans as Go's strconv.ParseBool reads them (the Python client sends ``True``)."""
    return query.get(key, "") in ("1", "t", "T", "true", "TRUE", "True")


@dataclass
class RequestRecord:
    seq: int
    time: float
    method: str
    path: str
    query: str
    user: str
    status: int
    verb: str
    resource: str
    namespace: str
    name: str
    subresource: str
    dry_run: bool

    @property
    def is_write(self) -> bool:
        """A request that changed (or tried to change) stored state: dry runs and reads are not writes."""
        return self.verb in WRITE_VERBS and not self.dry_run


@dataclass
class Route:
    group: str
    version: str
    rd: Optional[ResourceDef]
    namespace: Optional[str]
    name: str
    subresource: str
    subpath: str


class _Reply(Exception):
    """Raised by handlers to answer with a JSON body (caught by the dispatcher)."""

    def __init__(self, code: int, body: Any, warnings: Optional[list[str]] = None) -> None:
        super().__init__(code)
        self.code = code
        self.body = body
        self.warnings = warnings or []


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, app: ApiServer) -> None:
        self.ctx = ctx
        self.app = app
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's thread, so a slow client cannot stall accept().
        try:
            request.settimeout(30)
            tls = self.ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError):
            with contextlib.suppress(OSError):
                request.close()
            return
        with self.conns_lock:
            self.conns.add(tls)
        try:
            _Handler(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self.conns_lock:
                self.conns.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.app.log_line(format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # every request is logged once, with its user and verb, by ApiServer.record

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    # --- plumbing -------------------------------------------------------------------------------

    _raw_body = b""

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code: int, body: bytes, ctype: str, warnings: Optional[list[str]] = None,
              extra: Optional[list[tuple[str, str]]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for w in warnings or []:
            self.send_header("Warning", '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
        for k, v in extra or []:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, code: int, obj: Any, warnings: Optional[list[str]] = None) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json", warnings)

    def _dispatch(self) -> None:
        app = self.server.app
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        rec = RequestRecord(0, time.time(), self.command, url.path, url.query, "", 0, "", "", "", "", "",
                            query.get("dryRun") == "All")
        # Read the whole body first: an error answered before reading it would desync a keep-alive connection.
        self._raw_body = self._body()
        if self.command == "DELETE" and b'"dryRun"' in self._raw_body:
            with contextlib.suppress(ValueError, AttributeError):  # DeleteOptions may carry dryRun in the body
                rec.dry_run = rec.dry_run or json.loads(self._raw_body).get("dryRun") == ["All"]
        try:
            code = self._handle(url.path, query, rec)
        except ApiError as e:
            code = e.code
            if e.text is not None:
                self._send(e.code, e.text.encode(), "text/plain; charset=utf-8")
            else:
                self._send_json(e.code, e.status())
        except _Reply as r:
            code = r.code
            self._send_json(r.code, r.body, r.warnings)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            code = 499
            self.close_connection = True
        except Exception as e:  # an internal error must answer, not drop the connection
            code = 500
            app.log_line(f"internal error on {self.command} {self.path}: {e!r}")
            import traceback

            app.log_line(traceback.format_exc())
            with contextlib.suppress(OSError):
                self._send_json(500, errors.internal(repr(e)).status())
        rec.status = code
        app.record(rec)

    def _read_body(self) -> bytes:
        return self._raw_body

    # --- request handling --------------------------------------------------------------------------

    def _handle(self, path: str, query: dict[str, str], rec: RequestRecord) -> int:
        app = self.server.app
        if path in PUBLIC_PATHS or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            if path.startswith("/version"):
                self._send_json(200, VERSION)
            else:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            return 200
        user = app.tokens.authenticate(self.headers.get("Authorization"))
        if user is None:
            raise errors.unauthorized()
        rec.user = user.name
        if path.startswith("/_sim/"):
            return self._sim(path, query, user)
        if path in ("/api", "/api/"):
            raise _Reply(200, app.registry.api_versions(f"127.0.0.1:{app.port}"))
        if path in ("/apis", "/apis/"):
            raise _Reply(200, app.registry.api_group_list())
        if path in ("/openapi/v3", "/openapi/v3/"):
            raise _Reply(200, openapi.index(app.registry))
        if path.startswith("/openapi/v3/"):
            doc = openapi.group_version(app.registry, path[len("/openapi/v3/"):])
            if doc is None:
                raise errors.page_not_found()
            raise _Reply(200, doc)
        if path.startswith("/openapi/"):
            raise errors.page_not_found()
        route = self._route(path)
        if route.rd is None:
            if route.name == "" and route.subresource == "" and route.namespace is None:
                if route.version and route.subpath == "":
                    doc = app.registry.resource_list(route.group, route.version)
                    if doc is not None:
                        raise _Reply(200, doc)
                elif route.group and not route.version and route.group in app.registry.groups():
                    raise _Reply(200, app.registry.api_group(route.group))
            known_gv = route.version in app.registry.versions(route.group) or (
                route.group == "" and route.version == "v1")
            if known_gv:
                raise errors.resource_not_found()
            raise errors.page_not_found()
        verb = self._verb(route, query)
        rec.verb, rec.resource = verb, route.rd.key
        rec.namespace, rec.name, rec.subresource = route.namespace or "", route.name, route.subresource
        # Self reviews are open to every authenticated user (system:basic-user), as on a real cluster.
        if not user.allowed(verb) and not route.rd.virtual:
            raise errors.forbidden(route.rd, route.name, forbidden_text(user, verb, route.rd.plural, route.rd.group,
                                                                       route.namespace, route.subresource))
        if query.get("dryRun") not in (None, "", "All"):
            raise errors.bad_request(f'Invalid value: "{query["dryRun"]}": supported values: "All"')
        return self._serve_resource(route, verb, query, user)

    def _route(self, path: str) -> Route:
        app = self.server.app
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
            if version and version != "v1":
                raise errors.page_not_found()
        elif parts[0] == "apis" and len(parts) >= 2:
            group = parts[1]
            version = parts[2] if len(parts) > 2 else ""
            rest = parts[3:]
            if group not in app.registry.groups() or (version and version not in app.registry.versions(group)):
                raise errors.page_not_found()
        else:
            raise errors.page_not_found()
        if not rest:
            return Route(group, version, None, None, "", "", "")
        ns: Optional[str] = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] == "status"):
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        rd = app.registry.lookup(group, version, plural)
        if rd is None:
            raise errors.resource_not_found()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        subpath = "/" + "/".join(rest[3:]) if len(rest) > 3 else ""
        if path.endswith("/") and sub == "proxy" and subpath and not subpath.endswith("/"):
            subpath += "/"
        if ns is not None and not rd.namespaced:
            raise errors.resource_not_found()
        if sub and sub not in {s.name for s in rd.subresources}:
            raise errors.resource_not_found()
        return Route(group, version, rd, ns, name, sub, subpath)

    def _verb(self, route: Route, query: dict[str, str]) -> str:
        m = self.command
        if route.subresource == "proxy":
            return {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete", "OPTIONS": "get"}.get(m, "get")
        if m in ("GET", "HEAD"):
            if route.name:
                return "get"
            return "watch" if query_bool(query, "watch") else "list"
        if m == "POST":
            return "create"
        if m == "PUT":
            return "update"
        if m == "PATCH":
            return "patch"
        if m == "DELETE":
            return "delete" if route.name else "deletecollection"
        raise errors.method_not_allowed()

    def _manager(self, query: dict[str, str]) -> str:
        fm = query.get("fieldManager")
        if fm:
            if len(fm) > 128:
                raise errors.bad_request("fieldManager: Too long: may not be longer than 128 characters")
            return fm
        # The real server derives the Update manager from the User-Agent's first segment.
        return (self.headers.get("User-Agent") or "unknown").split("/", 1)[0]

    def _parse_body(self) -> Any:
        raw = self._read_body()
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if raw and ctype not in ("application/json", "application/yaml", "application/apply-patch+yaml", "*/*"):
            # Protobuf/CBOR bodies: 415 makes client-go (kubectl create, auth can-i) fall back to JSON.
            raise errors.unsupported_media_type(ctype, ["application/json", "application/yaml"])
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(raw.decode()) if raw else None
            return json.loads(raw) if raw else None
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the object provided is unrecognized: {e}") from None

    def _serve_resource(self, route: Route, verb: str, query: dict[str, str], user: User) -> int:
        app = self.server.app
        rd = route.rd
        assert rd is not None
        ns = route.namespace or ""
        dry = query.get("dryRun") == "All"
        if rd.namespaced and route.namespace is None and verb not in ("list", "watch") and not rd.virtual:
            raise errors.method_not_allowed() if verb != "create" else errors.resource_not_found()
        if route.subresource == "proxy":
            return self._proxy(route, query)
        if rd.virtual:
            if verb != "create":
                raise errors.method_not_allowed()
            raise _Reply(201, self._review(rd, self._parse_body(), user))
        if verb in ("list", "watch"):
            matcher = make_matcher(query.get("labelSelector"), query.get("fieldSelector"), rd.plural)
            if verb == "watch":
                return self._watch(rd, route.namespace, matcher, query)
            limit = int(query.get("limit") or 0)
            lst = app.api.list_objects(rd, route.namespace, matcher, limit, query.get("continue", ""))
            if accepts_table(self.headers.get("Accept", "")):
                raise _Reply(200, to_table(rd, lst, route.namespace is None and rd.namespaced))
            raise _Reply(200, lst)
        if verb == "get":
            obj = app.api.get(rd, ns, route.name)
            if accepts_table(self.headers.get("Accept", "")) and not route.subresource:
                raise _Reply(200, to_table(rd, {"kind": rd.list_kind, "apiVersion": rd.api_version,
                                                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                                "items": [obj]}, False))
            raise _Reply(200, obj)
        if verb == "create":
            body = self._parse_body()
            if route.subresource == "token":
                raise _Reply(201, self._token_request(ns, route.name, body))
            if route.subresource == "binding":
                raise _Reply(201, self._bind(ns, route.name, body, dry))
            if route.name:
                raise errors.method_not_allowed()
            res = app.api.create(rd, ns, body, WriteOptions(self._manager(query), dry))
            raise _Reply(res.code, res.obj, res.warnings)
        if verb == "update":
            body = self._parse_body()
            res = app.api.update(rd, ns, route.name, body, WriteOptions(self._manager(query), dry, route.subresource))
            raise _Reply(res.code, res.obj, res.warnings)
        if verb == "patch":
            raw = self._read_body()
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            is_apply = ctype == "application/apply-patch+yaml"
            force = query_bool(query, "force")
            if force and not is_apply:
                raise errors.ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: '
                                                      "may not be specified for non-apply patch", {})
            manager = query.get("fieldManager", "") if is_apply else self._manager(query)
            res = app.api.patch(rd, ns, route.name, ctype, raw,
                                WriteOptions(manager, dry, route.subresource, force))
            raise _Reply(res.code, res.obj, res.warnings)
        if verb == "delete":
            options = self._delete_options(query)
            res = app.api.delete(rd, ns, route.name, options, dry or options.get("dryRun") == ["All"])
            raise _Reply(res.code, res.obj)
        if verb == "deletecollection":
            return self._delete_collection(rd, route.namespace, query, dry)
        raise errors.method_not_allowed()

    def _delete_options(self, query: dict[str, str]) -> dict[str, Any]:
        body = self._parse_body() or {}
        if not isinstance(body, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        if "gracePeriodSeconds" in query:
            body["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if "propagationPolicy" in query:
            body["propagationPolicy"] = query["propagationPolicy"]
        pol = body.get("propagationPolicy")
        if pol not in (None, "Background", "Foreground", "Orphan"):
            raise errors.bad_request(f'Unsupported value: "{pol}": supported values: "Foreground", "Background", '
                                     '"Orphan", "nil"')
        return body

    def _delete_collection(self, rd: ResourceDef, ns: Optional[str], query: dict[str, str], dry: bool) -> int:
        app = self.server.app
        options = self._delete_options(query)
        matcher = make_matcher(query.get("labelSelector"), query.get("fieldSelector"), rd.plural)
        lst = app.api.list_objects(rd, ns, matcher)
        for o in lst["items"]:
            with contextlib.suppress(ApiError):
                app.api.delete(rd, o["metadata"].get("namespace", ""), o["metadata"]["name"], options, dry)
        raise _Reply(200, {"kind": rd.list_kind, "apiVersion": rd.api_version, "metadata": {}, "items": []})

    # --- special endpoints ---------------------------------------------------------------------------

    def _token_request(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        app = self.server.app
        sa_rd = app.registry.by_key("serviceaccounts")
        sa = app.api.get(sa_rd, ns, name)
        spec = (body or {}).get("spec") or {}
        audiences = spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]
        exp_s = int(spec.get("expirationSeconds") or 3600)
        if exp_s < 600:
            raise errors.invalid(sa_rd, name, [errors.FieldError("Invalid", "spec.expirationSeconds",
                                                                 "may not specify a duration less than 10 minutes",
                                                                 exp_s, True)])
        token, exp = app.tokens.issue_service_account_token(ns, name, sa["metadata"]["uid"], audiences, exp_s,
                                                            app.url)
        exp_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()},
                "spec": {"audiences": audiences, "expirationSeconds": exp_s, "boundObjectRef": spec.get(
                    "boundObjectRef")},
                "status": {"token": token, "expirationTimestamp": exp_text}}

    def _bind(self, ns: str, name: str, body: Any, dry: bool) -> dict[str, Any]:
        app = self.server.app
        rd = app.registry.by_key("pods")
        target = ((body or {}).get("target") or {}).get("name", "")
        with app.api.write_lock:
            pod = app.api.get(rd, ns, name)
            current = (pod.get("spec") or {}).get("nodeName")
            if current:
                raise errors.conflict_message(rd, name, f'pod {name} is already assigned to node "{current}"')
            if not dry:
                pod["spec"]["nodeName"] = target
                app.store.put(rd.key, pod, "MODIFIED")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _review(self, rd: ResourceDef, body: Any, user: User) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        if rd.kind == "SelfSubjectReview":
            return {"kind": "SelfSubjectReview", "apiVersion": rd.api_version,
                    "metadata": {"creationTimestamp": None},
                    "status": {"userInfo": {"username": user.name, "groups": list(user.groups)}}}
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        allowed = user.allowed(attrs.get("verb", ""))
        status: dict[str, Any] = {"allowed": allowed}
        if allowed:
            status["reason"] = "simcluster: allowed"
        out = dict(body)
        out["status"] = status
        out.setdefault("metadata", {})
        out["kind"], out["apiVersion"] = rd.kind, rd.api_version
        return out

    def _sim(self, path: str, query: dict[str, str], user: User) -> int:
        app = self.server.app
        if user.name != "admin":
            raise errors.forbidden(None, "", f'User "{user.name}" cannot get path "{path}"')
        if path == "/_sim/requests":
            if self.command == "DELETE":
                app.clear_requests()
                raise _Reply(200, {"requests": []})
            since = int(query.get("since") or 0)
            raise _Reply(200, {"requests": [asdict(r) | {"is_write": r.is_write} for r in app.requests
                                            if r.seq > since]})
        raise errors.page_not_found()

    def _proxy(self, route: Route, query: dict[str, str]) -> int:
        app = self.server.app
        if route.rd is None or route.rd.plural != "services" or route.namespace is None:
            raise errors.resource_not_found()
        body = self._read_body()
        scheme, port = proxy.resolve(app.store, route.namespace, route.name)
        target = route.subpath or "/"
        qs = urllib.parse.urlsplit(self.path).query
        if qs:
            target += "?" + qs
        headers = [(k, v) for k, v in self.headers.items()]
        resp = proxy.forward(scheme, port, self.command, target, headers, body)
        ctype = next((v for k, v in resp.headers if k.lower() == "content-type"), "application/octet-stream")
        extra = [(k, v) for k, v in resp.headers if k.lower() not in ("content-type", "date", "server")]
        self._send(resp.status, resp.body, ctype, extra=extra)
        return resp.status

    def _client_gone(self) -> bool:
        """A watch client never sends anything after its request: a readable socket means it closed (or sent a
        TLS close_notify), so the stream can end instead of holding a thread until its timeout."""
        try:
            return bool(select.select([self.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _watch(self, rd: ResourceDef, ns: Optional[str], matcher: Any, query: dict[str, str]) -> int:
        app = self.server.app
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query_bool(query, "allowWatchBookmarks")
        send_initial = query_bool(query, "sendInitialEvents")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        events = watch.stream(app.store, rd, ns, matcher, query.get("resourceVersion"), timeout, bookmarks,
                              send_initial or None, lambda: app.is_stopping() or self._client_gone(),
                              app.bookmark_interval_s)
        try:
            for ev in events:
                data = json.dumps(ev, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            events.close()
        return 200


class ApiServer:
    """The simulated API server. ``start()`` serves in background threads; ``stop()`` ends them all."""

    def __init__(self, workdir: Path | str, port: int = 0, name: str = "sim", watch_window: int = 2000,
                 grace_slack_s: float = 0.0, bookmark_interval_s: float = 5.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._want_port = port
        self.port = 0
        self.registry = Registry()
        self.store = Store(window=watch_window)
        self.tokens = TokenAuthority()
        self.bookmark_interval_s = bookmark_interval_s
        self._grace_slack_s = grace_slack_s
        self._requests: list[RequestRecord] = []
        self._req_lock = threading.Lock()
        self._seq = 0
        self._stopping = threading.Event()
        self._httpd: Optional[_TLSServer] = None
        self._thread: Optional[threading.Thread] = None
        self._log: Optional[TextIO] = None
        self.certs = make_certs(self.workdir / "pki", name)
        self.api = Api(self.store, self.registry, self.certs.ca_cert.read_text(), grace_slack_s)

    # --- public handle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.certs.ca_cert

    @property
    def admin_token(self) -> str:
        return self.tokens.admin_token

    @property
    def viewer_token(self) -> str:
        return self.tokens.viewer_token

    @property
    def requests(self) -> list[RequestRecord]:
        with self._req_lock:
            return list(self._requests)

    def writes(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.is_write]

    def clear_requests(self) -> None:
        with self._req_lock:
            self._requests.clear()

    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> ApiServer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        self._log = (self.workdir / "apiserver.log").open("a", encoding="utf-8")
        self._httpd = _TLSServer(("127.0.0.1", self._want_port), ctx, self)
        self.port = int(self._httpd.server_address[1])
        self.api.bootstrap()
        self.api.start_reaper()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sim-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self.store.close()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()  # joins the connection threads (block_on_close)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.api.stop()
        self._httpd = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_line(self, line: str) -> None:
        if self._log is not None:
            with contextlib.suppress(ValueError):
                self._log.write(line.rstrip("\n") + "\n")
                self._log.flush()

    def record(self, rec: RequestRecord) -> None:
        with self._req_lock:
            self._seq += 1
            rec.seq = self._seq
            self._requests.append(rec)
            if len(self._requests) > 100_000:
                del self._requests[:50_000]
        self.log_line(f"{rec.method} {rec.path}?{rec.query} user={rec.user} -> {rec.status}")

    def kubeconfig(self, user: str = "admin", namespace: str = "default") -> dict[str, Any]:
        ca_data = base64.b64encode(self.certs.ca_cert.read_bytes()).decode()
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": self.name, "cluster": {"server": self.url, "certificate-authority-data": ca_data}}],
            "users": [{"name": f"{self.name}-{user}", "user": {"token": self.tokens.token_for(user)}}],
            "contexts": [{"name": f"{self.name}-{user}",
                          "context": {"cluster": self.name, "user": f"{self.name}-{user}", "namespace": namespace}}],
            "current-context": f"{self.name}-{user}",
        }

    def write_kubeconfig(self, path: Path | str, user: str = "admin") -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(self.kubeconfig(user), sort_keys=False))
        p.chmod(0o600)
        return p


__all__ = ["ApiServer", "RequestRecord", "WriteResult"]
