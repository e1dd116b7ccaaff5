"""Pure helpers over Pod objects shared by the controllers and the kubelet (podutil of the real code base)."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from typing import Any, Optional

Obj = dict[str, Any]

# rand.SafeEncodeString's alphabet: no vowels (no words), no 0/1/3 (look like letters).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Optional[str]) -> Optional[datetime.datetime]:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(SAFE_ALPHABET) for _ in range(length))


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """A stable short hash of a pod template, spelled like ComputeHash's (fnv32a, safe-encoded)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode() + str(collision_count).encode()
    value = 0x811C9DC5
    for byte in hashlib.sha256(data).digest():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    out = []
    for _ in range(10):
        out.append(SAFE_ALPHABET[value % len(SAFE_ALPHABET)])
        value //= len(SAFE_ALPHABET)
        if not value:
            break
    return "".join(out)


def condition(pod: Obj, cond_type: str) -> Optional[Obj]:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == cond_type:
            return dict(cond)
    return None


def is_pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def is_pod_available(pod: Obj, min_ready_seconds: int, now: Optional[datetime.datetime] = None) -> bool:
    """Ready, and Ready for at least minReadySeconds."""
    cond = condition(pod, "Ready")
    if not cond or cond.get("status") != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time(cond.get("lastTransitionTime"))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return since is not None and (now - since).total_seconds() >= min_ready_seconds


def controller_of(obj: Obj) -> Optional[Obj]:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def is_terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Failed", "Succeeded")


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def creation_order_key(pod: Obj) -> tuple[str, int, str]:
    """podByCreationTimestampAndPhase: oldest first, running before pending on ties."""
    phase_rank = 0 if pod.get("status", {}).get("phase") == "Running" else 1
    meta = pod.get("metadata", {})
    return (str(meta.get("creationTimestamp") or ""), phase_rank, str(meta.get("name")))
