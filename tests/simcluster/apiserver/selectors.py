"""Label and field selectors as the API server parses them from ``labelSelector``/``fieldSelector``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import ApiError, bad_request


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and labels[self.key] == self.values[0]
        if self.op == "!=":
            return not present or labels[self.key] != self.values[0]
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            return not present or labels[self.key] not in self.values
        raise ValueError(self.op)


LabelSelector = list[Requirement]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` is two requirements)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_label_selector(text: Optional[str]) -> LabelSelector:
    if not text:
        return []
    reqs: LabelSelector = []
    for part in _split_top(text):
        if not part.strip():
            continue
        m = _SET_RE.match(part)
        if m:
            vals = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), vals))
            continue
        m = _EQ_RE.match(part)
        if m:
            op = "=" if m.group(2) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
            continue
        m = _EXISTS_RE.match(part)
        if m:
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
            continue
        raise bad_request(f"unable to parse requirement: found '{part.strip()}', expected: identifier")
    return reqs


def labels_match(sel: LabelSelector, obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in sel)


def selector_from_label_selector(ls: dict[str, Any]) -> Optional[LabelSelector]:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements; an empty one selects all."""
    reqs: LabelSelector = []
    for k, v in (ls.get("matchLabels") or {}).items():
        reqs.append(Requirement(k, "=", (str(v),)))
    for e in ls.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(e.get("operator", ""))
        if op is None:
            return None
        reqs.append(Requirement(e.get("key", ""), op, tuple(e.get("values") or ())))
    return reqs


# --- field selectors ---------------------------------------------------------------------------

_COMMON_FIELDS = ["metadata.name", "metadata.namespace"]
_FIELDS: dict[str, list[str]] = {
    "pods": ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"],
    "events": ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type"],
    "secrets": ["type"],
    "nodes": ["spec.unschedulable"],
    "namespaces": ["status.phase"],
    "replicasets": ["status.replicas"],
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # = or !=
    value: str


def parse_field_selector(text: Optional[str], plural: str) -> list[FieldRequirement]:
    if not text:
        return []
    allowed = _COMMON_FIELDS + _FIELDS.get(plural, [])
    reqs: list[FieldRequirement] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        fld, op, val = m.group(1), m.group(2), m.group(3)
        if fld not in allowed:
            raise bad_request(f'field label not supported: {fld}')
        reqs.append(FieldRequirement(fld, "!=" if op == "!=" else "=", val))
    return reqs


def field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # events: source is source.component
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    for r in reqs:
        v = field_value(obj, r.field)
        if (r.op == "=") != (v == r.value):
            return False
    return True


def make_matcher(label_sel: Optional[str], field_sel: Optional[str], plural: str) -> Callable[[dict[str, Any]], bool]:
    """One predicate for both selectors; raises ApiError (400) for malformed input."""
    try:
        ls = parse_label_selector(label_sel)
    except ApiError:
        raise
    fs = parse_field_selector(field_sel, plural)
    return lambda obj: labels_match(ls, obj) and fields_match(fs, obj)
