"""The DaemonSet scheduling predicate: nodeSelector, required node affinity, taints vs tolerations."""

from __future__ import annotations

from typing import Any

import pytest

from simcluster.scheduling import (
    node_matches_pod_spec,
    node_should_run_daemon_pod,
    scaled_value,
    toleration_tolerates,
)

CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node(name: str = "n1", labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None) -> Any:
    return {"metadata": {"name": name, "labels": labels or {"kubernetes.io/os": "linux"}},
            "spec": {"taints": taints or []}}


@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    ({"operator": "Exists"}, CONTROL_PLANE, True),  # empty key + Exists tolerates everything
    ({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}, CONTROL_PLANE, True),
    ({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoExecute"}, CONTROL_PLANE,
     False),
    ({"key": "other", "operator": "Exists"}, CONTROL_PLANE, False),
    ({"key": "dedicated", "value": "gpu"}, {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, True),
    ({"key": "dedicated", "value": "cpu"}, {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, False),
    ({"operator": "Equal", "value": ""}, CONTROL_PLANE, False),  # Equal needs a key
])
def test_toleration_matching(toleration: Any, taint: Any, expected: bool) -> None:
    assert toleration_tolerates(toleration, taint) is expected


def test_untolerated_noschedule_keeps_running_pods_but_blocks_new_ones() -> None:
    assert node_should_run_daemon_pod({}, node(taints=[CONTROL_PLANE])) == (False, True)
    assert node_should_run_daemon_pod({"tolerations": [{"operator": "Exists"}]}, node(taints=[CONTROL_PLANE])) == (
        True, True)


def test_untolerated_noexecute_evicts() -> None:
    taint = {"key": "maintenance", "effect": "NoExecute"}
    assert node_should_run_daemon_pod({}, node(taints=[taint])) == (False, False)


def test_prefer_no_schedule_and_daemon_default_tolerations_do_not_block() -> None:
    taints = [{"key": "x", "effect": "PreferNoSchedule"}, {"key": "node.kubernetes.io/unschedulable",
                                                          "effect": "NoSchedule"},
              {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]
    assert node_should_run_daemon_pod({}, node(taints=taints)) == (True, True)


def test_node_selector_mismatch_means_neither_run_nor_continue() -> None:
    spec = {"nodeSelector": {"disk": "ssd"}}
    assert node_should_run_daemon_pod(spec, node(labels={"disk": "hdd"})) == (False, False)
    assert node_should_run_daemon_pod(spec, node(labels={"disk": "ssd"})) == (True, True)


@pytest.mark.parametrize(("expression", "labels", "expected"), [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "a"}, True),
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "c"}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
    ({"key": "zone", "operator": "Exists"}, {}, False),
    ({"key": "zone", "operator": "DoesNotExist"}, {}, True),
    ({"key": "cores", "operator": "Gt", "values": ["4"]}, {"cores": "8"}, True),
    ({"key": "cores", "operator": "Lt", "values": ["4"]}, {"cores": "8"}, False),
])
def test_required_node_affinity_expressions(expression: Any, labels: dict[str, str], expected: bool) -> None:
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}}
    assert node_matches_pod_spec(spec, node(labels=labels)) is expected


def test_affinity_terms_are_ored_and_match_fields_use_the_node_name() -> None:
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]},
        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
    ]}}}}
    assert node_matches_pod_spec(spec, node("n2"))
    assert node_matches_pod_spec(spec, node("n3", labels={"gpu": "yes"}))
    assert not node_matches_pod_spec(spec, node("n3"))


@pytest.mark.parametrize(("value", "total", "round_up", "expected"), [
    ("100%", 3, True, 3), ("50%", 3, True, 2), ("50%", 3, False, 1), (1, 3, True, 1), (None, 3, True, 1),
    ("2", 5, True, 2),
])
def test_scaled_value(value: Any, total: int, round_up: bool, expected: int) -> None:
    assert scaled_value(value, total, round_up, 1) == expected
