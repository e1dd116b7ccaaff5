"""Validation of names, labels and the required fields of the kinds the product writes."""

from __future__ import annotations

import re
from typing import Any, Optional

from .errors import FieldError, GoRaw, go_value
from .selectors import Requirement, selector_from_label_selector

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                 "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
                 "'" + _DNS1123_SUBDOMAIN + "')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
             "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '"
             + _DNS1123_LABEL + "')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
                   "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
                   "regex used for validation is '" + _LABEL_VALUE + "')")
QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '"
                 + _QUALIFIED_NAME + "')")

# Kinds whose names are DNS-1123 labels; RBAC kinds only forbid path separators; the rest are subdomains.
LABEL_NAMED = {"Namespace", "Service"}
PATH_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def _full(regex: str, value: str) -> bool:
    return re.fullmatch(regex, value) is not None


def name_errors(kind: str, name: str, path: str = "metadata.name") -> list[FieldError]:
    if kind in PATH_NAMED:
        for bad in ("/", "%"):
            if bad in name:
                return [FieldError("Invalid", path, f"may not contain '{bad}'", name, True)]
        if name in (".", ".."):
            return [FieldError("Invalid", path, f"may not be '{name}'", name, True)]
        return []
    if kind in LABEL_NAMED:
        if len(name) > 63:
            return [FieldError("Invalid", path, "must be no more than 63 characters", name, True)]
        if not _full(_DNS1123_LABEL, name):
            return [FieldError("Invalid", path, LABEL_MSG, name, True)]
        return []
    if len(name) > 253:
        return [FieldError("Invalid", path, "must be no more than 253 characters", name, True)]
    if not _full(_DNS1123_SUBDOMAIN, name):
        return [FieldError("Invalid", path, SUBDOMAIN_MSG, name, True)]
    return []


def qualified_name_errors(key: str, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _full(_DNS1123_SUBDOMAIN, prefix)):
        errs.append(FieldError("Invalid", path, "prefix part " + SUBDOMAIN_MSG, key, True))
    if not name:
        errs.append(FieldError("Invalid", path, "name part must be non-empty", key, True))
    elif len(name) > 63:
        errs.append(FieldError("Invalid", path, "name part must be no more than 63 characters", key, True))
    elif not _full(_QUALIFIED_NAME, name):
        errs.append(FieldError("Invalid", path, QUALIFIED_MSG, key, True))
    return errs


