"""JSON merge patch (RFC 7386), strategic merge patch (approximated by field name) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any, Optional

from .errors import ApiError, bad_request

# Strategic-merge keys by list field name. The real server reads them from the Go struct tags of each type;
# keying by field name is an approximation that holds for every kind served here.
SMP_MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip", "taints": "key", "addresses": "type",
    "secrets": "name", "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy=merge without key).
SMP_PRIMITIVE_MERGE = {"finalizers"}


def _ports_key(parent_field: Optional[str]) -> str:
    # ports in a Service spec merge by "port", in a container by "containerPort".
    return "port" if parent_field == "spec" else "containerPort"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any, field_name: Optional[str] = None,
                          parent_field: Optional[str] = None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in (v or [])]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, list):
            result[k] = _smp_list(result.get(k), v, k, field_name)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(result.get(k), v, k, field_name)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        else:
            result[k] = v
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(current: Any, patch: list[Any], name: str, parent: Optional[str]) -> list[Any]:
    key = SMP_MERGE_KEYS.get(name)
    if name == "ports":
        key = _ports_key(parent)
    if isinstance(current, list) and name in SMP_PRIMITIVE_MERGE:
        return list(current) + [x for x in patch if x not in current]
    if key is None or not isinstance(current, list):
        # replace, but honour $patch:delete markers that may appear in an atomic list patch
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            continue
        kv = item.get(key)
        idx = next((i for i, e in enumerate(result) if isinstance(e, dict) and e.get(key) == kv), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(strategic_merge_patch({}, item, name, parent))
        else:
            result[idx] = strategic_merge_patch(result[idx], item, name, parent)
    return result


# --- RFC 6902 ------------------------------------------------------------------------------------

def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    if not pointer.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: invalid path {pointer}")
    toks = [_unescape(t) for t in pointer.split("/")[1:]]
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _missing(pointer)
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise _missing(pointer) from None
        else:
            raise _missing(pointer)
    return cur, toks[-1]


def _missing(pointer: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                    f"doc is missing path: \"{pointer}\": missing value", {})


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, last = _walk(doc, pointer)
    try:
        return parent[int(last)] if isinstance(parent, list) else parent[last]
    except (KeyError, ValueError, IndexError, TypeError):
        raise _missing(pointer) from None


def _remove(doc: Any, pointer: str) -> Any:
    parent, last = _walk(doc, pointer)
    try:
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)
    except (KeyError, ValueError, IndexError, TypeError):
        raise _missing(pointer) from None


def _add(doc: Any, pointer: str, value: Any, replace: bool = False) -> Any:
    if pointer == "":
        return value
    parent, last = _walk(doc, pointer)
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise _missing(pointer) from None
            if replace:
                parent[i] = value
            else:
                parent.insert(i, value)
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise _missing(pointer)
        parent[last] = value
    else:
        raise _missing(pointer)
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("the server rejected our request due to an error in our request: "
                          "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            val = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, val)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op.get("from", ""))))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                               f"testing value {path} failed: test failed", {})
        else:
            raise bad_request(f"the server rejected our request due to an error in our request: "
                              f"Unexpected kind: {kind}")
    return doc
