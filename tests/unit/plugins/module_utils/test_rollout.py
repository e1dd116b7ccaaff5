# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout: the DaemonSet predicate, the agent's summary, the per-node report, the messages and the watch loop."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Optional, cast

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import Cluster, ResourceInfo, WatchExpiredError
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ForbiddenError, RolloutError
from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import (
    RAW_SUMMARY_LIMIT,
    RolloutWaiter,
    WatchState,
    annotate_nodes,
    build_report,
    daemonset_progress,
    eligible_nodes,
    is_current_pod,
    metrics_path,
    metrics_summary,
    no_nodes_message,
    node_not_ready,
    node_report,
    node_warnings,
    parse_metrics,
    parse_summary,
    pod_node,
    pod_selector,
    pull_failure_message,
    rollout_complete,
    start_failure,
    timeout_message,
    warning_events,
)

DS_UID = "ds-uid-1"
SUMMARY_OK = {
    "v": 1,
    "node": "n1",
    "complete": True,
    "ok": 3,
    "failed": 0,
    "skipped": 1,
    "bytes": 3000,
    "seconds": 1.5,
    "attempts": 4,
    "errors": {},
    "retries": {"r/app:v1": 2},
    "truncated": False,
}
DENIED = (
    'node labels: failed to patch node n1: 403 Forbidden: nodes "n1" is forbidden: User '
    '"system:serviceaccount:prefetch:imgs" cannot patch resource "nodes" in API group "" at the cluster scope'
)
SUMMARY_FAILED = {
    **SUMMARY_OK,
    "ok": 2,
    "failed": 1,
    "errors": {"r/missing:v1": "not_found: manifest unknown"},
}


def as_cluster(fake: Any) -> Cluster:
    """The scripted fake implements the part of Cluster that RolloutWaiter uses (get, list, watch)."""
    return cast(Cluster, fake)


def daemonset(
    generation: int = 2,
    observed: Optional[int] = 2,
    desired: int = 2,
    updated: int = 2,
    available: int = 2,
    unavailable: Optional[int] = None,
    template_generation: str = "2",
    node_selector: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
        "numberReady": available,
    }
    if observed is not None:
        status["observedGeneration"] = observed
    if unavailable is not None:
        status["numberUnavailable"] = unavailable
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "imgs",
            "namespace": "prefetch",
            "uid": DS_UID,
            "generation": generation,
            "annotations": {"deprecated.daemonset.template.generation": template_generation},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "imgs"}},
            "template": {
                "metadata": {"annotations": {"prefetch.stackrox.io/config-hash": "h2"}},
                "spec": {"nodeSelector": node_selector or {}, "tolerations": [{"operator": "Exists"}]},
            },
        },
        "status": status,
    }


def terminated(message: Optional[str], exit_code: int = 0, reason: str = "Completed") -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if message is not None:
        state["message"] = message
    return {"terminated": state}


