"""Server-side apply: field sets, managedFields (FieldsV1), conflicts, merge and removal.

Approximation (documented in the README): the real server derives list/map semantics from each type's OpenAPI
schema; here they come from the field name (see ``ASSOC_KEYS``/``ATOMIC``), which holds for the kinds served.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from typing import Any, Optional

Path = tuple[str, ...]
FieldSet = set[Path]

# Associative lists (listType=map) and their keys, by field name. Keys with a default get it filled in.
ASSOC_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",), "env": ("name",),
    "volumes": ("name",), "volumeMounts": ("mountPath",), "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",), "conditions": ("type",), "ownerReferences": ("uid",), "hostAliases": ("ip",),
    "taints": ("key", "effect"), "addresses": ("type", "address"),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"), "resourceClaims": ("name",),
}
KEY_DEFAULTS = {"protocol": "TCP"}
SET_LISTS = {"finalizers"}
# Structs/maps replaced as a whole (structType=atomic / mapType=atomic), by path suffix.
ATOMIC_SUFFIXES: list[tuple[str, ...]] = [("spec", "selector"), ("tolerations",), ("nodeSelectorTerms",)]
# Fields the field manager never tracks.
UNTRACKED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                  "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"}


def _list_keys(field: str, parent: Optional[str]) -> Optional[tuple[str, ...]]:
    if field == "ports":
        # Service ports are keyed by port+protocol, container ports by containerPort+protocol.
        return ("port", "protocol") if parent == "spec" else ("containerPort", "protocol")
    return ASSOC_KEYS.get(field)


def _is_atomic(names: tuple[str, ...], kind: str) -> bool:
    if names[-2:] == ("spec", "selector") and kind == "Service":
        return False  # a Service selector is a granular map
    return any(names[-len(s):] == s for s in ATOMIC_SUFFIXES)


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    vals = {k: item.get(k, KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps({k: v for k, v in vals.items() if v is not None}, sort_keys=True, separators=(",", ":"))


def _match_item(item: Any, key: str, keys: tuple[str, ...]) -> bool:
    return isinstance(item, dict) and item_key(item, keys) == key


# --- field sets --------------------------------------------------------------------------------

def field_set(obj: dict[str, Any], kind: str, include_status: bool = False, only_status: bool = False) -> FieldSet:
    out: FieldSet = set()
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "status" and not (include_status or only_status):
            continue
        if only_status and k != "status":
            continue
        if k == "metadata" and isinstance(v, dict):
            v = {mk: mv for mk, mv in v.items() if mk not in UNTRACKED_META}
            if not v:
                continue
        _walk(v, ("f:" + k,), (k,), kind, out)
    return out


def _walk(value: Any, path: Path, names: tuple[str, ...], kind: str, out: FieldSet) -> None:
    if isinstance(value, dict) and value and not _is_atomic(names, kind):
        for k, v in value.items():
            if v is None:
                continue
            _walk(v, (*path, "f:" + k), (*names, k), kind, out)
        return
    if isinstance(value, list) and value:
        field = names[-1]
        parent = names[-2] if len(names) > 1 else None
        keys = _list_keys(field, parent)
        if keys and all(isinstance(i, dict) for i in value) and not _is_atomic(names, kind):
            for item in value:
                kp = (*path, item_key(item, keys))
                out.add((*kp, "."))
                for ik, iv in item.items():
                    if iv is not None:
                        _walk(iv, (*kp, "f:" + ik), (*names, field, ik), kind, out)
            return
        if field in SET_LISTS and all(not isinstance(i, (dict, list)) for i in value):
            for item in value:
                out.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
            return
    out.add(path)


def first_duplicate(value: Any, kind: str, path: Path = (), names: tuple[str, ...] = ()) -> Optional[tuple[Path, str]]:
    """(list path, key) of the first associative-list key that appears twice in an applied configuration."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = first_duplicate(v, kind, (*path, "f:" + k), (*names, k))
            if found:
                return found
    elif isinstance(value, list) and names and not _is_atomic(names, kind):
        keys = _list_keys(names[-1], names[-2] if len(names) > 1 else None)
        if keys and all(isinstance(i, dict) for i in value):
            seen: set[str] = set()
            for item in value:
                key = item_key(item, keys)
                if key in seen:
                    return path, key
                seen.add(key)
                found = first_duplicate(item, kind, (*path, key), (*names, names[-1]))
                if found:
                    return found
    return None


