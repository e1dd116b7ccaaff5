"""A small stdlib HTTPS JSON client for the Kubernetes API (bearer token + CA): the test harness's own set-up and
the tests' checks, without the ``kubernetes`` package (whose import costs ~0.3 s) and independent of the modules
under test."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from typing import Any, Optional

Obj = dict[str, Any]

# kind → (api prefix, plural, namespaced): what the harness and the tests touch.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "Service": ("/api/v1", "services", True),
    "Event": ("/api/v1", "events", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Namespace": ("/api/v1", "namespaces", False),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}


class ApiError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, ``reason``/``message`` come from the Status body."""

    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.reason = str(self.body.get("reason", ""))
        self.message = str(self.body.get("message", body if isinstance(body, str) else ""))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


def resource_path(kind: str, namespace: Optional[str] = None, name: Optional[str] = None,
                  subresource: Optional[str] = None) -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    path = prefix
    if namespaced and namespace:
        path += f"/namespaces/{urllib.parse.quote(namespace)}"
    path += f"/{plural}"
    if name:
        path += f"/{urllib.parse.quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


class ApiClient:
    """``ApiClient("https://127.0.0.1:PORT", token, ca_path)``; one keep-alive connection per thread."""

    def __init__(self, server: str, token: str, ca_path: str, user_agent: str = "prefetch-tests") -> None:
        parsed = urllib.parse.urlsplit(server)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 443
        self.token = token
        self.user_agent = user_agent
        self._ssl = ssl.create_default_context(cafile=ca_path)
        self._local = threading.local()

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ssl, timeout=timeout)

    def _headers(self, content_type: Optional[str]) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                query: Optional[dict[str, str]] = None, timeout: float = 30) -> Any:
        """One request; returns the decoded JSON body, raises ApiError on non-2xx."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile fails once: reconnect
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection(timeout)
            try:
                conn.request(method, path, body=data, headers=self._headers(content_type if data else None))
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 1 or method not in ("GET", "DELETE", "PATCH"):
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            decoded = _decode(raw)
            if response.status >= 300:
                raise ApiError(response.status, decoded, method, path)
            return decoded
        raise AssertionError("unreachable")

    # ---- verbs ------------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: Optional[str] = None) -> Obj:
        result: Obj = self.request("GET", resource_path(kind, namespace, name))
        return result

    def get_or_none(self, kind: str, name: str, namespace: Optional[str] = None) -> Optional[Obj]:
        try:
            return self.get(kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: Optional[str] = None, label_selector: str = "",
             field_selector: str = "") -> Obj:
        query = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        result: Obj = self.request("GET", resource_path(kind, namespace), query=query)
        return result

    def create(self, kind: str, obj: Obj, namespace: Optional[str] = None) -> Obj:
        result: Obj = self.request("POST", resource_path(kind, namespace), obj)
        return result

    def merge_patch(self, kind: str, name: str, patch: Obj, namespace: Optional[str] = None,
                    subresource: Optional[str] = None) -> Obj:
        result: Obj = self.request("PATCH", resource_path(kind, namespace, name, subresource), patch,
                                   content_type="application/merge-patch+json")
        return result

    def delete(self, kind: str, name: str, namespace: Optional[str] = None,
               grace_period_seconds: Optional[int] = None, uid: Optional[str] = None) -> Any:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if uid:
            body["preconditions"] = {"uid": uid}
        return self.request("DELETE", resource_path(kind, namespace, name), body)


def _decode(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