def labels_errors(labels: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(labels, dict):
        return errs
    for k, v in labels.items():
        errs += qualified_name_errors(k, path)
        v = "" if v is None else str(v)
        if len(v) > 63:
            errs.append(FieldError("Invalid", path, "must be no more than 63 characters", v, True))
        elif not _full(_LABEL_VALUE, v):
            errs.append(FieldError("Invalid", path, LABEL_VALUE_MSG, v, True))
    return errs


def meta_errors(kind: str, meta: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name") or ""
    if not name:
        errs.append(FieldError("Required", "metadata.name", "name or generateName is required"))
    else:
        errs += name_errors(kind, name)
    errs += labels_errors(meta.get("labels"), "metadata.labels")
    for k in (meta.get("annotations") or {}):
        errs += qualified_name_errors(k, "metadata.annotations")
    return errs


def _selector_text(sel: Any) -> str:
    ml = (sel or {}).get("matchLabels")
    inner = "map[string]string{" + ", ".join(f"{go_value(k)}:{go_value(v)}" for k, v in sorted((ml or {}).items())) \
        + "}" if ml else "map[string]string(nil)"
    return f"v1.LabelSelector{{MatchLabels:{inner}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}"


def _containers_errors(containers: Any, path: str, volume_names: set[str], required: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    if not containers:
        if required:
            errs.append(FieldError("Required", path))
        return errs
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}[{i}]"
        if not isinstance(c, dict):
            errs.append(FieldError("Invalid", cp, "must be an object", c, True))
            continue
        name = c.get("name") or ""
        if not name:
            errs.append(FieldError("Required", f"{cp}.name"))
        elif not _full(_DNS1123_LABEL, name) or len(name) > 63:
            errs.append(FieldError("Invalid", f"{cp}.name", LABEL_MSG, name, True))
        elif name in seen:
            errs.append(FieldError("Duplicate", f"{cp}.name", "", name, True))
        seen.add(name)
        if not c.get("image"):
            errs.append(FieldError("Required", f"{cp}.image"))
        for j, vm in enumerate(c.get("volumeMounts") or []):
            if isinstance(vm, dict) and vm.get("name") not in volume_names:
                errs.append(FieldError("NotFound", f"{cp}.volumeMounts[{j}].name", "", vm.get("name"), True))
    return errs


def pod_spec_errors(spec: Any, path: str) -> list[FieldError]:
    if not isinstance(spec, dict):
        return [FieldError("Required", f"{path}.containers")]
    vols = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    errs = _containers_errors(spec.get("containers"), f"{path}.containers", {str(v) for v in vols}, True)
    errs += _containers_errors(spec.get("initContainers"), f"{path}.initContainers", {str(v) for v in vols}, False)
    return errs


def _workload_errors(kind: str, spec: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(spec, dict):
        return [FieldError("Required", "spec.selector"), FieldError("Required", "spec.template.spec.containers")]
    sel = spec.get("selector")
    tpl = spec.get("template") or {}
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    if not sel:
        errs.append(FieldError("Required", "spec.selector"))
    else:
        reqs = selector_from_label_selector(sel)
        if reqs is not None and not reqs:
            errs.append(FieldError("Invalid", "spec.selector", f"empty selector is invalid for {kind.lower()}",
                                   GoRaw(_selector_text(sel)), True))
        elif reqs is not None and not all(_req_matches(r, labels) for r in reqs):
            errs.append(FieldError("Invalid", "spec.template.metadata.labels",
                                   "`selector` does not match template `labels`", labels, True))
    errs += labels_errors(labels, "spec.template.metadata.labels")
    errs += pod_spec_errors(tpl.get("spec"), "spec.template.spec")
    rp = ((tpl.get("spec") or {}).get("restartPolicy")) if isinstance(tpl.get("spec"), dict) else None
    if rp not in (None, "Always"):
        errs.append(FieldError("Unsupported", "spec.template.spec.restartPolicy", 'supported values: "Always"', rp,
                               True))
    return errs


def _req_matches(r: Requirement, labels: dict[str, Any]) -> bool:
    return r.matches({k: str(v) for k, v in labels.items()})


def _service_errors(spec: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(spec, dict):
        return [FieldError("Required", "spec.ports")]
    ports = spec.get("ports") or []
    if not ports and spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None":
        errs.append(FieldError("Required", "spec.ports"))
    for i, p in enumerate(ports):
        port = p.get("port") if isinstance(p, dict) else None
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errs.append(FieldError("Invalid", f"spec.ports[{i}].port", "must be between 1 and 65535, inclusive",
                                   port, True))
        if len(ports) > 1 and isinstance(p, dict) and not p.get("name"):
            errs.append(FieldError("Required", f"spec.ports[{i}].name"))
    return errs


def validate(kind: str, obj: dict[str, Any], old: Optional[dict[str, Any]]) -> list[FieldError]:
    errs = meta_errors(kind, obj.get("metadata") or {})
    spec = obj.get("spec")
    if kind in ("DaemonSet", "Deployment", "ReplicaSet"):
        errs += _workload_errors(kind, spec)
        if old is not None and (old.get("spec") or {}).get("selector") != (spec or {}).get("selector"):
            errs.append(FieldError("Invalid", "spec.selector", "field is immutable",
                                   GoRaw(_selector_text((spec or {}).get("selector"))), True))
    elif kind == "Pod":
        errs += pod_spec_errors(spec, "spec")
    elif kind == "Service":
        errs += _service_errors(spec)
    elif kind in ("ConfigMap", "Secret"):
        for section in ("data", "binaryData", "stringData"):
            for k in (obj.get(section) or {}):
                if not _full(_CONFIG_KEY, k) or len(k) > 253:
                    errs.append(FieldError("Invalid", f"{section}[{k}]",
                                           "a valid config key must consist of alphanumeric characters, '-', '_' or "
                                           "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                                           "validation is '[-._a-zA-Z0-9]+')", k, True))
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        if not obj.get("roleRef"):
            errs.append(FieldError("Required", "roleRef.name"))
        elif old is not None and old.get("roleRef") != obj.get("roleRef"):
            errs.append(FieldError("Invalid", "roleRef", "cannot change roleRef",
                                   GoRaw(_role_ref_text(obj.get("roleRef") or {})), True))
    return errs


def _role_ref_text(ref: dict[str, Any]) -> str:
    return (f'rbac.RoleRef{{APIGroup:{go_value(ref.get("apiGroup", ""))}, Kind:{go_value(ref.get("kind", ""))}, '
            f'Name:{go_value(ref.get("name", ""))}}}')
