"""``meta.k8s.io/v1 Table`` responses, which ``kubectl get`` asks for (server-side printing)."""

from __future__ import annotations

import datetime
from typing import Any, Callable

from .resources import ResourceDef

Col = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, cell


def accepts_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(obj: dict[str, Any]) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 120:
        return f"{max(s, 0)}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _name(o: dict[str, Any]) -> str:
    return str(o["metadata"]["name"])


def _pod_ready(o: dict[str, Any]) -> str:
    cs = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{total}"


def _pod_status(o: dict[str, Any]) -> str:
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    st = o.get("status") or {}
    for c in st.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        if "waiting" in state or "running" in state:
            return "Init:0/" + str(len(st.get("initContainerStatuses") or []))
    for c in st.get("containerStatuses") or []:
        reason = ((c.get("state") or {}).get("waiting") or {}).get("reason")
        if reason:
            return str(reason)
    return str(st.get("phase") or "Pending")


def _node_status(o: dict[str, Any]) -> str:
    conds = (o.get("status") or {}).get("conditions") or []
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (o.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _roles(o: dict[str, Any]) -> str:
    labels = (o.get("metadata") or {}).get("labels") or {}
    roles = [k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")]
    return ",".join(sorted(roles)) or "<none>"


def _st(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda o: (o.get("status") or {}).get(key, 0)


def _ports(o: dict[str, Any]) -> str:
    ps = (o.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ps) or "<none>"


_AGE: Col = ("Age", "string", 0, _age)
_NAME: Col = ("Name", "string", 0, _name)
COLUMNS: dict[str, list[Col]] = {
    "Pod": [_NAME, ("Ready", "string", 0, _pod_ready), ("Status", "string", 0, _pod_status),
            ("Restarts", "string", 0, lambda o: str(sum(c.get("restartCount", 0) for c in
                                                        (o.get("status") or {}).get("containerStatuses") or []))),
            _AGE, ("IP", "string", 1, lambda o: (o.get("status") or {}).get("podIP") or "<none>"),
            ("Node", "string", 1, lambda o: (o.get("spec") or {}).get("nodeName") or "<none>")],
    "Node": [_NAME, ("Status", "string", 0, _node_status), ("Roles", "string", 0, _roles), _AGE,
             ("Version", "string", 0, lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get(
                 "kubeletVersion", ""))],
    "DaemonSet": [_NAME, ("Desired", "integer", 0, _st("desiredNumberScheduled")),
                  ("Current", "integer", 0, _st("currentNumberScheduled")), ("Ready", "integer", 0, _st("numberReady")),
                  ("Up-to-date", "integer", 0, _st("updatedNumberScheduled")),
                  ("Available", "integer", 0, _st("numberAvailable")),
                  ("Node Selector", "string", 0, lambda o: ",".join(
                      f"{k}={v}" for k, v in (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
                          "nodeSelector", {}).items()) or "<none>"), _AGE],
    "Deployment": [_NAME, ("Ready", "string", 0, lambda o: f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
                                                            f"{(o.get('spec') or {}).get('replicas', 1)}"),
                   ("Up-to-date", "integer", 0, _st("updatedReplicas")),
                   ("Available", "integer", 0, _st("availableReplicas")), _AGE],
    "Namespace": [_NAME, ("Status", "string", 0, lambda o: (o.get("status") or {}).get("phase", "")), _AGE],
    "Service": [_NAME, ("Type", "string", 0, lambda o: (o.get("spec") or {}).get("type", "")),
                ("Cluster-IP", "string", 0, lambda o: (o.get("spec") or {}).get("clusterIP", "")),
                ("External-IP", "string", 0, lambda o: "<none>"), ("Port(s)", "string", 0, _ports), _AGE],
    "ConfigMap": [_NAME, ("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                  _AGE],
    "Event": [("Last Seen", "string", 0, lambda o: o.get("lastTimestamp") or o.get("eventTime") or ""),
              ("Type", "string", 0, lambda o: o.get("type", "")),
              ("Reason", "string", 0, lambda o: o.get("reason", "")),
              ("Object", "string", 0, lambda o: f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                                                f"{(o.get('involvedObject') or {}).get('name', '')}"),
              ("Message", "string", 0, lambda o: o.get("message", ""))],
}


def to_table(rd: ResourceDef, lst: dict[str, Any], _all_namespaces: bool) -> dict[str, Any]:
    cols = COLUMNS.get(rd.kind, [_NAME, _AGE])
    defs = [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": p}
            for n, t, p, _ in cols]
    rows = []
    for o in lst["items"]:
        rows.append({"cells": [f(o) for _, _, _, f in cols],
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                "metadata": o.get("metadata", {})}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": lst.get("metadata", {}),
            "columnDefinitions": defs, "rows": rows}
