# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin wrapper over the kubernetes client: discovery, get/list/apply/delete/patch/watch, retries and error translation.

Requests go through ``DynamicClient.request`` (stable across client versions: query parameters, content types,
authentication). Discovery reads only the group-version documents the objects need, so nothing is cached on disk
and an unknown kind is reported before anything is written. Every failure leaves here as a typed
``PrefetchError`` whose message names the object and the cause.

Every request is retried by one policy, ``retry_decision`` (pure; DESIGN.md "API faults and retries"): only where a
second attempt is safe and within the module's own deadline. urllib3's own retries are off (``_auth`` sets
``retries = 0``): it would send a DELETE again after a connection reset, when the first may have been carried out.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ClusterUnreachableError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PrefetchError,
    UnauthorizedError,
)

try:
    import urllib3
except ImportError:  # reported by the modules through _auth.HAS_KUBERNETES
    HAS_URLLIB3 = False
else:
    HAS_URLLIB3 = True

# The kubernetes client is imported with the first request, not with this file: the controller imports this file too
# (the rollout action plugin -> _progress -> _rollout), where nothing talks to a cluster, and importing the client
# costs about half a second of CPU there (docs/performance.md).
_CLIENT_CLASSES: dict[str, Any] = {}


def _client_classes() -> tuple[Any, Any]:
    """(ApiException, DynamicClient) of the kubernetes client, imported once."""
    if not _CLIENT_CLASSES:
        from kubernetes.client.rest import ApiException
        from kubernetes.dynamic import DynamicClient

        _CLIENT_CLASSES.update(ApiException=ApiException, DynamicClient=DynamicClient)
    return _CLIENT_CLASSES["ApiException"], _CLIENT_CLASSES["DynamicClient"]


def __getattr__(name: str) -> Any:
    """``_cluster.ApiException`` / ``_cluster.DynamicClient`` as before the import became lazy (tests patch them)."""
    if name in ("ApiException", "DynamicClient"):
        api_exception, dynamic_client = _client_classes()
        return api_exception if name == "ApiException" else dynamic_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FIELD_MANAGER = "stackrox.prefetch"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
_REQUEST_TIMEOUT = (15, 120)  # (connect, read) seconds for every call but watches
_WATCH_READ_GRACE = 15  # the read timeout of a watch exceeds its server-side timeoutSeconds by this much
_MESSAGE_LIMIT = 400
# An attempt made when the deadline is (nearly) reached still gets this many seconds to connect and to read, so a
# task ends at the latest this long (twice: connect, then read) after its deadline.
LAST_ATTEMPT_SECONDS = 5
DEFAULT_RETRY_BUDGET = 60.0  # seconds, for a Cluster made without a deadline


@dataclass(frozen=True)
class ResourceInfo:
    """What discovery says about one kind: the URL plural and whether it lives in a namespace."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified_plural(self) -> str:
        """``daemonsets.apps`` / ``pods``: the name the API server uses in its own messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


class WatchExpiredError(Exception):
    """HTTP 410 Gone: the resourceVersion is too old; the caller re-lists and watches again."""


class WatchInterruptedError(ClusterUnreachableError):
    """The connection of a watch broke mid-stream; the caller watches again from the last resourceVersion."""


# --- retry policy (pure) -------------------------------------------------------------------------------------------

READ_VERBS = frozenset({"get", "list", "watch", "discover"})
# Server-side apply sends the whole intent, and a merge patch here sets fixed values: sending either twice leaves
# the object as sending it once does.
IDEMPOTENT_WRITE_VERBS = frozenset({"apply", "patch"})
WRITE_VERBS = frozenset({"apply", "patch", "delete", "create"})
SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
SERVER_ERROR_ATTEMPTS = 4  # attempts in all of an idempotent request the server keeps failing (5xx)
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0
MIN_DELAY = 0.1  # floor of every pause, also for a Retry-After of 0


@dataclass(frozen=True)
class RetryDecision:
    """``retry``: attempt again after ``delay`` seconds. ``note``: why not, for the final error ("" = nothing to
    add)."""

    retry: bool
    delay: float = 0.0
    note: str = ""


