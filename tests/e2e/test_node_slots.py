"""parallel_nodes on the real cluster: the agents' own token takes the node-slot Leases through the namespaced Role
the collection renders (real RBAC), one node pulls at a time, and state=absent removes the Leases.

"One at a time" is read from the per-node fault proxies, as orders of events, never as speeds: while the first
node's blob requests are held unanswered, no other node may send a request for the image (with the cap off, every
node does at once); and once released, the nodes' pull windows (first request to the end of the last) never overlap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from e2e.support import HELD_HOST, Cluster, HeldRollout, nodes_by_name, ref, role_vars, run_playbook
from infra._util import wait_until

IMAGE = ref("e2e/slots-a")
# How long the other nodes are watched for a request while the slot holder is held. A correct cap holds for any
# length; a broken one shows in a fraction of it (each agent sends its first request right after starting).
HELD_WATCH_S = 8.0


def leases(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = cluster.raw_get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    assert listed is not None
    return list(listed["items"])


def image_requests(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return [r for r in cluster.proxy_requests(node) if "/e2e/slots-a/" in str(r["path"])]


def pull_window(cluster: Cluster, node: str) -> tuple[float, float]:
    records = image_requests(cluster, node)
    assert records, f"{node}: no request for the image reached its proxy"
    return min(r["started"] for r in records), max(r["ended"] or r["started"] for r in records)


def test_one_node_slot_serialises_the_nodes_and_absent_removes_the_leases(
    cluster: Cluster, collections_path: Path, workdir: Path
) -> None:
    name = "e2e-slots"
    cluster.clear_proxy_requests()
    held = HeldRollout(cluster, collections_path, workdir / "1", name, IMAGE, cluster.node_names, action="hold",
                       images_parallel_nodes=1)
    try:
        assert wait_until(lambda: any(image_requests(cluster, n) for n in cluster.node_names), 180, 0.5), \
            "no node ever asked for the image"
        time.sleep(HELD_WATCH_S)
        asking = [n for n in cluster.node_names if image_requests(cluster, n)]
        assert len(asking) == 1, f"nodes pulling at once with parallel_nodes=1: {asking}"
        holders = [lease["spec"].get("holderIdentity") for lease in leases(cluster, name)]
        assert holders == [asking[0]], holders
    finally:
        held.release()
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result, HELD_HOST)
    assert sorted(nodes) == sorted(cluster.node_names)
    assert all(n["status"] == "succeeded" for n in nodes.values()), nodes
    # A denied or unreachable Lease API makes the agent pull without a slot and say so: no such warning here.
    assert not [n["warnings"] for n in nodes.values() if n["warnings"]], nodes
    assert all(cluster.image_present(node, IMAGE) for node in cluster.node_names)

    windows = sorted(pull_window(cluster, node) for node in cluster.node_names)
    for (_start, end), (next_start, _end) in zip(windows, windows[1:]):
        assert next_start >= end, windows

    held_leases = leases(cluster, name)
    assert [lease["metadata"]["name"] for lease in held_leases] == [f"{name}-slot-0"]
    assert held_leases[0]["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    assert not held_leases[0]["spec"].get("holderIdentity"), held_leases[0]  # released when done

    hosts = {HELD_HOST: role_vars(cluster, name, [IMAGE], images_state="absent")}
    removed = run_playbook(workdir / "2", collections_path, hosts)
    assert removed.rc == 0, removed.stdout[-6000:]
    assert leases(cluster, name) == []