def pod(
    name: str,
    node: str,
    init_state: Optional[dict[str, Any]] = None,
    last_state: Optional[dict[str, Any]] = None,
    template_generation: Optional[str] = "2",
    owner_uid: str = DS_UID,
    phase: str = "Running",
    created: str = "2026-11-24T10:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    labels = {"app": "imgs"}
    if template_generation is not None:
        labels["pod-template-generation"] = template_generation
    metadata: dict[str, Any] = {
        "name": name,
        "labels": labels,
        "ownerReferences": [{"kind": "DaemonSet", "name": "imgs", "uid": owner_uid}],
        "creationTimestamp": created,
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-24T10:05:00Z"
    status: dict[str, Any] = {"phase": phase}
    if init_state is not None or last_state is not None:
        status["initContainerStatuses"] = [
            {"name": "prefetch", "state": init_state or {}, "lastState": last_state or {}, "restartCount": 0}
        ]
    return {"metadata": metadata, "spec": {"nodeName": node}, "status": status}


def done_pod(name: str, node: str, summary: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    return pod(name, node, terminated(json.dumps(summary or SUMMARY_OK)))


# --- DaemonSet predicate -----------------------------------------------------------------------------------------


class TestDaemonsetProgress:
    def test_complete_when_current_updated_and_available(self) -> None:
        assert daemonset_progress(daemonset()).done

    def test_not_done_before_the_controller_observed_anything(self) -> None:
        progress = daemonset_progress(daemonset(observed=None))
        assert not progress.done and not progress.no_nodes
        assert "generation 2" in progress.reason

    def test_not_done_while_observed_generation_is_old(self) -> None:
        assert not daemonset_progress(daemonset(generation=3, observed=2)).done

    def test_observed_generation_ahead_counts_as_current(self) -> None:
        assert daemonset_progress(daemonset(generation=2, observed=3)).done

    def test_zero_desired_nodes_is_a_failure_not_a_success(self) -> None:
        progress = daemonset_progress(daemonset(desired=0, updated=0, available=0))
        assert not progress.done and progress.no_nodes

    def test_zero_desired_before_observation_is_still_waiting(self) -> None:
        progress = daemonset_progress(daemonset(observed=1, desired=0, updated=0, available=0))
        assert not progress.done and not progress.no_nodes

    @pytest.mark.parametrize(
        ("updated", "available", "unavailable"), [(1, 2, None), (2, 1, None), (2, 2, 1), (3, 2, None)]
    )
    def test_not_done_unless_updated_equals_desired_equals_available(
        self, updated: int, available: int, unavailable: Optional[int]
    ) -> None:
        progress = daemonset_progress(daemonset(updated=updated, available=available, unavailable=unavailable))
        assert not progress.done
        assert "updated" in progress.reason

    def test_unavailable_zero_is_fine(self) -> None:
        assert daemonset_progress(daemonset(unavailable=0)).done


class TestCurrentPods:
    def test_pod_of_the_current_template_generation(self) -> None:
        assert is_current_pod(pod("a", "n1"), daemonset())

    def test_pod_of_an_old_template_generation(self) -> None:
        assert not is_current_pod(pod("a", "n1", template_generation="1"), daemonset())

    def test_pod_being_deleted(self) -> None:
        assert not is_current_pod(pod("a", "n1", deleting=True), daemonset())

    def test_pod_of_another_owner(self) -> None:
        assert not is_current_pod(pod("a", "n1", owner_uid="other"), daemonset())

    def test_config_hash_decides_without_template_generation(self) -> None:
        without_generation = pod("a", "n1", template_generation=None)
        without_generation["metadata"]["annotations"] = {"prefetch.stackrox.io/config-hash": "h1"}
        assert not is_current_pod(without_generation, daemonset())
        without_generation["metadata"]["annotations"] = {"prefetch.stackrox.io/config-hash": "h2"}
        assert is_current_pod(without_generation, daemonset())


class TestRolloutComplete:
    def test_done_when_every_current_pod_finished_prefetch(self) -> None:
        assert rollout_complete(daemonset(), [done_pod("a", "n1"), done_pod("b", "n2")]).done

    def test_not_done_while_an_init_container_runs(self) -> None:
        running = pod("b", "n2", {"running": {"startedAt": "2026-11-24T10:00:01Z"}})
        progress = rollout_complete(daemonset(), [done_pod("a", "n1"), running])
        assert not progress.done and "1 pod(s)" in progress.reason

    def test_not_done_with_fewer_current_pods_than_desired(self) -> None:
        old = done_pod("b", "n2")
        old["metadata"]["labels"]["pod-template-generation"] = "1"
        progress = rollout_complete(daemonset(), [done_pod("a", "n1"), old])
        assert not progress.done and "1/2" in progress.reason

    def test_daemonset_predicate_comes_first(self) -> None:
        progress = rollout_complete(daemonset(available=1), [done_pod("a", "n1"), done_pod("b", "n2")])
        assert not progress.done

    def test_last_state_summary_counts_when_the_container_is_idle(self) -> None:
        idle = pod("b", "n2", init_state={}, last_state=terminated(json.dumps(SUMMARY_OK)))
        assert rollout_complete(daemonset(), [done_pod("a", "n1"), idle]).done


# --- summary parsing ----------------------------------------------------------------------------------------------


class TestParseSummary:
    def test_good_summary(self) -> None:
        summary, problem = parse_summary(json.dumps(SUMMARY_FAILED))
        assert problem == ""
        assert summary is not None
        assert (summary["ok"], summary["failed"], summary["skipped"]) == (2, 1, 1)
        assert summary["errors"] == {"r/missing:v1": "not_found: manifest unknown"}
        assert summary["retries"] == {"r/app:v1": 2}
        assert summary["complete"] and not summary["truncated"]

    def test_truncated_summary_keeps_exact_counts(self) -> None:
        summary, _problem = parse_summary(json.dumps({**SUMMARY_FAILED, "failed": 40, "errors": {}, "truncated": True}))
        assert summary is not None and summary["failed"] == 40 and summary["truncated"]

    @pytest.mark.parametrize("message", [None, "", "   \n"])
    def test_missing_summary(self, message: Optional[str]) -> None:
        summary, problem = parse_summary(message)
        assert summary is None and problem == "no summary in the termination message"

    def test_garbled_summary_is_cut_short(self) -> None:
        garbled = '{"v":1,"ok":3,' + "x" * 5000
        summary, problem = parse_summary(garbled)
        assert summary is None and problem.startswith("unreadable summary: {")
        assert len(problem) <= len("unreadable summary: ") + RAW_SUMMARY_LIMIT

    def test_text_that_is_not_a_summary(self) -> None:
        summary, problem = parse_summary('["ok"]')
        assert summary is None and problem.startswith("unexpected summary")

    def test_warnings_are_carried(self) -> None:
        summary, _problem = parse_summary(json.dumps({**SUMMARY_OK, "warnings": [DENIED, "metrics: gave\nup"]}))
        assert summary is not None and summary["warnings"] == [DENIED, "metrics: gave up"]

    def test_a_summary_without_warnings_has_none(self) -> None:
        summary, _problem = parse_summary(json.dumps(SUMMARY_OK))
        assert summary is not None and summary["warnings"] == []

    def test_odd_warnings_are_bounded(self) -> None:
        odd = {**SUMMARY_OK, "warnings": ["x" * 5000, "", 7, *[f"w{i}" for i in range(20)]]}
        summary, _problem = parse_summary(json.dumps(odd))
        assert summary is not None
        assert summary["warnings"][0] == "x" * 397 + "..." and summary["warnings"][1] == "7"
        assert len(summary["warnings"]) <= 8
        summary, _problem = parse_summary(json.dumps({**SUMMARY_OK, "warnings": "not a list"}))
        assert summary is not None and summary["warnings"] == []

    def test_wrong_types_become_zero(self) -> None:
        summary, _problem = parse_summary(json.dumps({"ok": "3", "failed": True, "seconds": "x", "errors": []}))
        assert summary is not None
        assert (summary["ok"], summary["failed"], summary["seconds"], summary["errors"]) == (0, 0, 0.0, {})


# --- per-node report ----------------------------------------------------------------------------------------------


class TestNodeReport:
    def test_succeeded(self) -> None:
        report = node_report("n1", done_pod("a", "n1"))
        assert report["status"] == "succeeded" and report["pod"] == "a"
        assert (report["ok"], report["skipped"], report["attempts"], report["bytes"]) == (3, 1, 4, 3000)
        assert report["message"] == ""

    def test_failed_image(self) -> None:
        report = node_report("n1", done_pod("a", "n1", SUMMARY_FAILED))
        assert report["status"] == "failed" and report["errors"] == SUMMARY_FAILED["errors"]

    def test_interrupted_run_is_failed(self) -> None:
        report = node_report("n1", done_pod("a", "n1", {**SUMMARY_OK, "complete": False}))
        assert report["status"] == "failed" and "interrupted" in report["message"]

    def test_warnings_reach_the_node_entry_and_leave_the_status_alone(self) -> None:
        report = node_report("n1", done_pod("a", "n1", {**SUMMARY_OK, "warnings": [DENIED]}))
        assert report["status"] == "succeeded" and report["warnings"] == [DENIED] and report["message"] == ""
        failed = node_report("n1", done_pod("a", "n1", {**SUMMARY_FAILED, "warnings": [DENIED]}))
        assert failed["status"] == "failed" and failed["warnings"] == [DENIED]

    def test_every_entry_has_a_warnings_list(self) -> None:
        assert node_report("n1", done_pod("a", "n1"))["warnings"] == []
        assert node_report("n3", None)["warnings"] == []
        assert node_report("n1", pod("a", "n1", {"running": {}}))["warnings"] == []

    def test_truncated_summary_is_noted(self) -> None:
        report = node_report("n1", done_pod("a", "n1", {**SUMMARY_FAILED, "truncated": True}))
        assert "left out" in report["message"]

    def test_missing_summary_is_unknown_with_exit_code(self) -> None:
        report = node_report("n1", pod("a", "n1", terminated(None, 0, "Completed")))
        assert report["status"] == "unknown"
        assert "no summary" in report["message"] and "exit code 0" in report["message"]

    def test_garbled_summary_is_unknown(self) -> None:
        report = node_report("n1", pod("a", "n1", terminated("panic: boom")))
        assert report["status"] == "unknown" and "panic: boom" in report["message"]

    def test_running_is_pulling(self) -> None:
        report = node_report("n1", pod("a", "n1", {"running": {"startedAt": "2026-11-24T10:00:01Z"}}))
        assert report["status"] == "pulling" and "2026-11-24T10:00:01Z" in report["message"]

    def test_agent_image_pull_error_is_pending_with_reason(self) -> None:
        waiting = {"waiting": {"reason": "ErrImagePull", "message": 'failed to pull "agent:v9": not found'}}
        report = node_report("n1", pod("a", "n1", waiting, phase="Pending"))
        assert report["status"] == "pending"
        assert report["message"] == 'ErrImagePull: failed to pull "agent:v9": not found'

    def test_crash_loop_names_the_last_exit(self) -> None:
        waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
        report = node_report("n1", pod("a", "n1", waiting, last_state=terminated(None, 1, "Error"), phase="Pending"))
        assert report["status"] == "pending"
        assert "CrashLoopBackOff" in report["message"] and "last run exited 1: Error" in report["message"]

    def test_unschedulable_pod_is_not_started(self) -> None:
        pending = pod("a", "n1", phase="Pending")
        pending["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}
        ]
        report = node_report("n1", pending)
        assert report["status"] == "not_started" and report["message"] == "Unschedulable: 0/3 nodes are available"

    def test_pending_pod_without_statuses_is_not_started(self) -> None:
        report = node_report("n1", pod("a", "n1", phase="Pending"))
        assert report["status"] == "not_started" and "Pending" in report["message"]

    def test_no_pod_is_not_started(self) -> None:
        report = node_report("n3", None)
        assert report["status"] == "not_started" and report["pod"] is None

    def test_failed_pod_phase_is_unknown(self) -> None:
        evicted = pod("a", "n1", phase="Failed")
        evicted["status"]["message"] = "The node was low on resource: memory."
        report = node_report("n1", evicted)
        assert report["status"] == "unknown" and "memory" in report["message"]


def test_pod_node_from_daemonset_affinity_before_scheduling() -> None:
    unscheduled = pod("a", "", phase="Pending")
    unscheduled["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]
            }
        }
    }
    assert pod_node(unscheduled) == "n7"


class TestBuildReport:
    def test_nodes_sorted_and_totals_summed(self) -> None:
        pods = [done_pod("b", "n2", SUMMARY_FAILED), done_pod("a", "n1")]
        report = build_report(daemonset(), pods)
        assert [node["node"] for node in report["nodes"]] == ["n1", "n2"]
        assert report["totals"] == {
            "nodes": 2,
            "nodes_succeeded": 1,
            "nodes_failed": 1,
            "nodes_error": 0,
            "nodes_gone": 0,
            "nodes_with_warnings": 0,
            "images_ok": 5,
            "images_failed": 1,
            "images_skipped": 2,
            "bytes": 6000,
        }
        assert report["daemonset"]["desiredNumberScheduled"] == 2 and report["daemonset"]["generation"] == 2

    def test_old_pods_are_not_reported(self) -> None:
        old = done_pod("old", "n1", SUMMARY_FAILED)
        old["metadata"]["labels"]["pod-template-generation"] = "1"
        report = build_report(daemonset(), [old, pod("new", "n1", {"running": {}})])
        assert [(node["pod"], node["status"]) for node in report["nodes"]] == [("new", "pulling")]

    def test_expected_nodes_without_a_pod_are_not_started(self) -> None:
        report = build_report(daemonset(), [done_pod("a", "n1")], expected_nodes=["n1", "n3"])
        assert [(node["node"], node["status"]) for node in report["nodes"]] == [
            ("n1", "succeeded"),
            ("n3", "not_started"),
        ]

    def test_newest_pod_wins_on_a_node(self) -> None:
        first = done_pod("first", "n1", SUMMARY_FAILED)
        second = done_pod("second", "n1")
        second["metadata"]["creationTimestamp"] = "2026-11-24T11:00:00Z"
        report = build_report(daemonset(), [second, first])
        assert [node["pod"] for node in report["nodes"]] == ["second"]


# --- messages -----------------------------------------------------------------------------------------------------


def test_nodes_with_warnings_are_counted_and_named_one_line_each() -> None:
    other = "metrics submission: gave up after 5 call(s): invoking metric Submit RPC failed: refused"
    pods = [
        done_pod("a", "n1"),
        done_pod("b", "n2", {**SUMMARY_OK, "warnings": [DENIED]}),
        done_pod("c", "n3", {**SUMMARY_FAILED, "warnings": [other, DENIED]}),
    ]
    report = build_report(daemonset(desired=3, updated=3, available=3), pods)
    assert report["totals"]["nodes_with_warnings"] == 2
    assert node_warnings(report["nodes"]) == [f"node n2: {DENIED}", f"node n3: {other}; {DENIED}"]


def test_pull_failure_message_groups_nodes_per_image_and_reason() -> None:
    nodes = build_report(
        daemonset(desired=3),
        [done_pod("a", "n1", SUMMARY_FAILED), done_pod("b", "n2", SUMMARY_FAILED), done_pod("c", "n3")],
    )["nodes"]
    message = pull_failure_message(nodes)
    assert message == "image pulls failed on 2 of 3 node(s): r/missing:v1: not_found: manifest unknown [n1, n2]"


def test_pull_failure_message_without_error_details() -> None:
    nodes = [node_report("n1", done_pod("a", "n1", {**SUMMARY_FAILED, "errors": {}, "truncated": True}))]
    assert "n1: 1 image(s) failed" in pull_failure_message(nodes)


def test_pull_failure_message_is_bounded() -> None:
    errors = {f"r/img{i:02d}:v1": "not_found: x" for i in range(20)}
    nodes = [node_report("n1", done_pod("a", "n1", {**SUMMARY_FAILED, "failed": 20, "errors": errors}))]
    message = pull_failure_message(nodes)
    assert "r/img07:v1" in message and "r/img08:v1" not in message and "and 12 more" in message


def test_timeout_message_names_pulling_and_waiting_nodes_and_events() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image agent:v9"}}
    pods = [done_pod("a", "n1"), pod("b", "n2", {"running": {}}), pod("c", "n3", waiting, phase="Pending")]
    report = build_report(daemonset(desired=4), pods, expected_nodes=["n1", "n2", "n3", "n4"])
    progress = rollout_complete(daemonset(desired=4, available=1, updated=3), pods)
    events = ["DaemonSet imgs: FailedCreate: pods is forbidden"]
    message = timeout_message("DaemonSet prefetch/imgs", 60, progress, report["nodes"], events)
    assert message.startswith("timed out after 60s waiting for DaemonSet prefetch/imgs (3/4 nodes updated")
    assert "still pulling: n2" in message
    assert "n3 (ImagePullBackOff: Back-off pulling image agent:v9)" in message
    assert "n4 (no pod on this node yet)" in message
    assert "events: DaemonSet imgs: FailedCreate: pods is forbidden" in message


def test_no_nodes_message_names_the_selector() -> None:
    message = no_nodes_message("DaemonSet p/imgs", daemonset(desired=0, node_selector={"gpu": "yes"}), [])
    assert "desiredNumberScheduled is 0" in message and '{"gpu": "yes"}' in message


def test_warning_events_filtered_deduplicated_newest_first() -> None:
    def event(name: str, reason: str, when: str, kind: str = "Warning") -> dict[str, Any]:
        return {
            "type": kind,
            "reason": reason,
            "message": f"{reason} happened",
            "lastTimestamp": when,
            "involvedObject": {"kind": "DaemonSet", "name": name},
        }

    events = [
        event("imgs", "FailedCreate", "2026-11-24T10:00:00Z"),
        event("imgs", "FailedCreate", "2026-11-24T10:01:00Z"),
        event("imgs", "SuccessfulCreate", "2026-11-24T10:02:00Z", kind="Normal"),
        event("other", "FailedCreate", "2026-11-24T10:03:00Z"),
        event("imgs", "FailedDelete", "2026-11-24T10:04:00Z"),
    ]
    assert warning_events(events, {"imgs"}) == [
        "DaemonSet imgs: FailedDelete: FailedDelete happened",
        "DaemonSet imgs: FailedCreate: FailedCreate happened",
    ]


def test_eligible_nodes_by_selector_and_taints() -> None:
    def node(name: str, labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}

    nodes = [
        node("plain", {"pool": "a"}, []),
        node("other-pool", {"pool": "b"}, []),
        node("tainted", {"pool": "a"}, [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        node("prefer", {"pool": "a"}, [{"key": "soft", "effect": "PreferNoSchedule"}]),
    ]
    spec: dict[str, Any] = {"nodeSelector": {"pool": "a"}, "tolerations": []}
    assert eligible_nodes(nodes, spec) == ["plain", "prefer"]
    spec["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]
    assert eligible_nodes(nodes, spec) == ["plain", "prefer", "tainted"]
    spec["tolerations"] = [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]
    assert eligible_nodes(nodes, spec) == ["plain", "prefer"]
    assert eligible_nodes(nodes, {"tolerations": [{"operator": "Exists"}]}) == sorted(
        n["metadata"]["name"] for n in nodes
    )


def test_metrics_parsing_and_summary() -> None:
    text = json.dumps(
        [
            {"attempt_id": "1", "image": "r/a:v1", "node": "n1", "size_bytes": 100, "duration_ms": 5},
            {"attempt_id": "2", "image": "r/b:v1", "node": "n1", "error": "rpc error: code = NotFound"},
            {"attempt_id": "3", "image": "r/a:v1", "node": "n2", "size_bytes": 100},
        ]
    )
    metrics = parse_metrics(text)
    assert len(metrics) == 3
    assert metrics_summary(metrics) == {
        "n1": {"attempts": 2, "failed_attempts": 1, "bytes": 100},
        "n2": {"attempts": 1, "failed_attempts": 0, "bytes": 100},
    }
    assert metrics_path("p", "imgs", "http") == "/api/v1/namespaces/p/services/imgs-metrics:http/proxy/metrics"


@pytest.mark.parametrize("text", ["404 page not found\n", '{"a": 1}'])
def test_metrics_that_are_not_a_list_fail_clearly(text: str) -> None:
    with pytest.raises(Exception, match="metrics aggregator answered"):
        parse_metrics(text)


def test_pod_selector_from_match_labels() -> None:
    assert pod_selector(daemonset()) == "app=imgs"


# --- watch state and the wait loop --------------------------------------------------------------------------------


def test_watch_state_follows_events() -> None:
    state = WatchState("imgs")
    state.sync("daemonsets", [daemonset(), {"metadata": {"name": "other"}}])
    assert state.daemonset is not None and state.daemonset["metadata"]["name"] == "imgs"
    state.sync("pods", [pod("a", "n1")])
    state.apply("pods", {"type": "ADDED", "object": pod("b", "n2")})
    state.apply("pods", {"type": "MODIFIED", "object": done_pod("a", "n1")})
    state.apply("pods", {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert sorted(state.pods) == ["a", "b"] and prefetch_summary_of(state.pods["a"]) is not None
    state.apply("pods", {"type": "DELETED", "object": pod("b", "n2")})
    assert sorted(state.pods) == ["a"]
    state.apply("daemonsets", {"type": "MODIFIED", "object": {"metadata": {"name": "other"}}})
    assert state.daemonset is not None
    state.apply("daemonsets", {"type": "DELETED", "object": daemonset()})
    assert state.daemonset is None


def prefetch_summary_of(p: dict[str, Any]) -> Optional[str]:
    statuses = p["status"].get("initContainerStatuses") or []
    return statuses[0]["state"].get("terminated", {}).get("message") if statuses else None


INFOS = {
    ("apps/v1", "DaemonSet"): ResourceInfo("apps/v1", "DaemonSet", "daemonsets", True),
    ("v1", "Pod"): ResourceInfo("v1", "Pod", "pods", True),
    ("v1", "Node"): ResourceInfo("v1", "Node", "nodes", False),
    ("v1", "Event"): ResourceInfo("v1", "Event", "events", True),
}


class ScriptedCluster:
    """Lists return the given items; each watch call hands out the next scripted batch of events (or raises, at
    once or after some events)."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]], watches: dict[str, list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.relists: dict[str, list[list[dict[str, Any]]]] = {}  # what the 2nd, 3rd, ... list returns
        self.list_calls: dict[str, int] = {}
        self.watch_versions: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo:
        return INFOS[(api_version, kind)]

    def get(self, info: ResourceInfo, name: str, namespace: Optional[str] = None) -> Optional[dict[str, Any]]:
        return next((item for item in self.lists[info.plural] if item["metadata"]["name"] == name), None)

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.plural == "nodes" and "nodes" not in self.lists:
            raise ForbiddenError("nodes is forbidden")  # as for a user who may not list Nodes
        with self.lock:
            self.list_calls[info.plural] = self.list_calls.get(info.plural, 0) + 1
            later = self.relists.get(info.plural) or []
            if self.list_calls[info.plural] > 1 and later:
                self.lists[info.plural] = later.pop(0)
        return list(self.lists.get(info.plural, [])), "10"

    def watch(
        self,
        info: ResourceInfo,
        namespace: Optional[str],
        resource_version: str,
        timeout_seconds: int,
        label_selector: Optional[str] = None,
    ) -> Any:
        with self.lock:
            self.watch_versions.setdefault(info.plural, []).append(resource_version)
            batch = self.watches.get(info.plural, [])
            step = batch.pop(0) if batch else []
        if isinstance(step, Exception):
            raise step
        for item in step:  # an exception inside a batch: the stream breaks after the events before it
            if isinstance(item, Exception):
                raise item
            yield item


def with_version(event_type: str, obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["resourceVersion"] = version
    return {"type": event_type, "object": obj}


def test_waiter_completes_on_watch_events_and_resumes_from_the_last_version() -> None:
    start = daemonset(available=0, updated=0)
    cluster = ScriptedCluster(
        lists={"daemonsets": [start], "pods": [pod("a", "n1", {"running": {}}), pod("b", "n2", {"running": {}})]},
        watches={
            "pods": [
                [with_version("MODIFIED", done_pod("a", "n1"), "11")],
                [with_version("MODIFIED", done_pod("b", "n2"), "12")],
            ],
            "daemonsets": [[], [with_version("MODIFIED", daemonset(), "13")]],
        },
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(start)
    assert state.daemonset is not None and daemonset_progress(state.daemonset).done
    assert cluster.watch_versions["pods"][:2] == ["10", "11"]


def test_waiter_lists_again_after_410_gone() -> None:
    start = daemonset(available=0, updated=0)
    cluster = ScriptedCluster(
        lists={"daemonsets": [start], "pods": [done_pod("a", "n1"), done_pod("b", "n2")]},
        watches={"daemonsets": [WatchExpiredError()], "pods": []},
    )
    cluster.relists["daemonsets"] = [[daemonset()]]  # only the list after the 410 sees the finished DaemonSet
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(start)
    assert state.daemonset is not None and daemonset_progress(state.daemonset).done
    assert cluster.list_calls["daemonsets"] == 2


def test_waiter_times_out_with_the_partial_report() -> None:
    start = daemonset(available=1, updated=2)
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "agent image not found"}}
    nodes: list[dict[str, Any]] = [
        {"metadata": {"name": name, "labels": {}}, "spec": {}} for name in ("n1", "n2", "n3")
    ]
    cluster = ScriptedCluster(
        lists={
            "daemonsets": [start],
            "pods": [done_pod("a", "n1"), pod("b", "n2", waiting, phase="Pending")],
            "nodes": nodes,
            "events": [],
        },
        watches={},
    )
    clock_values = iter([0.0, 0.0] + [100.0] * 50)
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=5, clock=lambda: next(clock_values))
    with pytest.raises(RolloutError) as raised:
        waiter.wait(start)
    message = str(raised.value)
    assert message.startswith("timed out after 5s waiting for DaemonSet prefetch/imgs")
    assert "n2 (ErrImagePull: agent image not found)" in message and "n3 (no pod on this node yet)" in message
    statuses = {node["node"]: node["status"] for node in raised.value.result["nodes"]}
    assert statuses == {"n1": "succeeded", "n2": "pending", "n3": "not_started"}


def test_waiter_fails_at_once_when_no_node_matches() -> None:
    start = daemonset(desired=0, updated=0, available=0, node_selector={"gpu": "yes"})
    failed_create = {
        "type": "Warning",
        "reason": "FailedCreate",
        "message": 'violates PodSecurity "restricted:latest"',
        "involvedObject": {"kind": "DaemonSet", "name": "imgs"},
    }
    cluster = ScriptedCluster(lists={"daemonsets": [start], "pods": [], "events": [failed_create]}, watches={})
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=600)
    with pytest.raises(RolloutError, match="schedules no pods") as raised:
        waiter.wait(start)
    assert "PodSecurity" in str(raised.value)
    assert raised.value.result["nodes"] == []


def test_timeout_message_lists_nodes_with_the_same_reason_once() -> None:
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "agent:v9 not found"}}
    pods = [pod("a", "n1", waiting, phase="Pending"), pod("b", "n2", waiting, phase="Pending")]
    report = build_report(daemonset(), pods)
    progress = rollout_complete(daemonset(available=0), pods)
    message = timeout_message("DaemonSet p/imgs", 60, progress, report["nodes"], [])
    assert message.endswith("not started: n1, n2 (ErrImagePull: agent:v9 not found)")


def test_warning_events_of_several_pods_with_one_cause_are_one_line() -> None:
    events = [
        {
            "type": "Warning",
            "reason": "FailedMount",
            "message": 'secret "pull" not found',
            "lastTimestamp": f"2026-11-24T10:0{index}:00Z",
            "involvedObject": {"kind": "Pod", "name": name},
        }
        for index, name in enumerate(["a", "b", "c"])
    ]
    assert warning_events(events, {"a", "b", "c"}) == ['Pod c (+2 more): FailedMount: secret "pull" not found']


# --- the agent cannot start (fatal summary, crash loop) ------------------------------------------------------------

FATAL = json.dumps(
    {"v": 1, "node": "n1", "complete": False, "ok": 0, "failed": 0, "skipped": 0, "fatal": "CRI socket not answering"}
)
CRASH_LOOP = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}}


def restarted(p: dict[str, Any], count: int = 2) -> dict[str, Any]:
    p["status"]["initContainerStatuses"][0]["restartCount"] = count
    return p


class TestStartFailure:
    def test_fatal_summary_in_state_is_error(self) -> None:
        report = node_report("n1", pod("a", "n1", terminated(FATAL, 1, "Error")))
        assert report["status"] == "error" and report["message"] == "CRI socket not answering (exit code 1)"

    def test_fatal_summary_in_last_state_while_crash_looping(self) -> None:
        p = restarted(pod("a", "n1", CRASH_LOOP, last_state=terminated(FATAL, 1, "Error"), phase="Pending"))
        assert start_failure(p) == "CRI socket not answering (exit code 1)"
        assert node_report("n1", p)["status"] == "error"

    def test_fatal_summary_in_last_state_while_running_again(self) -> None:
        p = restarted(pod("a", "n1", {"running": {"startedAt": "t"}}, last_state=terminated(FATAL, 1, "Error")))
        assert node_report("n1", p)["message"] == "CRI socket not answering (exit code 1)"

    def test_non_json_message_while_crash_looping_is_error(self) -> None:
        last = terminated("Traceback (most recent call last):\n  File x\nImportError: y", 1, "Error")
        p = restarted(pod("a", "n1", CRASH_LOOP, last_state=last, phase="Pending"))
        report = node_report("n1", p)
        assert report["status"] == "error"
        assert report["message"] == "agent exited 1: Traceback (most recent call last):"

    def test_first_non_json_exit_is_still_unknown(self) -> None:
        report = node_report("n1", pod("a", "n1", terminated("panic: boom", 2, "Error")))
        assert report["status"] == "unknown"

    def test_crash_loop_without_message_keeps_waiting_with_exit_code(self) -> None:
        p = restarted(pod("a", "n1", CRASH_LOOP, last_state=terminated(None, 137, "OOMKilled"), phase="Pending"))
        assert start_failure(p) is None
        report = node_report("n1", p)
        assert report["status"] == "pending" and "last run exited 137: OOMKilled)" in report["message"]

    def test_good_current_run_wins_over_an_older_fatal_one(self) -> None:
        p = restarted(pod("a", "n1", terminated(json.dumps(SUMMARY_OK)), last_state=terminated(FATAL, 1, "Error")))
        assert start_failure(p) is None and node_report("n1", p)["status"] == "succeeded"

    def test_agent_image_pull_error_keeps_waiting_with_todays_message(self) -> None:
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "agent:v9"'}}
        p = pod("a", "n1", waiting, phase="Pending")
        assert start_failure(p) is None
        assert node_report("n1", p)["message"] == 'ImagePullBackOff: Back-off pulling image "agent:v9"'

    def test_waiting_message_names_the_last_message(self) -> None:
        last = terminated("some output\nmore", 0, "Completed")
        p = pod("a", "n1", {"waiting": {"reason": "PodInitializing"}}, last_state=last, phase="Pending")
        assert "last run exited 0: Completed: some output)" in node_report("n1", p)["message"]

    def test_parse_summary_keeps_fatal(self) -> None:
        summary, problem = parse_summary('{"v":1,"complete":false,"fatal":"bad flag --pull-policy"}')
        assert problem == "" and summary is not None and summary["fatal"] == "bad flag --pull-policy"


def test_waiter_fails_at_once_when_the_agent_cannot_start() -> None:
    start = daemonset(available=0, updated=2)
    crash = restarted(pod("b", "n2", CRASH_LOOP, last_state=terminated(FATAL, 1, "Error"), phase="Pending"))
    crash3 = restarted(pod("c", "n3", CRASH_LOOP, last_state=terminated(FATAL, 1, "Error"), phase="Pending"))
    cluster = ScriptedCluster(
        lists={"daemonsets": [start], "pods": [pod("a", "n1", {"running": {}}), crash, crash3], "events": []},
        watches={},
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=600)
    with pytest.raises(RolloutError) as raised:
        waiter.wait(start)
    assert str(raised.value) == (
        "DaemonSet prefetch/imgs: the prefetch agent cannot start on 2 of 3 node(s): "
        "n2, n3 (CRI socket not answering (exit code 1))"
    )
    statuses = {node["node"]: node["status"] for node in raised.value.result["nodes"]}
    assert statuses == {"n1": "pulling", "n2": "error", "n3": "error"}
    assert raised.value.result["totals"]["nodes_error"] == 2


# --- nodes deleted, not Ready or cordoned during the rollout -------------------------------------------------------


def node_obj(name: str, ready: Optional[str] = "True", unschedulable: bool = False) -> dict[str, Any]:
    conditions = [] if ready is None else [{
        "type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status." if ready != "True" else "kubelet is posting ready status",
        "lastTransitionTime": "2026-11-24T10:03:00Z"}]
    return {"metadata": {"name": name, "labels": {}}, "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"conditions": conditions}}


class TestNodeStates:
    def test_not_ready_says_why_and_since_when(self) -> None:
        text = node_not_ready(node_obj("n1", ready="Unknown"))
        assert text is not None
        assert "since 2026-11-24T10:03:00Z" in text and "NodeStatusUnknown: Kubelet stopped posting" in text

    def test_ready_or_not_yet_reported_is_none(self) -> None:
        assert node_not_ready(node_obj("n1")) is None
        assert node_not_ready(node_obj("n1", ready=None)) is None

    def test_without_nodes_the_report_is_unchanged(self) -> None:
        reports = [node_report("n1", done_pod("a", "n1"))]
        assert annotate_nodes(reports, None, {"n1", "n2"}) == reports
        assert "node_state" not in reports[0]

    def test_states_of_ready_cordoned_and_not_ready_nodes(self) -> None:
        reports = [node_report("n1", done_pod("a", "n1")), node_report("n2", pod("b", "n2", {"running": {}})),
                   node_report("n3", done_pod("c", "n3"))]
        nodes = {"n1": node_obj("n1"), "n2": node_obj("n2", ready="Unknown"), "n3": node_obj("n3", unschedulable=True)}
        by_node = {r["node"]: r for r in annotate_nodes(reports, nodes, set())}
        assert by_node["n1"]["node_state"] == "ready"
        assert by_node["n2"]["node_state"] == "not_ready" and by_node["n2"]["status"] == "pulling"
        assert by_node["n2"]["message"].startswith("node not Ready since") and "pulling" in by_node["n2"]["message"]
        assert by_node["n3"]["node_state"] == "cordoned" and by_node["n3"]["status"] == "succeeded"

    def test_a_deleted_node_is_gone_unless_it_had_reported(self) -> None:
        reports = [node_report("n1", done_pod("a", "n1")), node_report("n2", pod("b", "n2", {"running": {}}))]
        by_node = {r["node"]: r for r in annotate_nodes(reports, {}, {"n1", "n2", "n3"})}
        assert by_node["n1"]["status"] == "succeeded" and by_node["n1"]["node_state"] == "deleted"
        assert by_node["n2"]["status"] == "gone" and "deleted during the rollout (it was pulling" in by_node["n2"][
            "message"]
        # n3's pod is gone too (garbage-collected with its node): still reported, from the nodes seen before.
        assert by_node["n3"]["status"] == "gone" and by_node["n3"]["pod"] is None

    def test_pods_of_deleted_nodes_are_not_waited_for(self) -> None:
        pods = [done_pod("a", "n1"), pod("b", "n2", {"running": {}})]
        assert not rollout_complete(daemonset(), pods).done
        assert not rollout_complete(daemonset(), pods, {"n1": node_obj("n1"), "n2": node_obj("n2")}).done
        assert rollout_complete(daemonset(desired=1, updated=1, available=1), pods, {"n1": node_obj("n1")}).done

    def test_totals_count_gone_nodes(self) -> None:
        report = build_report(daemonset(desired=1, updated=1, available=1), [done_pod("a", "n1")], None,
                              {"n1": node_obj("n1")}, {"n1", "n2"})
        assert report["totals"]["nodes_gone"] == 1 and report["totals"]["nodes"] == 2

    def test_timeout_message_names_nodes_not_ready_and_deleted(self) -> None:
        reports = annotate_nodes([node_report("n1", pod("a", "n1", {"running": {}}))],
                                 {"n1": node_obj("n1", ready="Unknown")}, {"n1", "n9"})
        message = timeout_message("DaemonSet p/i", 60, daemonset_progress(daemonset(available=1)), reports, [])
        assert "node not Ready: n1 (node not Ready since" in message
        assert "deleted during the rollout: n9" in message
        assert "still pulling" not in message


def test_waiter_ends_when_a_node_is_deleted_mid_rollout() -> None:
    start = daemonset(available=1, updated=2)
    running = pod("b", "n2", {"running": {}})
    cluster = ScriptedCluster(
        lists={"daemonsets": [start], "pods": [done_pod("a", "n1"), running],
               "nodes": [node_obj("n1"), node_obj("n2")]},
        watches={
            "nodes": [[with_version("DELETED", node_obj("n2"), "11")]],
            "daemonsets": [[], [with_version("MODIFIED", daemonset(desired=1, updated=1, available=1), "12")]],
        },
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(start)
    report = waiter.report(state)
    by_node = {r["node"]: r for r in report["nodes"]}
    assert by_node["n2"]["status"] == "gone" and by_node["n2"]["node_state"] == "deleted"
    assert by_node["n1"]["status"] == "succeeded"


def test_waiter_without_node_access_still_completes() -> None:
    cluster = ScriptedCluster(lists={"daemonsets": [daemonset()], "pods": [done_pod("a", "n1"), done_pod("b", "n2")]},
                              watches={})
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(daemonset())
    assert state.nodes is None
    assert all("node_state" not in r for r in waiter.report(state)["nodes"])


class NodesListedLastCluster(ScriptedCluster):
    """The Nodes' list is answered only after the pods': the order a busy API server may pick. (A DaemonSet complete
    at the start is not listed again: the waiter lists its pods and the Nodes itself, without watches.)"""

    def __init__(self, lists: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(lists, watches={})
        self.others_listed = threading.Event()

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.plural == "nodes":
            assert self.others_listed.wait(10)
            time.sleep(0.2)  # let the waiter see the complete rollout first
        listed = super().list_objects(info, namespace, label_selector)
        if "pods" in self.list_calls:
            self.others_listed.set()
        return listed


def test_a_rollout_complete_before_the_nodes_are_listed_still_reports_their_states() -> None:
    cluster = NodesListedLastCluster(
        lists={
            "daemonsets": [daemonset()],
            "pods": [done_pod("a", "n1"), done_pod("b", "n2")],
            "nodes": [node_obj("n1"), node_obj("n2", unschedulable=True)],
        }
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(daemonset())
    reports = {node["node"]: node for node in waiter.report(state)["nodes"]}
    assert reports["n1"]["node_state"] == "ready" and reports["n2"]["node_state"] == "cordoned", reports


def test_a_rollout_complete_at_the_start_lists_once_and_watches_nothing() -> None:
    cluster = ScriptedCluster(
        lists={"daemonsets": [daemonset()], "pods": [done_pod("a", "n1"), done_pod("b", "n2")],
               "nodes": [node_obj("n1"), node_obj("n2")]},
        watches={},
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(daemonset())
    assert cluster.list_calls == {"pods": 1, "nodes": 1} and cluster.watch_versions == {}
    states = {node["node"]: node["node_state"] for node in waiter.report(state)["nodes"]}
    assert states == {"n1": "ready", "n2": "ready"}


def test_a_complete_daemonset_whose_pods_still_pull_watches_on_from_the_first_list() -> None:
    pulling = done_pod("b", "n2")
    pulling["status"]["initContainerStatuses"][0]["state"] = {"running": {"startedAt": "2024-01-01T00:00:00Z"}}
    cluster = ScriptedCluster(
        lists={"daemonsets": [daemonset()], "pods": [done_pod("a", "n1"), pulling],
               "nodes": [node_obj("n1"), node_obj("n2")]},
        watches={"pods": [[with_version("MODIFIED", done_pod("b", "n2"), "11")]]},
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(daemonset())
    assert cluster.list_calls["pods"] == 1 and cluster.watch_versions["pods"][0] == "10"
    assert all(node["status"] == "succeeded" for node in waiter.report(state)["nodes"])