def parse_retry_after(headers: Optional[Mapping[str, Any]], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not headers:
        return None
    value = None
    for key, item in headers.items():
        if str(key).lower() == "retry-after":
            value = str(item).strip()
            break
    if not value:
        return None
    if re.fullmatch(r"\d+", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int) -> float:
    """0.5, 1, 2, 4, 8, 8, ... seconds after attempt 1, 2, 3, ..."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1))


def retry_decision(
    verb: str,
    status: int,
    headers: Optional[Mapping[str, Any]],
    attempt: int,
    remaining: float,
    sent: bool = True,
    reached: bool = True,
    permanent: bool = False,
) -> RetryDecision:
    """Whether to send a failed request again, and when.

    ``status``: the HTTP status of the answer, 0 when there was none. ``sent``: False when the connection never
    opened (refused, TLS handshake cut), so the server cannot have acted. ``reached``: the server answered
    something earlier in this run; a server never reached (wrong address, closed port) fails at once.
    ``permanent``: a failure no retry mends (a certificate that does not verify). ``attempt``: the attempts made so
    far (1 after the first); ``remaining``: seconds until the deadline (the module's own timeout).

    - 429, and 503 with Retry-After: the server did not act on the request; any verb, after Retry-After (else the
      backoff), for as long as the deadline allows.
    - 500, 502, 503, 504: reads and idempotent writes (apply, patch), ``SERVER_ERROR_ATTEMPTS`` attempts in all.
    - no answer: when the connection never opened, any verb; when it broke after the request was sent, reads and
      idempotent writes only (a delete may have been carried out); in both cases only once the server was reached
      in this run (a restarting API server comes back, a wrong address does not), until the deadline.
    - anything else (401, 403, 404, 409, 410, 422, ...): never.
    """
    idempotent = verb in READ_VERBS or verb in IDEMPOTENT_WRITE_VERBS
    retry_after = parse_retry_after(headers)
    if permanent:
        return RetryDecision(False)
    if status == 429 or (status == 503 and retry_after is not None):
        delay = retry_after if retry_after is not None else backoff(attempt)
    elif status in SERVER_ERROR_STATUSES:
        if not idempotent:
            return RetryDecision(
                False,
                note=f"not retried: a {verb} is sent again only when the server says it did not act on it "
                "(429, or 503 with Retry-After)",
            )
        if attempt >= SERVER_ERROR_ATTEMPTS:
            return RetryDecision(False)
        delay = backoff(attempt)
    elif status == 0:
        if not reached:
            return RetryDecision(False)
        if sent and not idempotent:
            return RetryDecision(
                False, note=f"not retried: the connection broke after the {verb} was sent, so it may have been done"
            )
        delay = backoff(attempt)
    else:
        return RetryDecision(False)
    delay = max(MIN_DELAY, delay)
    if remaining <= 0:
        return RetryDecision(False, note="the task's timeout has passed")
    if delay >= remaining:
        note = f"the next attempt, in {delay:.0f}s, would come after the task's timeout ({remaining:.0f}s left)"
        return RetryDecision(False, note=note)
    return RetryDecision(True, delay)


def retry_note(attempts: int, elapsed: float, decision: RetryDecision) -> str:
    """The suffix of a final error: how often it was tried, and why no more."""
    if attempts > 1:
        why = f": {decision.note}" if decision.note else ""
        return f" (gave up after {attempts} attempts in {elapsed:.0f}s{why})"
    return f" ({decision.note})" if decision.note else ""


def _reworded(error: PrefetchError, message: str, outcome_unknown: bool) -> PrefetchError:
    """The same kind of error with ``message`` (which adds the retries to the original)."""
    if isinstance(error, ClusterError):
        return type(error)(message, outcome_unknown=outcome_unknown)
    return type(error)(message)


def is_write_outcome_unknown(verb: str, status: int, sent: bool, retry_after: Optional[float], dry_run: bool) -> bool:
    """A failed write that may still have been carried out: it reached the server and got no clear refusal."""
    if verb not in WRITE_VERBS or dry_run or not sent:
        return False
    if status == 0 or status in (500, 502, 504):
        return True
    return status == 503 and retry_after is None


# --- error translation (pure) ------------------------------------------------------------------------------------


def _server_message(body: Any) -> str:
    """The ``message`` of a Status body, else the body text, cut short (a Status never carries object data)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return _shorten(str(body))
    if isinstance(parsed, dict) and parsed.get("message"):
        return _shorten(str(parsed["message"]))
    return _shorten(str(body))


def _shorten(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def conflict_owners(body: Any) -> dict[str, list[str]]:
    """Field manager -> conflicting fields, from a 409 apply Status (details.causes, else the message text)."""
    status = _status_body(body)
    owners: dict[str, list[str]] = {}
    for cause in (status.get("details") or {}).get("causes") or []:
        match = re.search(r'conflicts? with "([^"]+)"', str(cause.get("message", "")))
        manager = match.group(1) if match else "unknown manager"
        owners.setdefault(manager, []).append(str(cause.get("field", "?")))
    if owners:
        return owners
    message = str(status.get("message") or (body if isinstance(body, str) else ""))
    managers = re.findall(r'conflicts? with "([^"]+)"', message)
    fields = re.findall(r"^\s*-\s*(\S+)", message, flags=re.MULTILINE) or re.findall(r"using [^:]+:\s*(\S+)", message)
    for manager in managers or ["unknown manager"]:
        owners[manager] = fields
    return owners


def _conflict_error(target: str, body: Any) -> ConflictError:
    owners = conflict_owners(body)
    parts = []
    for manager, fields in sorted(owners.items()):
        listed = ", ".join(fields[:8]) + (f" and {len(fields) - 8} more" if len(fields) > 8 else "")
        parts.append(f'field manager "{manager}" owns {listed or "fields we set"}')
    return ConflictError(
        f"conflict applying {target}: {'; '.join(parts)}; set force_conflicts: true to take these fields over"
    )


def translate_api_error(status: int, reason: str, body: Any, verb: str, target: str, host: str) -> PrefetchError:
    """One-line typed error for an HTTP error answer of the API server."""
    message = _server_message(body)
    if status == 401:
        return UnauthorizedError(
            f"the API server at {host} rejected the credentials (401 Unauthorized) when trying to {verb} {target}"
        )
    if status == 403:
        return ForbiddenError(f"forbidden to {verb} {target}: {message or reason}")
    if status == 404:
        return NotFoundError(f"{target} not found: {message or reason}")
    if status == 409 and verb == "apply":
        return _conflict_error(target, body)
    if status == 422:
        return ClusterError(f"the API server rejected {target} as invalid: {message or reason}")
    return ClusterError(f"cannot {verb} {target}: HTTP {status} {reason}: {message}".rstrip(": "))


def _describe_transport_cause(error: BaseException) -> str:
    cause = getattr(error, "reason", None) or error
    text = str(cause)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "remotedisconnected" in lowered or "without response" in lowered:
        return "the connection was closed without an answer"
    if "reset by peer" in lowered or "connectionreseterror" in lowered:
        return "connection reset"
    if "response ended prematurely" in lowered or "incompleteread" in lowered:
        return "the answer was cut off"
    if "broken pipe" in lowered:
        return "broken pipe"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "resolution" in lowered:
        return "the host name does not resolve"
    if "timed out" in lowered or "timeout" in type(cause).__name__.lower():
        return "the connection timed out"
    if "ssl" in lowered or "certificate" in lowered:
        return "TLS error: " + _shorten(text, 200)
    return _shorten(text, 200)


def translate_transport_error(error: BaseException, host: str) -> ClusterUnreachableError:
    """One line naming the host and the cause (refused, DNS, timeout, TLS) instead of a urllib3 traceback."""
    return ClusterUnreachableError(
        f"cannot reach the Kubernetes API server at {host}: {_describe_transport_cause(error)}"
    )


_NOT_SENT_ERRORS = frozenset({"NewConnectionError", "ConnectTimeoutError", "NameResolutionError"})
_MAYBE_SENT_ERRORS = frozenset({"ProtocolError", "ReadTimeoutError", "RemoteDisconnected", "IncompleteRead"})
_TLS_VERIFY_WORDS = ("certificate verify failed", "certificate_verify_failed", "hostname mismatch", "doesn't match")


def transport_failure_kind(error: BaseException) -> tuple[bool, bool]:
    """(sent, permanent) for a failure without an HTTP answer.

    Not sent: the connection never opened (refused, timed out, DNS), or its TLS handshake failed (an API server
    restarting behind a forwarder or load balancer accepts, then closes). Permanent: a certificate that does not
    verify. Everything else (reset, aborted, read timeout, broken stream) may have happened after the request went
    out.
    """
    cause = getattr(error, "reason", None) or error
    name = type(cause).__name__
    text = f"{name}: {cause}".lower()
    if any(word in text for word in _TLS_VERIFY_WORDS):
        return False, True
    if name in _MAYBE_SENT_ERRORS:
        return True, False
    if name in _NOT_SENT_ERRORS or "refused" in text or "ssl" in text:
        return False, False
    return True, False


# --- the client ----------------------------------------------------------------------------------------------------


class _Requester:
    """Carries the ApiClient for ``DynamicClient.request``, which needs nothing else.

    Building a full DynamicClient would run its own discovery of every API group and write a cache file.
    """

    def __init__(self, api_client: Any) -> None:
        self.client = api_client
        self.configuration = api_client.configuration


def _as_dict(_client: Any, data: Any) -> Any:
    return data


def object_target(kind: str, name: str, namespace: Optional[str] = None) -> str:
    """``DaemonSet prefetch/images`` or ``ClusterRole images-node-labeler``: how messages name one object."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class Cluster:
    """The calls the modules make, each retried by ``retry_decision`` and translating failures into typed errors.

    ``deadline`` (a ``clock()`` value): no retry is started that would end after it, and every attempt's timeouts
    are cut to the time left, but never below ``LAST_ATTEMPT_SECONDS``.
    """

    def __init__(
        self,
        api_client: Any,
        deadline: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._requester = _Requester(api_client)
        self.host: str = str(getattr(api_client.configuration, "host", "") or "")
        self._group_versions: dict[str, list[dict[str, Any]]] = {}
        self.clock, self.sleep = clock, sleep
        self.deadline = deadline if deadline is not None else clock() + DEFAULT_RETRY_BUDGET
        self.reached = False  # the server answered something in this run
        self.retries = 0  # attempts that were retried (for tests and debugging)
        # The last failure that was retried, or the last watch that broke; "" once a request succeeds. A wait that
        # times out names it: the cause may be the API server, not the rollout.
        self.trouble = ""

    # -- transport

    def _timeouts(self, default: tuple[float, float]) -> tuple[float, float]:
        budget = max(float(LAST_ATTEMPT_SECONDS), self.deadline - self.clock())
        return (min(default[0], budget), min(default[1], budget))

    def _call(self, method: str, path: str, verb: str, target: str, body: Any = None, **params: Any) -> Any:
        """One request with retries; the final failure as a typed error (WatchExpiredError for a 410 watch)."""
        default_timeout = params.pop("_request_timeout", _REQUEST_TIMEOUT)
        api_exception, dynamic_client = _client_classes()
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            params["_request_timeout"] = default_timeout if verb == "watch" else self._timeouts(default_timeout)
            api_error: Any = None
            transport_error: Optional[BaseException] = None
            try:
                result = dynamic_client.request(self._requester, method, path, body=body, **params)
                self.reached, self.trouble = True, ""
                return result
            except api_exception as error:
                api_error = error
            except (urllib3.exceptions.HTTPError, OSError) as error:
                transport_error = error
            status = int(getattr(api_error, "status", 0) or 0)
            headers = (getattr(api_error, "headers", None) or {}) if status else {}
            if status:
                self.reached = True
                sent, permanent = True, False
            else:  # no answer: a transport failure (the client reports TLS ones as an ApiException with status 0)
                cause = transport_error or Exception(str(getattr(api_error, "reason", api_error)))
                sent, permanent = transport_failure_kind(cause)
            if status == 410 and verb == "watch":
                raise WatchExpiredError() from None
            now = self.clock()
            remaining = self.deadline - now
            decision = retry_decision(verb, status, headers, attempt, remaining, sent, self.reached, permanent)
            if decision.retry:
                self.retries += 1
                self.trouble = str(self._failure(api_error, transport_error, verb, target, sent))
                self.sleep(decision.delay)
                continue
            failure = self._failure(api_error, transport_error, verb, target, sent)
            message = str(failure) + retry_note(attempt, self.clock() - started, decision)
            dry_run = bool(params.get("dry_run"))
            unknown = is_write_outcome_unknown(verb, status, sent, parse_retry_after(headers), dry_run)
            raise _reworded(failure, message, unknown) from None

    def _failure(
        self, api_error: Any, transport_error: Optional[BaseException], verb: str, target: str, sent: bool
    ) -> PrefetchError:
        """The typed error of a failed attempt. A server never reached in this run is named alone (its address is
        what is wrong); once it was reached, the message names the request too."""
        status = int(getattr(api_error, "status", 0) or 0)
        if status:
            return self._translate(api_error, verb, target)
        error = transport_error or Exception(str(getattr(api_error, "reason", api_error)))
        if not self.reached:
            return translate_transport_error(error, self.host)
        cause = _describe_transport_cause(error)
        if sent:
            return ClusterUnreachableError(
                f"cannot {verb} {target}: the connection to the Kubernetes API server at {self.host} broke before "
                f"the answer: {cause}"
            )
        return ClusterUnreachableError(
            f"cannot {verb} {target}: the Kubernetes API server at {self.host} is not reachable: {cause}"
        )

    def request(self, method: str, path: str, verb: str, target: str, body: Any = None, **params: Any) -> Any:
        return self._call(method, path, verb, target, body=body, serializer=_as_dict, **params)

    def _translate(self, error: Any, verb: str, target: str) -> PrefetchError:
        status = int(getattr(error, "status", 0) or 0)
        if status == 0:  # the client reports TLS and similar transport failures as status 0
            return translate_transport_error(Exception(str(getattr(error, "reason", error))), self.host)
        return translate_api_error(
            status, str(getattr(error, "reason", "")), getattr(error, "body", None), verb, target, self.host
        )

    # -- discovery

    def _resources_of(self, api_version: str) -> list[dict[str, Any]]:
        if api_version not in self._group_versions:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                document = self.request("GET", path, "discover", f"API {api_version}")
            except NotFoundError:
                document = {}
            self._group_versions[api_version] = list((document or {}).get("resources") or [])
        return self._group_versions[api_version]

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo:
        """Discovery of one kind; NotFoundError when the server does not serve it (e.g. a missing CRD/API group)."""
        for resource in self._resources_of(api_version):
            if resource.get("kind") == kind and "/" not in str(resource.get("name", "")):
                return ResourceInfo(api_version, kind, str(resource["name"]), bool(resource.get("namespaced")))
        raise NotFoundError(f"the API server at {self.host} does not serve kind {kind} in apiVersion {api_version}")

    # -- paths

    @staticmethod
    def path(info: ResourceInfo, namespace: Optional[str] = None, name: Optional[str] = None) -> str:
        base = f"/api/{info.api_version}" if not info.group else f"/apis/{info.api_version}"
        if info.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{info.plural}"
        return base + (f"/{name}" if name else "")

    # -- verbs

    def get(self, info: ResourceInfo, name: str, namespace: Optional[str] = None) -> Optional[dict[str, Any]]:
        """The live object, or None when it does not exist."""
        try:
            return self.request(
                "GET", self.path(info, namespace, name), "get", object_target(info.kind, name, namespace)
            )
        except NotFoundError:
            return None

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Items and the list's resourceVersion (to start a watch from)."""
        where = f" in namespace {namespace}" if namespace else ""
        document = self.request(
            "GET", self.path(info, namespace), "list", f"{info.qualified_plural}{where}", label_selector=label_selector
        )
        items = list(document.get("items") or [])
        for item in items:  # list items omit kind/apiVersion; fill them so objects look alike everywhere
            item.setdefault("kind", info.kind)
            item.setdefault("apiVersion", info.api_version)
        return items, str((document.get("metadata") or {}).get("resourceVersion") or "")

    def apply(self, info: ResourceInfo, obj: dict[str, Any], dry_run: bool, force: bool) -> dict[str, Any]:
        """Server-side apply as field manager stackrox.prefetch; ``dry_run`` sends dryRun=All (no write)."""
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") if info.namespaced else None
        name = str(metadata.get("name"))
        return self.request(
            "PATCH",
            self.path(info, namespace, name),
            "apply",
            object_target(info.kind, name, namespace),
            body=json.dumps(obj),  # JSON is YAML: the apply-patch+yaml content type accepts it
            content_type=APPLY_PATCH,
            field_manager=FIELD_MANAGER,
            force_conflicts=True if force else None,
            dry_run="All" if dry_run else None,
        )

    def delete(self, info: ResourceInfo, name: str, namespace: Optional[str], dry_run: bool) -> bool:
        """Delete with background propagation; False when it was already gone."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if dry_run:
            body["dryRun"] = ["All"]
        try:
            self.request(
                "DELETE",
                self.path(info, namespace, name),
                "delete",
                object_target(info.kind, name, namespace),
                body=body,
                dry_run="All" if dry_run else None,
            )
        except NotFoundError:
            return False
        return True

    def merge_patch(
        self, info: ResourceInfo, name: str, namespace: Optional[str], patch: dict[str, Any]
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            self.path(info, namespace, name),
            "patch",
            object_target(info.kind, name, namespace),
            body=patch,
            content_type=MERGE_PATCH,
        )

    def get_text(self, path: str, verb: str, target: str) -> str:
        """Raw body of a GET (the service proxy answers whatever the service sends)."""
        response = self._call("GET", path, verb, target, serialize=False, _preload_content=False)
        try:
            data = response.data
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_transport_error(error, self.host) from None
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def watch(
        self,
        info: ResourceInfo,
        namespace: Optional[str],
        resource_version: str,
        timeout_seconds: int,
        label_selector: Optional[str] = None,
    ) -> Iterator[dict[str, Any]]:
        """Watch events from ``resource_version`` for at most ``timeout_seconds``; WatchExpiredError on 410,
        WatchInterruptedError when the stream breaks (the caller watches again from its last resourceVersion)."""
        target = f"{info.qualified_plural} in namespace {namespace}" if namespace else info.qualified_plural
        params = {
            "watch": "true",
            "resource_version": resource_version or None,
            "timeout_seconds": max(1, int(timeout_seconds)),
            "allow_watch_bookmarks": "true",
            "label_selector": label_selector,
            "_request_timeout": (_REQUEST_TIMEOUT[0], int(timeout_seconds) + _WATCH_READ_GRACE),
            "_preload_content": False,
        }
        response = self._call("GET", self.path(info, namespace), "watch", target, serialize=False, **params)
        try:
            yield from _watch_events(response, target)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            cause = _describe_transport_cause(error)
            self.trouble = f"the watch of {target} at {self.host} broke: {cause}"
            raise WatchInterruptedError(self.trouble) from None
        finally:
            response.close()
            release = getattr(response, "release_conn", None)
            if release:
                release()


def _response_chunks(response: Any) -> Iterator[bytes]:
    read1: Optional[Callable[..., bytes]] = getattr(response, "read1", None)
    if getattr(response, "chunked", False) or read1 is None:
        yield from response.stream(amt=None, decode_content=False)
        return
    while True:  # not chunked: read what has arrived instead of waiting for a full buffer
        chunk = read1(65536)
        if not chunk:
            return
        yield chunk


def _watch_events(response: Any, target: str) -> Iterator[dict[str, Any]]:
    pending = b""
    for chunk in _response_chunks(response):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            event = parse_watch_line(line, target)
            if event is not None:
                yield event
    event = parse_watch_line(pending, target)
    if event is not None:
        yield event


def parse_watch_line(line: bytes, target: str) -> Optional[dict[str, Any]]:
    """One watch event; 410 ERROR events become WatchExpiredError, other ERROR events a ClusterError."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        raise ClusterError(
            f"unreadable watch event for {target}: {_shorten(line.decode('utf-8', 'replace'), 120)}"
        ) from None
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        if status.get("code") == 410:
            raise WatchExpiredError()
        raise ClusterError(f"watch of {target} failed: {status.get('message') or status}")
    return event
