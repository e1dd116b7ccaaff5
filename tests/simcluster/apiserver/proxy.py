"""The service proxy subresource: ``/api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy/{path}``.

Pods share the host network in this simulator, so a ready endpoint's target port is a port on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from typing import Any, Optional

from . import errors
from .selectors import labels_match, parse_label_selector
from .store import Store

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "authorization", "host", "content-length"}


@dataclass
class ProxyResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def split_service_ref(ref: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` → (scheme, name, port)."""
    parts = ref.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return parts[0], parts[1], parts[2]


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def _target_port(pod: dict[str, Any], target: Any) -> Optional[int]:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def resolve(store: Store, ns: str, ref: str) -> tuple[str, int]:
    """(scheme, port on 127.0.0.1) of a ready endpoint of the service; ApiError otherwise."""
    from .resources import Registry  # local import: avoids a cycle at module load

    scheme, name, port_ref = split_service_ref(ref)
    svc = store.get("services", ns, name)
    if svc is None:
        raise errors.not_found(Registry().by_key("services"), name)
    ports = (svc.get("spec") or {}).get("ports") or []
    if port_ref:
        port = next((p for p in ports if p.get("name") == port_ref or str(p.get("port")) == port_ref), None)
    else:
        port = ports[0] if len(ports) == 1 else None
    if port is None:
        raise errors.service_unavailable(f'no service port "{port_ref}" found for service "{name}"')
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        raise errors.service_unavailable(f'no endpoints available for service "{name}"')
    sel = parse_label_selector(",".join(f"{k}={v}" for k, v in selector.items()))
    pods, _ = store.list_objects("pods", ns)
    for pod in pods:
        if labels_match(sel, pod) and _ready(pod):
            tp = _target_port(pod, port.get("targetPort", port.get("port")))
            if tp is not None:
                return scheme or "http", tp
    raise errors.service_unavailable(f'no endpoints available for service "{name}"')


def forward(scheme: str, port: int, method: str, path: str, headers: list[tuple[str, str]],
            body: bytes) -> ProxyResponse:
    conn: http.client.HTTPConnection
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the real apiserver does not verify endpoints' certificates either
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP:
                conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        return ProxyResponse(resp.status, out, data)
    except OSError as e:
        raise errors.service_unavailable(f"error trying to reach service: dial tcp 127.0.0.1:{port}: {e}") from None
    finally:
        conn.close()
