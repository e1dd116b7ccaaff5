"""parallel_nodes on the real cluster: the agents' own token takes the node-slot Leases through the namespaced Role
the collection renders (real RBAC), the nodes pull one after the other, and state=absent removes the Leases.

"One after the other" is read from the per-node fault proxies' request records (wall clock of the first request and
the end of the last one of the test's images): with one slot the nodes' pull windows must not overlap. This is an
order of events, not a speed: it holds on any machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.support import Cluster, PlayResult, ref, role_vars, run_playbook

HOST = "local"
IMAGES = [ref("e2e/slots-a"), ref("e2e/slots-b")]


def play(cluster: Cluster, collections_path: Path, workdir: Path, name: str, **extra: object) -> PlayResult:
    return run_playbook(workdir, collections_path, {HOST: role_vars(cluster, name, IMAGES, **extra)})


def leases(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = cluster.raw_get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    assert listed is not None
    return list(listed["items"])


def pull_window(cluster: Cluster, node: str) -> tuple[float, float]:
    records = [r for r in cluster.proxy_requests(node) if "/e2e/slots-" in r["path"]]
    assert records, f"{node}: no request for the test's images reached its proxy"
    return min(r["started"] for r in records), max(r["ended"] or r["started"] for r in records)


def test_one_node_slot_serialises_the_nodes_and_absent_removes_the_leases(
    cluster: Cluster, collections_path: Path, workdir: Path
) -> None:
    name = "e2e-slots"
    for node in cluster.node_names:
        for image in IMAGES:
            cluster.remove_image(node, image)
    cluster.clear_proxy_requests()

    result = play(cluster, collections_path, workdir / "1", name, images_parallel_nodes=1)
    assert result.rc == 0, result.stdout[-6000:]
    nodes = result.results[HOST]["nodes"]
    assert sorted(n["node"] for n in nodes) == sorted(cluster.node_names)
    assert all(n["status"] == "succeeded" for n in nodes), nodes
    # A denied or unreachable Lease API makes the agent pull without a slot and say so: no such warning here.
    assert not [n["warnings"] for n in nodes if n["warnings"]], nodes
    for node in cluster.node_names:
        assert all(cluster.image_present(node, image) for image in IMAGES), node

    windows = sorted(pull_window(cluster, node) for node in cluster.node_names)
    for (_start, end), (next_start, _end) in zip(windows, windows[1:]):
        assert next_start >= end, windows

    held = leases(cluster, name)
    assert [lease["metadata"]["name"] for lease in held] == [f"{name}-slot-0"]
    labels = held[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == name
    assert not held[0]["spec"].get("holderIdentity"), held[0]  # released when done

    removed = play(cluster, collections_path, workdir / "2", name, images_state="absent")
    assert removed.rc == 0, removed.stdout[-6000:]
    assert leases(cluster, name) == []
