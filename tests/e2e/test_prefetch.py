"""End to end: ``ansible-playbook stackrox.prefetch.prefetch`` from the installed tarball against a real cluster.

Every test uses its own instance (name = namespace) and its own images on the shared cluster, so "present on the
node" and "pulled through the node's proxy" are this test's doing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.support import Cluster, PlayResult, ref, role_vars, run_playbook
from kube.cluster import KubeCluster

LABEL_PREFIX = "image-prefetcher.stackrox.io/"
HOST = "local"  # the inventory host that stands for the cluster
INSTANCE_KINDS = [("ServiceAccount", True), ("ConfigMap", True), ("DaemonSet", True), ("Deployment", True),
                  ("Service", True), ("NetworkPolicy", True)]


def play(cluster: Cluster, collections_path: Path, workdir: Path, name: str, images: list[str],
         check: bool = False, **extra: object) -> PlayResult:
    return run_playbook(workdir, collections_path, {HOST: role_vars(cluster, name, images, **extra)}, check=check)


def node_report(result: PlayResult, host: str = HOST) -> dict[str, dict[str, object]]:
    return {str(n["node"]): n for n in result.results[host]["nodes"]}


def report_line(result: PlayResult, node: str) -> str:
    """The node's line of the role's per-node report in the play output (a debug list item: quoted)."""
    for line in result.stdout.splitlines():
        text = line.strip().strip('",')
        if text.startswith(node + " "):
            return text
    raise AssertionError(f"no report line for {node} in the output:\n{result.stdout[-3000:]}")


def assert_ok(result: PlayResult) -> None:
    assert result.rc == 0, result.stdout[-6000:]


# ---- vanilla ------------------------------------------------------------------------------------------------
def test_vanilla_five_images_land_on_every_node(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    images = [ref(f"e2e/app{i}") for i in range(5)]
    for node in cluster.node_names:
        for image in images:
            cluster.remove_image(node, image)
    result = play(cluster, collections_path, workdir, "e2e-vanilla", images)
    assert_ok(result)
    report = node_report(result)
    assert sorted(report) == sorted(cluster.node_names)
    for node in cluster.node_names:
        assert report[node]["status"] == "succeeded"
        assert report[node]["ok"] == 5
        assert report[node]["failed"] == 0
        # The per-node report is printed in the play output.
        assert "ok=5" in report_line(result, node)
        # Checked through the node's own CRI and ctr, not through the agent.
        for image in images:
            assert cluster.image_present(node, image), (node, image)
        assert set(images) <= set(cluster.ctr_images(node))
    labels = cluster.node_labels()
    for node in cluster.node_names:
        assert labels[node].get(LABEL_PREFIX + "e2e-vanilla") == "succeeded", labels[node]


def test_stalled_first_attempt_is_retried(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    stalled_node = cluster.node_names[1]
    image = ref("e2e/stall")
    for node in cluster.node_names:
        cluster.remove_image(node, image)
    rule = cluster.proxy(stalled_node, "POST", "rules",
                         {"path": r"/e2e/stall/blobs/", "action": "stall_mid_body", "times": 1})[0]
    try:
        result = play(cluster, collections_path, workdir, "e2e-stall", [image])
    finally:
        cluster.proxy(stalled_node, "DELETE", f"rules/{rule['id']}")
        cluster.proxy(stalled_node, "POST", "release")
    assert_ok(result)
    report = node_report(result)
    assert report[stalled_node]["status"] == "succeeded"
    assert int(str(report[stalled_node]["attempts"])) >= 2, report[stalled_node]
    line = report_line(result, stalled_node)
    assert "attempts=2" in line or "attempts=3" in line, line
    for node in cluster.node_names:
        assert cluster.image_present(node, image)
        if node != stalled_node:
            assert report[node]["attempts"] == 1
    stalls = [r for r in cluster.proxy_requests(stalled_node) if r.get("action") == "stall_mid_body"]
    assert stalls, "the proxy never stalled a request"


def test_missing_and_invalid_images_fail_the_play(cluster: Cluster, collections_path: Path,
                                                   workdir: Path) -> None:
    good = ref("e2e/ok")
    missing = ref("e2e/missing")
    invalid = "registry.test:5000/e2e/Invalid:v1"  # uppercase repository: invalid reference format
    result = play(cluster, collections_path, workdir, "e2e-fail", [good, missing, invalid],
                  images_not_found="fail")
    assert result.rc != 0, result.stdout[-4000:]
    failure = result.stdout[result.stdout.rfind("FAILED!"):] if "FAILED!" in result.stdout else result.stdout
    assert missing in failure and "not_found" in failure, failure[-3000:]
    assert invalid in failure and "invalid_reference" in failure, failure[-3000:]
    for node in cluster.node_names:
        assert node in result.stdout
        assert cluster.image_present(node, good), node
    labels = cluster.node_labels()
    assert all(labels[n].get(LABEL_PREFIX + "e2e-fail") == "failed" for n in cluster.node_names), labels


def test_second_identical_run_changes_nothing(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    images = [ref("e2e/idem")]
    first = play(cluster, collections_path, workdir / "1", "e2e-idem", images, images_pull_policy="IfNotPresent")
    assert_ok(first)
    pods_before = {p["metadata"]["uid"] for p in cluster.pods("e2e-idem")}
    seq = cluster.request_seq()
    cluster.clear_proxy_requests()
    second = play(cluster, collections_path, workdir / "2", "e2e-idem", images, images_pull_policy="IfNotPresent")
    assert_ok(second)
    assert second.changed_total == 0, second.stdout[-3000:]
    assert second.results[HOST]["changed"] in (False, "False", "false")
    assert cluster.writes_since(seq) == [], cluster.writes_since(seq)
    assert cluster.requests_since(seq), "the second run did not reach the API server at all"
    assert {p["metadata"]["uid"] for p in cluster.pods("e2e-idem")} == pods_before
    for node in cluster.node_names:
        pulls = [r for r in cluster.proxy_requests(node) if "/v2/" in r["path"] and r["path"] != "/v2/"]
        assert pulls == [], (node, pulls)


def test_changed_image_list_reruns_and_pulls_only_new(cluster: Cluster, collections_path: Path,
                                                      workdir: Path) -> None:
    keep = [ref("e2e/keep0"), ref("e2e/keep1")]
    new = ref("e2e/new0")
    first = play(cluster, collections_path, workdir / "1", "e2e-change", keep, images_pull_policy="IfNotPresent")
    assert_ok(first)
    pods_before = {p["metadata"]["uid"] for p in cluster.pods("e2e-change")}
    cluster.clear_proxy_requests()
    second = play(cluster, collections_path, workdir / "2", "e2e-change", [*keep, new],
                  images_pull_policy="IfNotPresent")
    assert_ok(second)
    assert second.changed_total >= 1
    pods_after = {p["metadata"]["uid"] for p in cluster.pods("e2e-change")}
    assert pods_after and not pods_after & pods_before, "the pods were not re-created"
    report = node_report(second)
    for node in cluster.node_names:
        assert report[node]["ok"] == 1 and report[node]["skipped"] == 2, report[node]
        paths = [r["path"] for r in cluster.proxy_requests(node)]
        assert any("/e2e/new0/" in p for p in paths), (node, paths)
        assert not any("/e2e/keep" in p for p in paths), (node, paths)
        assert cluster.image_present(node, new)


def test_state_absent_removes_every_object(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    name = "e2e-gone"
    created = play(cluster, collections_path, workdir / "1", name, [ref("e2e/gone")], images_collect_metrics=False)
    assert_ok(created)
    assert cluster.raw_get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}-node-labeler") is not None
    removed = play(cluster, collections_path, workdir / "2", name, [ref("e2e/gone")], images_state="absent")
    assert_ok(removed)
    selector = f"app.kubernetes.io/instance={name}"
    for kind, _namespaced in INSTANCE_KINDS:
        items = cluster.api.list(kind, name, label_selector=selector)["items"]
        assert items == [], (kind, [i["metadata"]["name"] for i in items])
    for path in (f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}-node-labeler",
                 f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}-node-labeler",
                 f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}",
                 f"/api/v1/namespaces/{name}/configmaps/{name}",
                 f"/api/v1/namespaces/{name}/serviceaccounts/{name}"):
        assert cluster.raw_get(path) is None, path
    for kind in ("clusterroles", "clusterrolebindings"):
        listing = cluster.api.request("GET", f"/apis/rbac.authorization.k8s.io/v1/{kind}",
                                      query={"labelSelector": selector})
        assert listing["items"] == [], kind
    assert cluster.pods(name) == []


def test_check_mode_writes_nothing(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    seq = cluster.request_seq()
    result = play(cluster, collections_path, workdir, "e2e-check", [ref("e2e/app0")], check=True)
    assert_ok(result)
    assert cluster.writes_since(seq) == []
    assert [r for r in cluster.writes_since(seq, user=None) if r["namespace"] == "e2e-check"] == []
    assert cluster.requests_since(seq), "check mode never asked the server"
    assert cluster.get("Namespace", "e2e-check") is None
    assert cluster.raw_get("/apis/apps/v1/namespaces/e2e-check/daemonsets/e2e-check") is None


def test_restricted_namespace_fails_before_any_write(cluster: Cluster, collections_path: Path,
                                                      workdir: Path) -> None:
    name = "e2e-restricted"
    if cluster.get("Namespace", name) is None:
        cluster.api.create("Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    seq = cluster.request_seq()
    result = play(cluster, collections_path, workdir, name, [ref("e2e/app0")])
    assert result.rc != 0
    assert "restricted" in result.stdout and "pod-security.kubernetes.io/enforce" in result.stdout, \
        result.stdout[-3000:]
    assert cluster.writes_since(seq) == []
    assert cluster.raw_get(f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}") is None


def test_ocp_flavor_uses_scc_rbac_and_crio_socket(cluster: Cluster, collections_path: Path,
                                                  workdir: Path) -> None:
    name = "e2e-ocp"
    image = ref("e2e/ocp")
    result = play(cluster, collections_path, workdir, name, [image], images_flavor="ocp")
    assert_ok(result)
    for kind in ("roles", "rolebindings"):
        obj = cluster.raw_get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/{kind}/"
                              f"{name}-privileged-scc-use")
        assert obj is not None, kind
    role = cluster.raw_get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/roles/{name}-privileged-scc-use")
    assert role is not None and role["rules"][0]["resourceNames"] == ["privileged"]
    ds = cluster.raw_get(f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}")
    assert ds is not None
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert any(v.get("hostPath", {}).get("path") == "/var/run/crio" for v in volumes.values()), volumes
    for pod in cluster.pods(name):
        node = pod["spec"]["nodeName"]
        container = next(c for c in pod["spec"]["initContainers"] if c["name"] == "prefetch")
        # The agent ran with the CRI-O socket path, bound by the real kubelet from the node's /var/run/crio.
        assert any("crio.sock" in arg for arg in container["args"]), container["args"]
        log_text = cluster.pod_log(name, pod["metadata"]["name"], "prefetch")
        assert "crio.sock" in log_text or "pulling images finished" in log_text, log_text[-2000:]
        assert cluster.image_present(node, image)


def test_collect_metrics_returns_aggregator_metrics(cluster: Cluster, collections_path: Path,
                                                     workdir: Path) -> None:
    name = "e2e-metrics"
    image = ref("e2e/metrics")
    try:
        result = play(cluster, collections_path, workdir / "1", name, [image], images_collect_metrics=True)
        assert_ok(result)
        metrics = result.results[HOST]["metrics"]
        assert isinstance(metrics, list) and metrics, result.results[HOST]
        nodes = {str(m.get("node")) for m in metrics}
        assert nodes == set(cluster.node_names), metrics
        assert all(m.get("image") == image for m in metrics), metrics
    finally:
        play(cluster, collections_path, workdir / "2", name, [image], images_state="absent")


def test_role_against_two_clusters_at_once(cluster: Cluster, collections_path: Path, workdir: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    image = ref("e2e/multi")
    upstream = cluster.info["registry"]["upstream"]
    with KubeCluster(tmp_path_factory.mktemp("second"), nodes=2, registry_upstream=upstream, name="kubeb") as kube_b:
        second = Cluster(kube_b.dir)
        hosts = {HOST: role_vars(cluster, "e2e-multi", [image]),
                 "second": role_vars(second, "e2e-multi", [image])}
        result = run_playbook(workdir, collections_path, hosts)
        assert_ok(result)
        assert sorted(result.results) == [HOST, "second"]
        assert sorted(node_report(result, HOST)) == sorted(cluster.node_names)
        assert sorted(node_report(result, "second")) == ["kubeb-node-1", "kubeb-node-2"]
        for node in second.node_names:
            assert second.image_present(node, image)
        for node in cluster.node_names:
            assert cluster.image_present(node, image)
