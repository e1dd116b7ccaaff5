"""End to end on the runtimes the flavors name: a cluster whose kubelets run on CRI-O, driven with ``flavor: crio``
(the agent reaches the node's /var/run/crio/crio.sock, and nothing else: a CRI-O node has no containerd socket), and
one on containerd 2.x with the default flavor. Each scenario starts its own 2-node cluster (tests/kube with
``runtime=``, its own registry) and stops it, also when a test fails; the runtimes are built on first use
(tests/runtimes/build.sh, cached).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.support import Cluster, PlayResult, ref, role_vars, run_playbook
from infra.cri import CriClient
from infra.images import push_test_image
from kube.cluster import KubeCluster

LABEL_PREFIX = "image-prefetcher.stackrox.io/"
HOST = "local"


@dataclass(frozen=True)
class Scenario:
    runtime: str
    flavor: str
    socket_dir: str      # the flavor's hostPath (plugins/module_utils/_settings.py FLAVORS)
    runtime_name: str    # what the runtime calls itself over CRI Version
    version_prefix: str  # the kubelet's Node.status.nodeInfo.containerRuntimeVersion starts so


SCENARIOS = {
    "crio": Scenario("crio", "crio", "/var/run/crio", "cri-o", "cri-o://1.34."),
    "containerd2": Scenario("containerd2", "vanilla", "/var/run/containerd", "containerd", "containerd://2."),
}
IMAGES = ("e2e/rt-a", "e2e/rt-b")
MISSING = ref("e2e/rt-a", "missing")  # the repository exists, the tag does not


@dataclass
class RuntimeCluster:
    scenario: Scenario
    cluster: Cluster


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def on_runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeCluster]:
    scenario = SCENARIOS[request.param]
    directory = tmp_path_factory.mktemp(f"kube-{scenario.runtime}")
    name = {"crio": "crio", "containerd2": "cd2"}[scenario.runtime]
    with KubeCluster(directory, nodes=2, name=name, runtime=scenario.runtime) as kube:
        upstream = kube.info["registry"]["upstream"]
        for repository in IMAGES:
            push_test_image(upstream, repository, "v1", size_mib=0.5, layers=1, seed=repository)
        yield RuntimeCluster(scenario, Cluster(directory))


def play(on: RuntimeCluster, collections_path: Path, workdir: Path, name: str, images: list[str],
         **extra: object) -> PlayResult:
    values = role_vars(on.cluster, name, images, **extra)
    if on.scenario.flavor != "vanilla":
        values["images_flavor"] = on.scenario.flavor
    return run_playbook(workdir, collections_path, {HOST: values})


def test_kubelets_run_on_the_runtime(on_runtime: RuntimeCluster) -> None:
    """The real kubelet reports the runtime it runs on, and the socket the checks below use is that runtime's."""
    cluster, scenario = on_runtime.cluster, on_runtime.scenario
    for node in cluster.node_names:
        info = cluster.api.get("Node", node)["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith(scenario.version_prefix), info
        with CriClient(cluster.node(node)["address"]) as cri:
            assert cri.runtime_name() == scenario.runtime_name
    if scenario.runtime == "crio":  # nothing but CRI-O's own socket on a CRI-O node
        for node in cluster.node_names:
            root = Path(f"/proc/{cluster.node(node)['holder_pid']}/root")
            assert (root / "run/crio/crio.sock").is_socket()
            assert not (root / "run/containerd/containerd.sock").exists()


def test_flavor_prefetches_onto_every_node(on_runtime: RuntimeCluster, collections_path: Path,
                                           workdir: Path) -> None:
    cluster, scenario = on_runtime.cluster, on_runtime.scenario
    name = f"e2e-rt-{scenario.runtime}"
    images = [ref(repository) for repository in IMAGES]
    result = play(on_runtime, collections_path, workdir, name, images)
    assert result.rc == 0, result.stdout[-6000:]
    report = {str(n["node"]): n for n in result.results[HOST]["nodes"]}
    assert sorted(report) == sorted(cluster.node_names)
    for node in cluster.node_names:
        assert report[node]["status"] == "succeeded", report[node]
        assert (report[node]["ok"], report[node]["failed"]) == (2, 0), report[node]
        for image in images:  # in the runtime's own storage, asked over its CRI socket, not through the agent
            assert cluster.image_present(node, image), (node, image)
    daemonset = cluster.get("DaemonSet", name, name)
    assert daemonset is not None
    paths = [v["hostPath"]["path"] for v in daemonset["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
    assert paths == [scenario.socket_dir], paths
    labels = cluster.node_labels()
    assert all(labels[n].get(LABEL_PREFIX + name) == "succeeded" for n in cluster.node_names), labels


def test_missing_tag_fails_not_found_on_every_node(on_runtime: RuntimeCluster, collections_path: Path,
                                                   workdir: Path) -> None:
    cluster, scenario = on_runtime.cluster, on_runtime.scenario
    name = f"e2e-rt-missing-{scenario.runtime}"
    good = ref(IMAGES[0])
    result = play(on_runtime, collections_path, workdir, name, [good, MISSING], images_not_found="fail")
    assert result.rc != 0, result.stdout[-4000:]
    # "image pulls failed on 2 of 2 node(s): <image>: not_found: <runtime's text> [node-1, node-2]"
    groups = re.findall(re.escape(MISSING) + r": not_found: [^\[\n]*\[([^\]\n]*)\]", result.stdout)
    nodes = {n.strip() for group in groups for n in group.split(",")}
    assert nodes == set(cluster.node_names), result.stdout[-4000:]
    assert not cluster.image_present(cluster.node_names[0], MISSING)
    for node in cluster.node_names:
        assert cluster.image_present(node, good), node
    labels = cluster.node_labels()
    assert all(labels[n].get(LABEL_PREFIX + name) == "failed" for n in cluster.node_names), labels
