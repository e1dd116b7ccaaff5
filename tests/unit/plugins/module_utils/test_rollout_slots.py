# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout with the node-slot cap (parallel_nodes): the cap read from the DaemonSet, `waiting` vs `pulling` from the
agents' Leases, the waves estimate and its warning, and the Lease watch in the waiter (also when it is denied)."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import ResourceInfo
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ForbiddenError, RolloutError
from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import (
    new_warnings,
    progress_line,
    pulling_since,
    snapshot,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import (
    NodeSlots,
    RolloutWaiter,
    WatchState,
    build_report,
    node_report,
    node_slots,
    parse_slot_flags,
    parse_time,
    slot_leases,
    timeout_message,
    wave_seconds,
    waves_needed,
    waves_warning,
)
from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.test_rollout import (
    INFOS,
    SUMMARY_OK,
    ScriptedCluster,
    as_cluster,
    daemonset,
    pod,
    terminated,
    with_version,
)

STARTED = "2026-12-04T06:00:00Z"
T0 = parse_time(STARTED) or 0.0
RUNNING = {"running": {"startedAt": STARTED}}
LEASE_INFO = ResourceInfo("coordination.k8s.io/v1", "Lease", "leases", True)


def capped(parallel_nodes: int = 2, canary: bool = False, spaced: bool = False, **kwargs: Any) -> dict[str, Any]:
    """A DaemonSet whose prefetch init container runs with --parallel-nodes (and --canary)."""
    ds = daemonset(**kwargs)
    flags = ["--parallel-nodes", str(parallel_nodes)] if spaced else [f"--parallel-nodes={parallel_nodes}"]
    args = ["fetch", "--image-list-file=/etc/images/images.txt", *flags] + (["--canary"] if canary else [])
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "INSTANCE_NAME", "value": "imgs"}]
    ds["spec"]["template"]["spec"]["initContainers"] = [{"name": "prefetch", "args": args, "env": env}]
    return ds


def lease(
    name: str, holder: str = "", released_by: str = "", renewed: str = "2026-12-04T06:00:30.250000Z"
) -> dict[str, Any]:
    annotations = {"prefetch.stackrox.io/released-by": released_by} if released_by else {}
    spec: dict[str, Any] = {"leaseDurationSeconds": 30, "renewTime": renewed}
    if holder:
        spec.update(holderIdentity=holder, acquireTime="2026-12-04T06:00:10.000000Z")
    return {
        "metadata": {"name": name, "namespace": "prefetch", "annotations": annotations,
                     "labels": {"app.kubernetes.io/instance": "imgs"}},
        "spec": spec,
    }


def summary(seconds: float, waited: Optional[float] = None, canary: bool = False) -> str:
    extra: dict[str, Any] = {} if waited is None else {"waited": waited}
    return json.dumps({**SUMMARY_OK, "seconds": seconds, **extra, **({"canary": True} if canary else {})})


def finished(name: str, node: str, seconds: float = 250.0, waited: Optional[float] = None) -> dict[str, Any]:
    p = pod(name, node, terminated(summary(seconds, waited)))
    p["status"]["initContainerStatuses"][0]["state"]["terminated"]["startedAt"] = STARTED
    return p


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {node["node"]: node["status"] for node in report["nodes"]}


# --- the cap from the DaemonSet ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fetch"], (0, False)),
        (["fetch", "--parallel-nodes=2"], (2, False)),
        (["fetch", "--parallel-nodes", "3", "--canary"], (3, True)),
        (["fetch", "-parallel-nodes=4", "-canary=true"], (4, True)),
        (["fetch", "--parallel-nodes=2", "--canary=false"], (2, False)),
        (["fetch", "--parallel-nodes=2", "--parallel-nodes=5"], (5, False)),  # the last one wins, as in Go
        (["fetch", "--parallel-nodes=two"], (0, False)),
        (["fetch", "--parallel-nodes"], (0, False)),
    ],
)
def test_parse_slot_flags_reads_both_spellings(args: list[str], expected: tuple[int, bool]) -> None:
    assert parse_slot_flags(args) == expected


def test_node_slots_of_the_prefetch_container() -> None:
    assert node_slots(capped(2, canary=True, spaced=True)) == NodeSlots(2, True, "imgs")
    assert not node_slots(daemonset()).enabled
    assert node_slots(capped(2)).lease_names() == {"imgs-slot-0", "imgs-slot-1"}
    assert "imgs-canary" in node_slots(capped(1, canary=True)).lease_names()


# --- waiting vs pulling (pure) -------------------------------------------------------------------------------------


