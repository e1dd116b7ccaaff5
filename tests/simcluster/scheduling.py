"""Pure scheduling predicates of the DaemonSet controller: nodeSelector, required node affinity, taints/tolerations.

Mirrors ``NodeShouldRunDaemonPod`` of the real controller: it answers (should_run, should_continue_running). An
untolerated NoSchedule taint keeps a pod already there running; an untolerated NoExecute taint evicts it.
PreferNoSchedule and preferred affinity never matter for DaemonSets.
"""

from __future__ import annotations

from typing import Any, Optional

Obj = dict[str, Any]

# Tolerations the real DaemonSet controller adds to every daemon pod (util.AddOrUpdateDaemonPodTolerations).
DAEMON_TOLERATIONS: list[Obj] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
HOST_NETWORK_TOLERATION: Obj = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                                "effect": "NoSchedule"}


def toleration_tolerates(toleration: Obj, taint: Obj) -> bool:
    """``v1.Toleration.ToleratesTaint``: empty effect matches every effect; empty key with Exists matches all keys."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    if operator == "Equal":
        return bool(key) and (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taints(taints: list[Obj], tolerations: list[Obj], effects: tuple[str, ...]) -> list[Obj]:
    return [t for t in taints if t.get("effect") in effects
            and not any(toleration_tolerates(tol, t) for tol in tolerations)]


def _requirement_matches(requirement: Obj, value: Optional[str]) -> bool:
    operator = requirement.get("operator")
    values = [str(v) for v in requirement.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            left, right = int(value), int(values[0])
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def node_selector_term_matches(term: Obj, node: Obj) -> bool:
    """One NodeSelectorTerm: every matchExpression (labels) and matchField (metadata.name) must hold; an empty term
    matches nothing, as in the real scheduler."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    for requirement in expressions:
        if not _requirement_matches(requirement, labels.get(requirement.get("key", ""))):
            return False
    for requirement in fields:
        value = node["metadata"].get("name") if requirement.get("key") == "metadata.name" else None
        if not _requirement_matches(requirement, value):
            return False
    return True


def node_matches_pod_spec(spec: Obj, node: Obj) -> bool:
    """nodeSelector (every pair) AND requiredDuringSchedulingIgnoredDuringExecution (any term)."""
    labels = node.get("metadata", {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None:
        return any(node_selector_term_matches(term, node) for term in terms)
    return True


def daemon_tolerations(spec: Obj) -> list[Obj]:
    """The pod's tolerations plus the ones the DaemonSet controller always adds."""
    tolerations = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        extra.append(HOST_NETWORK_TOLERATION)
    for toleration in extra:
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def node_should_run_daemon_pod(template_spec: Obj, node: Obj) -> tuple[bool, bool]:
    """(should_run, should_continue_running) for a DaemonSet pod template on ``node``."""
    if not node_matches_pod_spec(template_spec, node):
        return False, False
    taints = node.get("spec", {}).get("taints") or []
    tolerations = daemon_tolerations(template_spec)
    if untolerated_taints(taints, tolerations, ("NoExecute",)):
        return False, False
    if untolerated_taints(taints, tolerations, ("NoSchedule",)):
        return False, True
    return True, True


def scaled_value(value: Any, total: int, round_up: bool, default: Any) -> int:
    """intstr.GetScaledValueFromIntOrPercent for maxUnavailable/maxSurge ("25%" or 1)."""
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        scaled = percent * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(text)
