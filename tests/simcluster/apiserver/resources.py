"""The kinds the simulated server serves, and the discovery documents built from them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

STD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class SubResource:
    name: str
    kind: str
    verbs: list[str]
    group: Optional[str] = None  # set when the subresource's kind lives in another group (TokenRequest)
    version: Optional[str] = None


@dataclass(frozen=True)
class ResourceDef:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: list[str] = field(default_factory=lambda: list(STD_VERBS))
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: list[SubResource] = field(default_factory=list)
    # Virtual resources (reviews) are create-only and never stored.
    virtual: bool = False

    @property
    def key(self) -> str:
        """``plural.group`` as the real server names resources in messages (``daemonsets.apps``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def has_status(self) -> bool:
        return any(s.name == "status" for s in self.subresources)


def _status(kind: str) -> SubResource:
    return SubResource("status", kind, ["get", "patch", "update"])


def _defs() -> list[ResourceDef]:
    r = ResourceDef
    return [
        r("", "v1", "namespaces", "namespace", "Namespace", False,
          verbs=["create", "delete", "get", "list", "patch", "update", "watch"], short_names=["ns"],
          subresources=[_status("Namespace")]),
        r("", "v1", "nodes", "node", "Node", False, short_names=["no"],
          subresources=[_status("Node")]),
        r("", "v1", "pods", "pod", "Pod", True, short_names=["po"], categories=["all"],
          subresources=[_status("Pod"), SubResource("binding", "Binding", ["create"])]),
        r("", "v1", "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        r("", "v1", "secrets", "secret", "Secret", True),
        r("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, short_names=["sa"],
          subresources=[SubResource("token", "TokenRequest", ["create"], "authentication.k8s.io", "v1")]),
        r("", "v1", "services", "service", "Service", True, short_names=["svc"], categories=["all"],
          subresources=[_status("Service"),
                        SubResource("proxy", "ServiceProxyOptions", ["create", "delete", "get", "patch", "update"])]),
        r("", "v1", "endpoints", "endpoints", "Endpoints", True, short_names=["ep"]),
        r("", "v1", "events", "event", "Event", True, short_names=["ev"]),
        r("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, short_names=["ds"], categories=["all"],
          subresources=[_status("DaemonSet")]),
        r("apps", "v1", "deployments", "deployment", "Deployment", True, short_names=["deploy"], categories=["all"],
          subresources=[_status("Deployment")]),
        r("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, short_names=["rs"], categories=["all"],
          subresources=[_status("ReplicaSet")]),
        r("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", True),
        r("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
        r("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True),
        r("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False),
        r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
        r("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
        r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
          "SelfSubjectAccessReview", False, verbs=["create"], virtual=True),
        r("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", False,
          verbs=["create"], virtual=True),
    ]


class Registry:
    """Lookup of resource definitions by group/version/plural, kind and short name."""

    def __init__(self) -> None:
        self.defs = _defs()
        self._by_path = {(d.group, d.version, d.plural): d for d in self.defs}
        self._by_kind = {(d.group, d.kind): d for d in self.defs}

    def groups(self) -> list[str]:
        seen: list[str] = []
        for d in self.defs:
            if d.group and d.group not in seen:
                seen.append(d.group)
        return seen

    def versions(self, group: str) -> list[str]:
        return sorted({d.version for d in self.defs if d.group == group})

    def lookup(self, group: str, version: str, plural: str) -> Optional[ResourceDef]:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Optional[ResourceDef]:
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        return self._by_kind.get((group, kind))

    def by_key(self, key: str) -> ResourceDef:
        for d in self.defs:
            if d.key == key:
                return d
        raise KeyError(key)

    # --- discovery documents --------------------------------------------------------------------

    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}

    def api_group(self, group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self.versions(group)]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[-1]}

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for g in self.groups():
            doc = self.api_group(g)
            doc.pop("kind")
            doc.pop("apiVersion")
            groups.append(doc)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> Optional[dict[str, Any]]:
        defs = [d for d in self.defs if d.group == group and d.version == version]
        if not defs:
            return None
        resources: list[dict[str, Any]] = []
        for d in defs:
            entry: dict[str, Any] = {"name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
                                     "kind": d.kind, "verbs": list(d.verbs)}
            if d.short_names:
                entry["shortNames"] = list(d.short_names)
            if d.categories:
                entry["categories"] = list(d.categories)
            # A stable hash so clients that cache by it see the same value across runs.
            entry["storageVersionHash"] = hashlib.sha256(d.key.encode()).digest()[:8].hex()
            resources.append(entry)
            for s in d.subresources:
                sub: dict[str, Any] = {"name": f"{d.plural}/{s.name}", "singularName": "", "namespaced": d.namespaced,
                                       "kind": s.kind or d.kind, "verbs": list(s.verbs)}
                if s.group is not None:
                    sub["group"] = s.group
                    sub["version"] = s.version
                resources.append(sub)
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