def report_of(ds: dict[str, Any], pods: list[dict[str, Any]], leases: list[dict[str, Any]],
              releases: Optional[dict[str, float]] = None) -> dict[str, Any]:
    return build_report(ds, pods, leases=slot_leases(node_slots(ds), leases, releases or {}))


def test_a_running_agent_without_a_slot_is_waiting_and_the_holder_is_pulling() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING), pod("c", "n3", RUNNING)]
    report = report_of(capped(1, desired=3), pods, [lease("imgs-slot-0", holder="n1")])
    assert statuses(report) == {"n1": "pulling", "n2": "waiting", "n3": "waiting"}
    by_node = {node["node"]: node for node in report["nodes"]}
    assert by_node["n1"]["message"] == f"pulling since {STARTED} in node slot imgs-slot-0"
    assert by_node["n2"]["message"] == "waiting for a node slot (parallel_nodes=1; held by n1)"


def test_the_canary_lease_counts_as_holding_a_slot() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    report = report_of(capped(2, canary=True), pods, [lease("imgs-canary", holder="n2"), lease("imgs-slot-0")])
    assert statuses(report) == {"n1": "waiting", "n2": "pulling"}
    assert report["nodes"][1]["message"].endswith(" as the canary")


def test_without_the_cap_or_without_the_leases_running_agents_stay_pulling() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    assert statuses(report_of(daemonset(), pods, [])) == {"n1": "pulling", "n2": "pulling"}
    # The Leases not listed (yet) or denied: no waiting state rather than a wrong one.
    assert statuses(build_report(capped(1), pods, leases=None)) == {"n1": "pulling", "n2": "pulling"}


def test_leases_of_other_slots_or_a_canary_without_canary_do_not_count() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    stale = [lease("imgs-slot-5", holder="n1"), lease("imgs-canary", holder="n2")]  # from an earlier cap
    assert statuses(report_of(capped(2), pods, stale)) == {"n1": "waiting", "n2": "waiting"}


def test_a_node_that_released_its_slot_in_this_run_is_finishing_not_waiting() -> None:
    # Done pulling: the agent released its slot (released-by itself, after its start) and writes its node label.
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    report = report_of(capped(1), pods, [lease("imgs-slot-0", released_by="n1")])
    assert statuses(report) == {"n1": "pulling", "n2": "waiting"}
    assert report["nodes"][0]["message"].startswith("done pulling, released its node slot")


def test_a_release_seen_earlier_in_the_wait_still_counts_after_another_node_took_the_slot() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    state = WatchState("imgs", capped(1))
    state.sync("leases", [lease("imgs-slot-0", released_by="n1")])
    state.apply("leases", with_version("MODIFIED", lease("imgs-slot-0", holder="n2"), "12"))
    report = build_report(capped(1), pods, leases=state.slot_leases())
    assert statuses(report) == {"n1": "pulling", "n2": "pulling"}


def test_a_release_from_an_earlier_run_does_not_make_a_new_agent_finishing() -> None:
    # The Lease still says released-by n1 from the last rollout, before this agent started: n1 waits.
    pods = [pod("a", "n1", RUNNING)]
    report = report_of(capped(1), pods, [lease("imgs-slot-0", released_by="n1", renewed="2026-12-03T06:00:00Z")])
    assert statuses(report) == {"n1": "waiting"}


def test_done_nodes_carry_waited_and_canary_from_their_summary() -> None:
    canary = node_report("n1", pod("a", "n1", terminated(summary(40.0, waited=0.0, canary=True))))
    waited = node_report("n2", pod("b", "n2", terminated(summary(90.0, waited=50.5))))
    uncapped = node_report("n3", pod("c", "n3", terminated(summary(40.0))))
    assert (canary["waited"], canary["canary"]) == (0.0, True)
    assert waited["waited"] == 50.5 and "canary" not in waited
    assert "waited" not in uncapped and "canary" not in uncapped


def test_timeout_message_says_how_many_nodes_wait_for_a_slot() -> None:
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING), pod("c", "n3", RUNNING)]
    ds = capped(1, desired=3, available=0)
    report = report_of(ds, pods, [lease("imgs-slot-0", holder="n1")])
    from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import rollout_complete

    message = timeout_message("DaemonSet prefetch/imgs", 600, rollout_complete(ds, pods), report["nodes"], [], 1)
    assert "still pulling: n1; 2 node(s) still waiting for a node slot (parallel_nodes=1): n2, n3" in message


# --- the waves estimate (pure) -------------------------------------------------------------------------------------


