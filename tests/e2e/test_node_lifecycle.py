"""A node cordoned, deleted, its kubelet stopped, or a node added, each in the middle of a rollout: ``rollout`` ends
within its timeout with a report that says what happened to that node.

Each rollout is held open by a stalled image pull on one node (the node's registry fault proxy), the node event
happens, then the stall is released: no sleeps, no race with the agent. The destructive cases run on a cluster of
their own (2 nodes and spares that join later), so the shared cluster stays whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.support import Cluster, HeldRollout, PlayResult, nodes_by_name, push_all, ref
from kube.cluster import KubeCluster

HOST = "local"
ROLLOUT_TIMEOUT_S = 75  # the role's images_timeout in these tests: well above the node monitor's 20 s grace


@pytest.fixture(scope="module")
def small(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Cluster]]:
    upstream = cluster.info["registry"]["upstream"]
    with KubeCluster(tmp_path_factory.mktemp("life"), nodes=2, spare_nodes=2, registry_upstream=upstream,
                     name="life") as kube:
        push_all(upstream)
        yield kube, Cluster(kube.dir)


def hold_rollout(cluster: Cluster, collections_path: Path, workdir: Path, name: str, image: str,
                 node: str) -> HeldRollout:
    return HeldRollout(cluster, collections_path, workdir, name, image, node, timeout_s=ROLLOUT_TIMEOUT_S)


def by_node(result: PlayResult) -> dict[str, dict[str, Any]]:
    return nodes_by_name(result, HOST)


def test_cordoned_node_still_gets_its_images(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    node = cluster.node_names[-1]
    held = hold_rollout(cluster, collections_path, workdir, "e2e-cordon", ref("e2e/life-cordon"), node)
    try:
        held.wait_stalled()
        cluster.kubectl("cordon", node)
        held.release()
        result, _ = held.result()
    finally:
        cluster.kubectl("uncordon", node, check=False)
    assert result.rc == 0, result.stdout[-4000:]
    report = by_node(result)[node]
    assert report["status"] == "succeeded" and report["node_state"] == "cordoned", report
    assert cluster.image_present(node, ref("e2e/life-cordon"))


def test_node_added_mid_rollout_is_included(small: tuple[KubeCluster, Cluster], collections_path: Path,
                                            workdir: Path) -> None:
    kube, cluster = small
    held = hold_rollout(cluster, collections_path, workdir, "e2e-add", ref("e2e/life-add"), cluster.node_names[-1])
    held.wait_stalled()
    added = kube.add_node().name
    held.release()
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-4000:]
    report = by_node(result)
    assert added in report and report[added]["status"] == "succeeded", report
    assert Cluster(kube.dir).image_present(added, ref("e2e/life-add"))


def test_node_deleted_mid_rollout_is_reported_gone(small: tuple[KubeCluster, Cluster], collections_path: Path,
                                                    workdir: Path) -> None:
    kube, _ = small
    doomed = kube.add_node()
    cluster = Cluster(kube.dir)
    held = hold_rollout(cluster, collections_path, workdir, "e2e-delete", ref("e2e/life-delete"), doomed.name)
    held.wait_stalled()
    doomed.stop_kubelet()  # the machine goes away, then its Node object (as a node scale-down does)
    cluster.kubectl("delete", "node", doomed.name)
    held.release()
    result, seconds = held.result()
    assert result.rc == 0, result.stdout[-4000:]
    report = by_node(result)
    assert report[doomed.name]["status"] == "gone" and report[doomed.name]["node_state"] == "deleted", report
    assert "deleted during the rollout" in report[doomed.name]["message"]
    assert all(r["status"] == "succeeded" for name, r in report.items() if name != doomed.name), report
    assert seconds < ROLLOUT_TIMEOUT_S, "the rollout waited for the deleted node until its timeout"


def test_node_whose_kubelet_stops_is_named_at_the_timeout(small: tuple[KubeCluster, Cluster],
                                                          collections_path: Path, workdir: Path) -> None:
    kube, cluster = small
    victim = kube.nodes[1]  # the worker of the original two
    held = hold_rollout(cluster, collections_path, workdir, "e2e-kubelet", ref("e2e/life-kubelet"), victim.name)
    held.wait_stalled()
    victim.stop_kubelet()
    held.release()  # the agent finishes its pulls, but no kubelet reports it any more
    result, seconds = held.result()
    assert result.rc != 0, result.stdout[-4000:]
    assert f"node not Ready: {victim.name} (node not Ready since" in result.stdout, result.stdout[-4000:]
    assert "Kubelet stopped posting node status" in result.stdout
    assert seconds < ROLLOUT_TIMEOUT_S + 60, seconds
