"""The agent's node-label PATCH denied by real RBAC: the instance's ClusterRole is deleted while the agents pull.

Every worker node's pull is held by its registry fault proxy (a ``hold`` rule: nothing of the image arrives before
the test says so), the first node's is not. Once that agent has labelled its node and the held ones wait on their
blobs, the ClusterRole ``<name>-node-labeler`` is deleted (and the API server's authorizer is seen to deny the
ServiceAccount), then the pulls are released. The held agents pull, their one PATCH is answered 403 by the real
RBAC authorizer, and their termination summaries say so; ``rollout`` carries that into the play's per-node report
and warns once per node, and no node is mislabelled. No sleeps: every step waits for the state it needs.
"""

from __future__ import annotations

from pathlib import Path

from e2e.support import Cluster, HeldRollout, PlayResult, nodes_by_name, ref
from infra._util import wait_until

NAME = "e2e-label-denied"
KEY = f"image-prefetcher.stackrox.io/{NAME}"
SA_USER = f"system:serviceaccount:{NAME}:{NAME}"  # the instance's ServiceAccount (name = namespace = NAME)
ROLLOUT_TIMEOUT_S = 240
# The agents' overall timeout: the pulls are held while the first node finishes and the ClusterRole goes, which
# must never look like a pull that ran out of time.
OVERALL_TIMEOUT = "150s"


def may_patch_nodes(cluster: Cluster) -> str:
    """``kubectl auth can-i`` as the agent's ServiceAccount: what the API server's authorizer says now, ``yes`` or
    ``no`` (a denial may go on with its reason: ``no - RBAC: clusterrole ... not found``)."""
    answer = cluster.kubectl("auth", "can-i", "patch", "nodes", f"--as={SA_USER}", check=False).stdout.split()
    return answer[0] if answer else ""


def label_patches(cluster: Cluster, seq: int) -> dict[str, list[int]]:
    """Node -> the status codes of the agent's PATCHes of that Node since ``seq`` (the API server's audit log)."""
    codes: dict[str, list[int]] = {}
    for record in cluster._records_since(seq):
        if record["user"] == SA_USER and record["resource"] == "nodes" and record["verb"] == "patch":
            codes.setdefault(record["name"], []).append(record["code"])
    return codes


def compact(text: str) -> str:
    """Without whitespace: Ansible wraps long warnings at the terminal width (breaking after hyphens too)."""
    return "".join(text.split())


def run_with_the_role_deleted_mid_rollout(cluster: Cluster, collections_path: Path, workdir: Path,
                                          free: str, held_nodes: list[str]) -> PlayResult:
    held = HeldRollout(cluster, collections_path, workdir, NAME, ref("e2e/denied"), held_nodes, action="hold",
                       timeout_s=ROLLOUT_TIMEOUT_S, images_overall_timeout=OVERALL_TIMEOUT)
    try:
        held.wait_stalled()
        assert wait_until(lambda: cluster.node_labels()[free].get(KEY) == "succeeded", 180, 0.5), \
            f"the agent on {free} (not held) never labelled its node"
        assert may_patch_nodes(cluster) == "yes"
        cluster.kubectl("delete", "clusterrole", f"{NAME}-node-labeler")
        assert wait_until(lambda: may_patch_nodes(cluster) == "no", 30, 0.2), "the authorizer still allows the PATCH"
        held.release()
        result, _seconds = held.result()
    finally:
        held.release()  # also when an assertion above failed: the shared proxies must not stay held
    return result


def test_a_denied_label_patch_is_reported_and_no_node_is_mislabelled(cluster: Cluster, collections_path: Path,
                                                                      workdir: Path) -> None:
    free, *held_nodes = cluster.node_names
    assert len(held_nodes) >= 2, "needs a held node with a label from before and one without"
    stale, fresh = held_nodes[0], held_nodes[1]
    cluster.kubectl("label", "node", stale, f"{KEY}=failed", "--overwrite")  # as an earlier run left it
    for node in [free, *held_nodes[1:]]:
        cluster.kubectl("label", "node", node, f"{KEY}-", check=False)  # none of these from an earlier run
    seq = cluster.request_seq()
    try:
        result = run_with_the_role_deleted_mid_rollout(cluster, collections_path, workdir, free, held_nodes)
        labels = cluster.node_labels()
    finally:
        for node in cluster.node_names:
            cluster.kubectl("label", "node", node, f"{KEY}-", check=False)

    # The images are there on every node: a denied label is a warning, not a failed rollout.
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result)
    assert set(nodes) == set(cluster.node_names), nodes
    assert all(n["status"] == "succeeded" and n["ok"] == 1 and n["failed"] == 0 for n in nodes.values()), nodes
    assert all(cluster.image_present(node, ref("e2e/denied")) for node in cluster.node_names)

    # The node that finished before the deletion is reported as it was: labelled, no warning.
    assert nodes[free]["warnings"] == [], nodes[free]
    for node in held_nodes:
        (warning,) = nodes[node]["warnings"]
        assert warning.startswith(f"node labels: failed to patch node {node}: 403 Forbidden: "), warning
        assert f'nodes "{node}" is forbidden: User "{SA_USER}" cannot patch resource "nodes"' in warning, warning
    assert result.results["local"]["totals"]["nodes_with_warnings"] == len(held_nodes)

    # rollout warned once per node with warnings, and the role's report shows them.
    for node in held_nodes:
        said = f"[WARNING]: node {node}: node labels: failed to patch node {node}: 403 Forbidden: "
        assert compact(result.stdout).count(compact(said)) == 1, result.stdout[-6000:]
        assert f"{node}: warning: node labels: failed to patch node {node}: 403 Forbidden" in result.stdout
    assert compact(f"[WARNING]: node {free}:") not in compact(result.stdout)

    # No node is mislabelled: the denied nodes keep what they had, and each agent asked once (a denial is final).
    assert labels[free].get(KEY) == "succeeded", labels[free]
    assert labels[stale].get(KEY) == "failed", labels[stale]
    assert KEY not in labels[fresh] and all(KEY not in labels[node] for node in held_nodes[1:]), labels
    assert label_patches(cluster, seq) == {free: [200], **{node: [403] for node in held_nodes}}