def test_a_wave_is_the_median_pull_time_without_the_wait() -> None:
    reports = [
        {"status": "succeeded", "seconds": 250.0, "waited": 0.0},
        {"status": "succeeded", "seconds": 520.0, "waited": 260.0},  # 260 s pulling after 260 s waiting
        {"status": "failed", "seconds": 3.0, "waited": 0.0},  # had everything: must not set the pace alone
        {"status": "waiting", "seconds": 0.0},
        {"status": "error", "seconds": 0.0},
    ]
    assert wave_seconds(reports) == 250.0
    assert wave_seconds([{"status": "pulling", "seconds": 0.0}]) is None


@pytest.mark.parametrize(
    ("nodes", "slots", "waves"),
    [(6, NodeSlots(2), 3), (5, NodeSlots(2), 3), (6, NodeSlots(2, canary=True), 4), (1, NodeSlots(3), 1),
     (6, NodeSlots(0), 0), (0, NodeSlots(2), 0)],
)
def test_waves_needed(nodes: int, slots: NodeSlots, waves: int) -> None:
    assert waves_needed(nodes, slots) == waves


def test_waves_warning_when_the_waves_end_after_the_deadline() -> None:
    warning = waves_warning(600, 6, NodeSlots(2), 250.0, started=1000.0, deadline=1600.0)
    assert warning == (
        "timeout 600s is likely too short for 6 nodes at parallel_nodes=2: 3 waves of ~250s each need ~750s; "
        "raise timeout or parallel_nodes"
    )
    assert waves_warning(600, 6, NodeSlots(2), 190.0, started=1000.0, deadline=1600.0) is None
    # Agents that started before the wait (rollout run late) have used part of the waves already.
    assert waves_warning(600, 6, NodeSlots(2), 250.0, started=800.0, deadline=1600.0) is None
    assert waves_warning(600, 6, NodeSlots(2), None, started=1000.0, deadline=1600.0) is None
    with_canary = waves_warning(600, 6, NodeSlots(2, canary=True), 200.0, started=1000.0, deadline=1600.0)
    assert with_canary is not None and "parallel_nodes=2 and canary: 4 waves of ~200s each need ~800s" in with_canary


# --- progress lines ------------------------------------------------------------------------------------------------


def test_progress_counts_waiting_nodes_apart_and_the_key_changes_with_them() -> None:
    from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import change_key

    nodes = [{"node": f"n{i}", "status": status, "message": ""} for i, status in
             enumerate(["succeeded", "succeeded", "pulling", "pulling", "waiting", "waiting"], 1)]
    snap = snapshot(nodes, {"n3": T0, "n4": T0 + 5})
    assert progress_line("c1", snap, T0 + 125) == (
        "c1: 2/6 nodes done (2 succeeded), 2 pulling, 2 waiting for a slot; slowest: n3 pulling for 2m05s"
    )
    nodes[4]["status"] = "pulling"
    assert change_key(snapshot(nodes, {})) != change_key(snap)


def test_pulling_since_starts_when_the_node_took_its_slot() -> None:
    ds = capped(1)
    pods = [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)]
    assert pulling_since(ds, pods, {"n1": T0 + 10}) == {"n1": T0 + 10, "n2": T0}


def test_a_warning_in_the_snapshot_is_new_once() -> None:
    snap = snapshot([], {}, 0, ["timeout 600s is likely too short"])
    shown: set[str] = set()
    assert new_warnings(snap, shown) == ["timeout 600s is likely too short"]
    assert new_warnings(snap, shown) == []


# --- the waiter with Leases ----------------------------------------------------------------------------------------