def to_fields_v1(fs: FieldSet) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(fs):
        cur = root
        for elem in p:
            cur = cur.setdefault(elem, {})
    return root


def from_fields_v1(doc: dict[str, Any], prefix: Path = ()) -> FieldSet:
    out: FieldSet = set()
    for k, v in doc.items():
        p = (*prefix, k)
        if isinstance(v, dict) and v:
            out |= from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def path_string(p: Path) -> str:
    """``.spec.template.spec.containers[name="x"].image`` as in the real conflict messages."""
    s = ""
    for elem in p:
        if elem == ".":
            continue
        if elem.startswith("f:"):
            s += "." + elem[2:]
        elif elem.startswith("k:"):
            kv = json.loads(elem[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]"
        elif elem.startswith("v:"):
            s += "[=" + elem[2:] + "]"
        elif elem.startswith("i:"):
            s += "[" + elem[2:] + "]"
    return s


# --- reading values at paths ---------------------------------------------------------------------

_MISSING = object()


def _child(node: Any, elem: str, names: tuple[str, ...]) -> Any:
    if elem.startswith("f:"):
        return node.get(elem[2:], _MISSING) if isinstance(node, dict) else _MISSING
    if elem.startswith("k:") and isinstance(node, list):
        keys = tuple(json.loads(elem[2:]).keys())
        return next((i for i in node if _match_item(i, elem, keys)), _MISSING)
    if elem.startswith("v:") and isinstance(node, list):
        val = json.loads(elem[2:])
        return val if val in node else _MISSING
    return _MISSING


def value_at(obj: Any, p: Path) -> Any:
    cur = obj
    names: tuple[str, ...] = ()
    for elem in p:
        if elem == ".":
            break
        cur = _child(cur, elem, names)
        if cur is _MISSING:
            return _MISSING
        if elem.startswith("f:"):
            names = (*names, elem[2:])
    return cur


def remove_path(obj: Any, p: Path) -> None:
    """Remove the field (or list item, for ``k:``/``v:`` paths and their ``.``) that ``p`` names."""
    target = p[:-1] if p and p[-1] == "." else p
    if not target:
        return
    parent = value_at(obj, target[:-1]) if len(target) > 1 else obj
    last = target[-1]
    if parent is _MISSING:
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        keys = tuple(json.loads(last[2:]).keys())
        parent[:] = [i for i in parent if not _match_item(i, last, keys)]
    elif last.startswith("v:") and isinstance(parent, list):
        val = json.loads(last[2:])
        parent[:] = [i for i in parent if i != val]


# --- merge ---------------------------------------------------------------------------------------

def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def apply_merge(live: Any, cfg: Any, names: tuple[str, ...], kind: str) -> Any:
    if isinstance(cfg, dict) and isinstance(live, dict) and not (names and _is_atomic(names, kind)):
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            out[k] = apply_merge(live.get(k), v, (*names, k), kind)
        return out
    if isinstance(cfg, list) and isinstance(live, list) and names:
        field = names[-1]
        keys = _list_keys(field, names[-2] if len(names) > 1 else None)
        if keys and not _is_atomic(names, kind):
            out_list = copy.deepcopy(live)
            for item in cfg:
                if not isinstance(item, dict):
                    return copy.deepcopy(cfg)
                key = item_key(item, keys)
                idx = next((i for i, e in enumerate(out_list) if _match_item(e, key, keys)), None)
                if idx is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[idx] = apply_merge(out_list[idx], item, names, kind)
            return out_list
        if field in SET_LISTS:
            return list(live) + [x for x in cfg if x not in live]
    return copy.deepcopy(cfg)


# --- managedFields bookkeeping ----------------------------------------------------------------------

@dataclass
class Manager:
    manager: str
    operation: str  # Apply | Update
    api_version: str
    time: str
    fields: FieldSet
    subresource: str = ""

    def ident(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def label(self) -> str:
        """How the real server names a manager in conflict messages."""
        s = json.dumps(self.manager)
        if self.subresource:
            s += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            s += f" using {self.api_version}"
        return s


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_managers(obj: dict[str, Any]) -> list[Manager]:
    out = []
    for e in (obj.get("metadata") or {}).get("managedFields") or []:
        out.append(Manager(e.get("manager", ""), e.get("operation", "Update"), e.get("apiVersion", ""),
                           e.get("time", ""), from_fields_v1(e.get("fieldsV1") or {}), e.get("subresource", "")))
    return out


def write_managers(obj: dict[str, Any], managers: list[Manager]) -> None:
    entries = []
    for m in managers:
        if not m.fields:
            continue
        e: dict[str, Any] = {"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
                             "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(m.fields)}
        if m.subresource:
            e["subresource"] = m.subresource
        entries.append(e)
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def _find(managers: list[Manager], ident: tuple[str, str, str]) -> Optional[Manager]:
    return next((m for m in managers if m.ident() == ident), None)


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[Manager, Path]]) -> None:
        super().__init__("conflict")
        self.conflicts = conflicts

    def message(self) -> str:
        c = self.conflicts
        if len(c) == 1:
            return f"Apply failed with 1 conflict: conflict with {c[0][0].label()}: {path_string(c[0][1])}"
        by_mgr: dict[str, list[str]] = {}
        for m, p in c:
            by_mgr.setdefault(m.label(), []).append(path_string(p))
        lines = []
        for label in sorted(by_mgr):
            lines.append(f"conflicts with {label}:")
            lines.extend(f"- {p}" for p in by_mgr[label])
        return f"Apply failed with {len(c)} conflicts: " + "\n".join(lines)

    def causes(self) -> list[dict[str, str]]:
        return [{"reason": "FieldManagerConflict", "message": f"conflict with {m.label()}", "field": path_string(p)}
                for m, p in self.conflicts]


def server_side_apply(live: Optional[dict[str, Any]], cfg: dict[str, Any], manager: str, force: bool,
                      api_version: str, kind: str, subresource: str = "") -> dict[str, Any]:
    """The object after applying ``cfg`` as ``manager``; raises ApplyConflict. managedFields updated."""
    cfg = drop_nulls(cfg)
    base = copy.deepcopy(live) if live is not None else {}
    managers = read_managers(base)
    only_status = subresource == "status"
    new_set = field_set(cfg, kind, only_status=only_status)
    me = _find(managers, (manager, "Apply", subresource))
    old_set = me.fields if me else set()
    body = {k: v for k, v in cfg.items() if (k == "status") == only_status or k in ("apiVersion", "kind")}
    if "metadata" in cfg and not only_status:
        body["metadata"] = {k: v for k, v in cfg["metadata"].items() if k not in UNTRACKED_META}
    merged = apply_merge(base, body, (), kind)
    conflicts: list[tuple[Manager, Path]] = []
    for m in managers:
        if m is me:
            continue
        for p in sorted(new_set & m.fields):
            if p[-1] == ".":
                continue
            if value_at(base, p) != value_at(merged, p):
                conflicts.append((m, p))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for m, p in conflicts:
        m.fields.discard(p)
    others: FieldSet = set()
    for m in managers:
        if m is not me:
            others |= m.fields
    for p in sorted(old_set - new_set, key=len):
        node = p[:-1] if p[-1] == "." else p
        if any(o[: len(node)] == node for o in others):
            continue  # another manager still owns this field or something inside it
        if len(p) >= 2 and p[-2].startswith("k:") and p[-1].startswith("f:") and p[-1][2:] in json.loads(p[-2][2:]):
            continue  # a key field stays as long as its item does
        remove_path(merged, p)
    if me is None:
        me = Manager(manager, "Apply", api_version, now_rfc3339(), set(), subresource)
        managers.append(me)
    me.fields = new_set
    me.api_version = api_version
    me.time = now_rfc3339()
    write_managers(merged, managers)
    return merged


def record_update(old: Optional[dict[str, Any]], new: dict[str, Any], manager: str, api_version: str, kind: str,
                  subresource: str = "") -> None:
    """Give ``manager`` (operation Update) the fields this write changed; others lose them."""
    managers = read_managers(old) if old is not None else []
    only_status = subresource == "status"
    new_fs = field_set(new, kind, only_status=only_status)
    old_fs = field_set(old, kind, only_status=only_status) if old is not None else set()
    changed = {p for p in new_fs if old is None or value_at(old, p) != value_at(new, p)}
    removed = old_fs - new_fs
    for m in managers:
        m.fields -= changed
        m.fields = {p for p in m.fields if not any(p[: len(r)] == r for r in removed)}
    if changed:
        me = _find(managers, (manager, "Update", subresource))
        if me is None:
            me = Manager(manager, "Update", api_version, now_rfc3339(), set(), subresource)
            managers.append(me)
        me.fields |= changed
        me.time = now_rfc3339()
        me.api_version = api_version
    write_managers(new, managers)
