"""The agents' progress on the real cluster: each agent writes the annotation ``prefetch.stackrox.io/progress`` onto
its own pod with its own token, through the Role the collection renders (real RBAC), and a ``rollout`` task run
while the pulls are held names the image in its progress lines. Held at the registry proxies, the state cannot
change before the test releases it, so nothing here depends on the machine's speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2e.support import HELD_HOST, Cluster, HeldRollout, nodes_by_name, ref
from e2e.test_node_slots import agents_running, rollout_while_held
from infra._util import wait_until

IMAGE = ref("e2e/progress")
ANNOTATION = "prefetch.stackrox.io/progress"


def published(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """Node -> the progress its agent published on its pod (only pods that carry one)."""
    listed = cluster.raw_get(f"/api/v1/namespaces/{namespace}/pods") or {}
    found = {}
    for pod in listed.get("items", []):
        text = (pod["metadata"].get("annotations") or {}).get(ANNOTATION)
        if text:
            found[pod["spec"]["nodeName"]] = json.loads(text)
    return found


def test_agents_publish_their_progress_and_the_rollout_names_the_image(
    cluster: Cluster, collections_path: Path, workdir: Path
) -> None:
    name = "e2e-progress"
    seq = cluster.request_seq()
    held = HeldRollout(cluster, collections_path, workdir / "1", name, IMAGE, cluster.node_names, action="hold",
                       images_overall_timeout="300s", images_initial_pull_attempt_timeout="300s",
                       images_agent_progress_interval="1s")
    try:
        held.wait_stalled()
        assert wait_until(lambda: len(published(cluster, name)) == len(cluster.node_names), 120, 0.5), \
            published(cluster, name)
        for node, progress in published(cluster, name).items():
            assert (progress["v"], progress["total"], progress["done"]) == (1, 1, 0), (node, progress)
            assert [entry["image"] for entry in progress["pulling"]] == [IMAGE], (node, progress)
        assert wait_until(lambda: agents_running(cluster, name) == len(cluster.node_names), 120, 0.5)
        output, seen = rollout_while_held(cluster, collections_path, workdir / "held-rollout", name)
        assert f" (0/1 images; now {IMAGE})" in output, output[-3000:]
        assert {n["status"] for n in seen["nodes"]} == {"pulling"}, seen["nodes"]
        # The same from "another host": the state file is read through the connection, once a second here.
        output, seen = rollout_while_held(cluster, collections_path, workdir / "elsewhere", name, "elsewhere")
        assert f" (0/1 images; now {IMAGE})" in output, output[-3000:]
        assert {n["status"] for n in seen["nodes"]} == {"pulling"}, seen["nodes"]
    finally:
        held.release()
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result, HELD_HOST)
    assert all(n["status"] == "succeeded" for n in nodes.values()), nodes
    assert not [n["warnings"] for n in nodes.values() if n["warnings"]], nodes
    # The writes are each agent's own, to its own pod, through the Role, all allowed: one once the first interval
    # passed, none while nothing changes (the one attempt is held), perhaps one more when its image lands.
    sa_user = f"system:serviceaccount:{name}:{name}"
    writes = [r for r in cluster._records_since(seq) if r["user"] == sa_user and r["resource"] == "pods"]
    assert writes and {r["verb"] for r in writes} == {"patch"} and {r["code"] for r in writes} == {200}, writes
    pods = {n["pod"] for n in nodes.values()}
    assert {r["name"] for r in writes} == pods, writes
    print(f"progress writes per node: {len(writes) / len(pods):.1f} (interval 1s, while held)")
