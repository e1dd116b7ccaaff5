# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin wrapper over the kubernetes client: discovery, get/list/apply/delete/patch/watch and error translation.

Requests go through ``DynamicClient.request`` (stable across client versions: query parameters, content types,
authentication). Discovery reads only the group-version documents the objects need, so nothing is cached on disk
and an unknown kind is reported before anything is written. Every failure leaves here as a typed
``PrefetchError`` whose message names the object and the cause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
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
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic import DynamicClient
except ImportError:  # reported by the modules through _auth.HAS_KUBERNETES

    class ApiException(Exception):  # type: ignore[no-redef]
        """Never raised: stands in so the except clauses stay valid without the kubernetes client."""


FIELD_MANAGER = "stackrox.prefetch"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
_REQUEST_TIMEOUT = (15, 120)  # (connect, read) seconds for every call but watches
_WATCH_READ_GRACE = 15  # the read timeout of a watch exceeds its server-side timeoutSeconds by this much
_MESSAGE_LIMIT = 400


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
    """The calls the modules make, each translating failures into typed errors."""

    def __init__(self, api_client: Any) -> None:
        self._requester = _Requester(api_client)
        self.host: str = str(getattr(api_client.configuration, "host", "") or "")
        self._group_versions: dict[str, list[dict[str, Any]]] = {}

    # -- transport

    def request(self, method: str, path: str, verb: str, target: str, body: Any = None, **params: Any) -> Any:
        params.setdefault("_request_timeout", _REQUEST_TIMEOUT)
        try:
            return DynamicClient.request(self._requester, method, path, body=body, serializer=_as_dict, **params)
        except ApiException as error:
            raise self._translate(error, verb, target) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_transport_error(error, self.host) from None

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
        params = {"_request_timeout": _REQUEST_TIMEOUT, "_preload_content": False}
        try:
            response = DynamicClient.request(self._requester, "GET", path, serialize=False, **params)
            data = response.data
        except ApiException as error:
            raise self._translate(error, verb, target) from None
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
        """Watch events from ``resource_version`` for at most ``timeout_seconds``; WatchExpiredError on 410."""
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
        try:
            response = DynamicClient.request(
                self._requester, "GET", self.path(info, namespace), serialize=False, **params
            )
        except ApiException as error:
            if getattr(error, "status", None) == 410:
                raise WatchExpiredError() from None
            raise self._translate(error, "watch", target) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_transport_error(error, self.host) from None
        try:
            yield from _watch_events(response, target)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_transport_error(error, self.host) from None
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