class LeaseCluster(ScriptedCluster):
    """The scripted cluster with Leases; ``deny_leases`` answers their list 403, as for a user without that RBAC."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]], watches: dict[str, list[Any]],
                 deny_leases: bool = False) -> None:
        super().__init__(lists, watches)
        self.deny_leases = deny_leases
        self.lease_selectors: list[Optional[str]] = []

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo:
        return LEASE_INFO if kind == "Lease" else INFOS[(api_version, kind)]

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.plural == "leases":
            self.lease_selectors.append(label_selector)
            if self.deny_leases:
                raise ForbiddenError('leases.coordination.k8s.io is forbidden: User "dev" cannot list resource')
        return super().list_objects(info, namespace, label_selector)


def timed_out(
    cluster: LeaseCluster, ds: dict[str, Any], timeout: float, wall: float = T0
) -> tuple[RolloutWaiter, RolloutError]:
    """A waiter that times out once it has seen every listed pod and, when the cap is on and they may be read,
    the Leases: its clock jumps past the deadline then (whatever the threads' timing). Its wall clock is ``wall``
    (the agents' start times are compared with it)."""
    pods = len(cluster.lists["pods"])
    leases_expected = node_slots(ds).enabled and not cluster.deny_leases
    seen_all = []

    def ready(state: WatchState) -> None:
        if len(state.pods) >= pods and (state.leases is not None or not leases_expected):
            seen_all.append(True)

    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=timeout,
                           clock=lambda: timeout + 1 if seen_all else 0.0, wall=lambda: wall, on_progress=ready)
    with pytest.raises(RolloutError) as raised:
        waiter.wait(ds)
    return waiter, raised.value


def test_the_waiter_watches_the_instances_leases_and_reports_waiting_nodes() -> None:
    ds = capped(1, desired=3, available=1)
    cluster = LeaseCluster(
        lists={"daemonsets": [ds], "pods": [finished("a", "n1", 250.0, waited=0.0), pod("b", "n2", RUNNING),
                                            pod("c", "n3", RUNNING)],
               "leases": [lease("imgs-slot-0", holder="n2")], "events": []},
        watches={},
    )
    waiter, error = timed_out(cluster, ds, timeout=600)
    assert cluster.lease_selectors[0] == "app.kubernetes.io/instance=imgs"
    assert statuses(error.result) == {"n1": "succeeded", "n2": "pulling", "n3": "waiting"}
    assert "1 node(s) still waiting for a node slot (parallel_nodes=1): n3" in str(error)
    # 3 waves of ~250 s from the first start: 750 s > 600 s.
    assert waiter.warnings == [
        "timeout 600s is likely too short for 3 nodes at parallel_nodes=1: 3 waves of ~250s each need ~750s; "
        "raise timeout or parallel_nodes"
    ]


def test_no_waves_warning_when_the_timeout_is_long_enough() -> None:
    ds = capped(2, desired=3, available=1)
    cluster = LeaseCluster(
        lists={"daemonsets": [ds], "pods": [finished("a", "n1", 250.0, waited=0.0), pod("b", "n2", RUNNING)],
               "leases": [lease("imgs-slot-0", holder="n2")], "events": []},
        watches={},
    )
    assert timed_out(cluster, ds, timeout=600)[0].warnings == []  # 2 waves of 250 s


def test_denied_leases_degrade_to_no_waiting_state_and_never_fail_the_rollout() -> None:
    ds = capped(1, desired=2, available=0)
    cluster = LeaseCluster(
        lists={"daemonsets": [ds], "pods": [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)], "events": []},
        watches={"pods": [[with_version("MODIFIED", finished("a", "n1"), "11"),
                           with_version("MODIFIED", finished("b", "n2"), "12")]],
                 "daemonsets": [[], [with_version("MODIFIED", capped(1), "13")]]},
        deny_leases=True,
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    state = waiter.wait(ds)
    assert state.leases is None and statuses(waiter.report(state)) == {"n1": "succeeded", "n2": "succeeded"}


def test_denied_leases_while_pulling_report_running_agents_as_pulling() -> None:
    ds = capped(1, desired=2, available=0)
    cluster = LeaseCluster(
        lists={"daemonsets": [ds], "pods": [pod("a", "n1", RUNNING), pod("b", "n2", RUNNING)], "events": []},
        watches={}, deny_leases=True,
    )
    _waiter, error = timed_out(cluster, ds, timeout=60)
    assert statuses(error.result) == {"n1": "pulling", "n2": "pulling"}
    assert "waiting for a node slot" not in str(error)


def test_without_the_cap_the_leases_are_not_watched() -> None:
    ds = daemonset(available=0)
    cluster = LeaseCluster(lists={"daemonsets": [ds], "pods": [pod("a", "n1", RUNNING)], "events": []}, watches={})
    timed_out(cluster, ds, timeout=60)
    assert cluster.lease_selectors == []


def test_the_writer_puts_the_waiters_warnings_and_waiting_nodes_in_the_snapshot(tmp_path: Any) -> None:
    from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import SnapshotWriter, read_snapshot

    ds = capped(1)
    state = WatchState("imgs", ds, {"a": pod("a", "n1", RUNNING), "b": pod("b", "n2", RUNNING)})
    state.sync("leases", [lease("imgs-slot-0", holder="n1")])
    warnings: list[str] = []
    path = str(tmp_path / "p.json")
    writer = SnapshotWriter(path, lambda current: build_report(ds, list(current.pods.values()),
                                                               leases=current.slot_leases()), warnings)
    writer(state)
    first = read_snapshot(path) or {}
    assert first["counts"] == {"pulling": 1, "waiting": 1} and "warnings" not in first
    assert first["slowest"] == {"node": "n1", "since": parse_time("2026-12-04T06:00:10.000000Z")}  # its slot's start
    warnings.append("timeout 60s is likely too short")
    writer(state)
    assert (read_snapshot(path) or {})["warnings"] == ["timeout 60s is likely too short"]
