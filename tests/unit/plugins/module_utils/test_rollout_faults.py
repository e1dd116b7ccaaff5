# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RolloutWaiter against API faults: broken watch streams are resumed, requests that still fail end the wait naming
the DaemonSet, the request and the cause, a timeout names the API server's last failure, and an interruption
returns the partial report."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Optional

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import ResourceInfo, WatchInterruptedError
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ClusterUnreachableError,
    RolloutError,
    UnauthorizedError,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._interrupt import guard
from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import RolloutWaiter, daemonset_progress
from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.test_rollout import (
    ScriptedCluster,
    as_cluster,
    daemonset,
    done_pod,
    pod,
    with_version,
)

TARGET = "DaemonSet prefetch/imgs"


class FaultyCluster(ScriptedCluster):
    """``list_errors``: kind -> (n, error), raised by the n-th list of that kind and every later one (the Cluster's
    retries having run out)."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]], watches: dict[str, list[Any]]) -> None:
        super().__init__(lists, watches)
        self.list_errors: dict[str, tuple[int, Exception]] = {}
        self.lists_made: dict[str, int] = {}
        self.trouble = ""

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        with self.lock:
            self.lists_made[info.plural] = made = self.lists_made.get(info.plural, 0) + 1
        first, error = self.list_errors.get(info.plural, (0, None))
        if error is not None and made >= first:
            raise error
        return super().list_objects(info, namespace, label_selector)


def test_a_broken_watch_resumes_from_the_last_event_without_listing_again() -> None:
    start = daemonset(available=0, updated=0)
    broken = WatchInterruptedError("the watch of pods in namespace prefetch at https://x broke: reset")
    cluster = FaultyCluster(
        lists={"daemonsets": [start], "pods": [pod("a", "n1", {"running": {}}), pod("b", "n2", {"running": {}})]},
        watches={
            "pods": [[with_version("MODIFIED", done_pod("a", "n1"), "11"), broken],
                     [with_version("MODIFIED", done_pod("b", "n2"), "12")]],
            "daemonsets": [[], [with_version("MODIFIED", daemonset(), "13")]],
        },
    )
    state = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30).wait(start)
    assert state.daemonset is not None and daemonset_progress(state.daemonset).done
    assert cluster.watch_versions["pods"][:2] == ["10", "11"]
    assert cluster.list_calls["pods"] == 1


@pytest.mark.parametrize(
    "error",
    [
        ClusterUnreachableError("cannot reach the Kubernetes API server at https://x: connection refused "
                                "(gave up after 9 attempts in 41s: the task's timeout has passed)"),
        ClusterError("cannot list pods in namespace prefetch: HTTP 429 Too Many Requests: slow down (gave up after "
                     "30 attempts in 30s: the next attempt, in 1s, would come after the task's timeout (1s left))"),
        UnauthorizedError("the API server at https://x rejected the credentials (401 Unauthorized) when trying to "
                          "list pods in namespace prefetch"),
    ],
)
def test_a_request_that_still_fails_ends_the_wait_naming_the_daemonset(error: Exception) -> None:
    start = daemonset(available=0, updated=0)
    cluster = FaultyCluster(lists={"daemonsets": [start], "pods": [done_pod("a", "n1")]}, watches={})
    cluster.list_errors["pods"] = (1, error)
    with pytest.raises(RolloutError) as raised:
        RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=600).wait(start)
    assert str(raised.value) == f"while waiting for {TARGET}: {error}"
    assert "nodes" in raised.value.result and not raised.value.interrupted


def test_a_timeout_names_the_api_servers_last_failure_and_survives_a_failing_report() -> None:
    start = daemonset(available=0, updated=0)
    nodes = [{"metadata": {"name": "n1", "labels": {}}, "spec": {}}]
    cluster = FaultyCluster(lists={"daemonsets": [start], "pods": [pod("a", "n1", {"running": {}})], "nodes": nodes},
                            watches={})
    cluster.trouble = "cannot watch pods in namespace prefetch: HTTP 503 Service Unavailable: etcd"
    clock_values = iter([0.0, 0.0] + [100.0] * 50)
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=5, clock=lambda: next(clock_values))
    # The failure report's own requests fail too (nodes after the watcher's list, events): the timeout is still
    # what the user sees.
    cluster.list_errors.update(nodes=(2, ClusterError("cannot list nodes: HTTP 503")),
                               events=(1, ClusterError("cannot list events: HTTP 503")))
    with pytest.raises(RolloutError) as raised:
        waiter.wait(start)
    message = str(raised.value)
    assert message.startswith(f"timed out after 5s waiting for {TARGET}")
    assert message.endswith(f"; the API server was failing: {cluster.trouble}")
    assert raised.value.result["nodes"][0]["status"] == "pulling"


def test_an_interrupted_wait_returns_the_partial_report() -> None:
    start = daemonset(available=0, updated=0)
    cluster = FaultyCluster(lists={"daemonsets": [start], "pods": [pod("a", "n1", {"running": {}})]}, watches={})
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=600)
    read_end, write_end = os.pipe()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(RolloutError) as raised, guard(lambda: f"waiting for {TARGET}", write_end):
            timer.start()
            waiter.wait(start)
    finally:
        timer.cancel()
        os.close(read_end)
        os.close(write_end)
    assert str(raised.value) == f"interrupted by SIGINT while waiting for {TARGET}"
    assert raised.value.interrupted
    assert [node["node"] for node in raised.value.result["nodes"]] == ["n1"]
