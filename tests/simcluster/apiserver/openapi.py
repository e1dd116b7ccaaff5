"""A minimal ``/openapi/v3``: enough for kubectl to see that every PATCH supports ``fieldValidation`` and so
validate on the server (it then needs no schemas). Models are not published: see the README."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from .resources import Registry, ResourceDef

_PARAMS = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
           for n in ("dryRun", "fieldManager", "fieldValidation", "force")]


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def index(reg: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    gvs = [("", "v1")] + [(g, v) for g in reg.groups() for v in reg.versions(g)]
    for g, v in gvs:
        p = _gv_path(g, v)
        h = hashlib.sha256(p.encode()).hexdigest()[:16].upper()
        paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"}
    return {"paths": paths}


def _item_path(rd: ResourceDef) -> str:
    base = "/" + _gv_path(rd.group, rd.version)
    if rd.namespaced:
        return f"{base}/namespaces/{{namespace}}/{rd.plural}/{{name}}"
    return f"{base}/{rd.plural}/{{name}}"


def group_version(reg: Registry, gv_path: str) -> Optional[dict[str, Any]]:
    defs = [d for d in reg.defs if _gv_path(d.group, d.version) == gv_path and not d.virtual]
    if not defs:
        return None
    paths: dict[str, Any] = {}
    for d in defs:
        gvk = {"group": d.group, "version": d.version, "kind": d.kind}
        op = {"operationId": f"patch{d.kind}", "parameters": _PARAMS, "responses": {"200": {"description": "OK"}},
              "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}
        paths[_item_path(d)] = {"patch": op}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (simcluster)", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}
