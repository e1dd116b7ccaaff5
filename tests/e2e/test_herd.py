"""No thundering herd, on a real 6-node cluster (each node its own kubelet, containerd and registry fault proxy):
the node-slot cap, a slot whose holder dies, the canary, and a registry that answers 429.

What the proxies record is read as orders of events and as lower bounds on waits, never as speeds: a correct cap
holds however long the test watches, and a slower machine only makes the waits longer. The cluster is the module's
own (6 nodes); the killed-holder test stops one of its nodes for good, so it runs last.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.support import (
    HELD_HOST,
    Cluster,
    HeldRollout,
    most_at_once,
    nodes_by_name,
    ref,
    role_vars,
    run_playbook,
    succeeded_everywhere,
)
from infra._util import wait_until
from kube.client import ApiError
from kube.cluster import KubeCluster

NODES = 6
# How long the nodes are watched, once the slots are full, for one more node asking for the image. A correct cap
# holds for any length; a broken one shows at once (every agent sends its first request right after starting).
HELD_WATCH_S = 8.0
# The agents' own bound: slow nodes and six of them one or two at a time, far from the 60 s the other tests use.
AGENT_TIMEOUTS = {"images_overall_timeout": "10m", "images_fail_on_pull_error": False}
ROLLOUT_TIMEOUT_S = 400
LEASE_DURATION_S = 30  # the agent's --lease-duration default: what a dead holder's slot costs the others
RENEW_INTERVAL_S = LEASE_DURATION_S / 4


@pytest.fixture(scope="module")
def herd(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Cluster]]:
    upstream = cluster.info["registry"]["upstream"]  # the session's registry, test images already pushed
    with KubeCluster(tmp_path_factory.mktemp("herd"), nodes=NODES, registry_upstream=upstream, name="herd") as kube:
        yield kube, Cluster(kube.dir)


def repo_requests(cluster: Cluster, node: str, image: str) -> list[dict[str, Any]]:
    """The node proxy's records of requests for ``image``'s repository (manifests and blobs)."""
    repository = image.split("/", 1)[1].split(":", 1)[0]
    return [r for r in cluster.proxy_requests(node) if f"/{repository}/" in str(r["path"])]


def asking_nodes(cluster: Cluster, image: str) -> list[str]:
    return [n for n in cluster.node_names if repo_requests(cluster, n, image)]


def window(records: list[dict[str, Any]]) -> tuple[float, float]:
    return min(r["started"] for r in records), max(r["ended"] or r["started"] for r in records)


def slot_holders(cluster: Cluster, namespace: str) -> list[str]:
    listed = cluster.raw_get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    assert listed is not None
    return sorted(h for lease in listed["items"] if (h := lease["spec"].get("holderIdentity")))


def hold_all(cluster: Cluster, collections_path: Path, workdir: Path, name: str, image: str,
             **role_extra: Any) -> HeldRollout:
    cluster.clear_proxy_requests()
    return HeldRollout(cluster, collections_path, workdir, name, image, cluster.node_names, action="hold",
                       timeout_s=ROLLOUT_TIMEOUT_S, **AGENT_TIMEOUTS, **role_extra)


def test_two_slots_never_let_a_third_node_pull(herd: tuple[KubeCluster, Cluster], collections_path: Path,
                                               workdir: Path) -> None:
    _, cluster = herd
    image = ref("e2e/herd-two")
    held = hold_all(cluster, collections_path, workdir, "herd-two", image, images_parallel_nodes=2)
    try:
        assert wait_until(lambda: len(asking_nodes(cluster, image)) >= 2, 300, 0.5), asking_nodes(cluster, image)
        time.sleep(HELD_WATCH_S)
        asking = asking_nodes(cluster, image)
        assert len(asking) == 2, f"nodes pulling at once with parallel_nodes=2: {asking}"
        assert slot_holders(cluster, "herd-two") == sorted(asking)
    finally:
        held.release()
    succeeded_everywhere(held, cluster, image)
    windows = [window(repo_requests(cluster, node, image)) for node in cluster.node_names]
    assert most_at_once(windows) <= 2, sorted(windows)
    assert slot_holders(cluster, "herd-two") == []  # every slot released


def test_canary_finds_a_missing_image_once_for_every_node(herd: tuple[KubeCluster, Cluster],
                                                          collections_path: Path, workdir: Path) -> None:
    _, cluster = herd
    good, missing = ref("e2e/herd-canary"), ref("e2e/herd-missing")
    for node in cluster.node_names:
        cluster.remove_image(node, good)
    cluster.clear_proxy_requests()
    hosts = {HELD_HOST: role_vars(cluster, "herd-canary", [good, missing], images_parallel_nodes=2,
                                  images_canary=True, images_not_found="fail", images_timeout=ROLLOUT_TIMEOUT_S,
                                  **AGENT_TIMEOUTS)}
    result = run_playbook(workdir, collections_path, hosts, timeout_s=ROLLOUT_TIMEOUT_S + 120)
    assert result.rc == 0, result.stdout[-6000:]  # images_fail_on_pull_error: false, to read the whole report

    askers = asking_nodes(cluster, missing)
    assert len(askers) == 1, f"the missing image was asked for by {askers}, not once"
    canary = askers[0]
    nodes = nodes_by_name(result, HELD_HOST)
    assert sorted(nodes) == sorted(cluster.node_names)
    for node, report in nodes.items():
        assert report["status"] == "failed" and report["ok"] == 1 and report["failed"] == 1, report
        assert cluster.image_present(node, good), node
        if node != canary:
            assert f"found by the canary node {canary}" in report["errors"][missing], report
    # The canary pulled alone: no other node asked for anything before its last answer.
    canary_end = window(repo_requests(cluster, canary, good) + repo_requests(cluster, canary, missing))[1]
    others_start = min(window(repo_requests(cluster, n, good))[0] for n in cluster.node_names if n != canary)
    assert others_start >= canary_end, (canary, canary_end, others_start)


def agent_events(log: str) -> list[tuple[float, str, str]]:
    """(time, message, image) of the agent's attempt starts and rate-limit back-offs, from its log (logfmt)."""
    events = []
    for match in _EVENT.finditer(log):
        stamp = datetime.datetime.fromisoformat(match["time"].replace("Z", "+00:00")).timestamp()
        events.append((stamp, match["msg"], match["image"]))
    return events


_ATTEMPT, _BACKOFF = "attempting image pull", "registry rate limited, backing off for the whole host"
_EVENT = re.compile(rf'time=(?P<time>\S+) level=\w+ msg="(?P<msg>{_ATTEMPT}|{_BACKOFF})" image=(?P<image>\S+)')


def test_registry_rate_limit_backs_the_whole_host_off_then_the_node_succeeds(
    herd: tuple[KubeCluster, Cluster], collections_path: Path, workdir: Path
) -> None:
    _, cluster = herd
    images, node, namespace = [ref("e2e/herd-429"), ref("e2e/herd-429b")], cluster.node_names[0], "herd-429"
    delay_s = 2.0  # the first back-off: the retry delay (the proxy's 429 carries no Retry-After)
    for each in cluster.node_names:
        for image in images:
            cluster.remove_image(each, image)
    cluster.clear_proxy_requests()
    # Every manifest request of both images is refused until the node has backed off twice.
    rule = cluster.proxy(node, "POST", "rules", {"path": "/e2e/herd-429", "action": "status", "status": 429})[0]
    hosts = {HELD_HOST: role_vars(cluster, namespace, images, images_initial_pull_attempt_delay=f"{delay_s:g}s",
                                  images_timeout=ROLLOUT_TIMEOUT_S, **AGENT_TIMEOUTS)}
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(run_playbook, workdir, collections_path, hosts, timeout_s=ROLLOUT_TIMEOUT_S + 120)
    try:
        def backed_off_twice() -> bool:
            pods = [p for p in cluster.pods(namespace) if p["spec"].get("nodeName") == node]
            if future.done() or not pods:
                return future.done()
            try:
                log = cluster.pod_log(namespace, pods[0]["metadata"]["name"], "prefetch")
            except ApiError:  # the container has not started yet
                return False
            return sum(1 for _, msg, _ in agent_events(log) if msg == _BACKOFF) >= 2
        assert wait_until(backed_off_twice, 300, 0.5), "the agent never backed off twice"
    finally:
        cluster.proxy(node, "DELETE", f"rules/{rule['id']}")
        result = future.result(timeout=ROLLOUT_TIMEOUT_S + 180)
        pool.shutdown()
    assert result.rc == 0, result.stdout[-6000:]
    report = nodes_by_name(result, HELD_HOST)[node]
    assert report["status"] == "succeeded" and report["errors"] == {} and report["ok"] == 2, report
    assert all(cluster.image_present(node, image) for image in images)
    assert [r for r in repo_requests(cluster, node, images[0]) if r["status"] == 429], "no 429 was answered"

    events = agent_events(cluster.pod_log(namespace, report["pod"], "prefetch"))
    backoffs = [t for t, msg, _ in events if msg == _BACKOFF]
    assert len(backoffs) >= 2, events
    # The whole host backed off: after the first 429, no attempt of either image started within the delay.
    after = [(t, image) for t, msg, image in events if msg == _ATTEMPT and t > backoffs[0]]
    assert after and all(t - backoffs[0] >= delay_s - 0.05 for t, _ in after), (backoffs[0], after)


def test_a_slot_holder_that_dies_frees_its_slot_after_the_lease_duration(
    herd: tuple[KubeCluster, Cluster], collections_path: Path, workdir: Path
) -> None:
    kube, cluster = herd
    image = ref("e2e/herd-killed")
    held = hold_all(cluster, collections_path, workdir, "herd-killed", image, images_parallel_nodes=1)
    try:
        assert wait_until(lambda: len(asking_nodes(cluster, image)) >= 1, 300, 0.5), "no node ever asked"
        holder = asking_nodes(cluster, image)[0]
        assert slot_holders(cluster, "herd-killed") == [holder]
        killed_at = time.time()
        kube.node(holder).stop()  # the machine dies: kubelet, containerd and the agent, nothing released
        cluster.kubectl("delete", "node", holder)
        held.rules.pop(holder)  # its proxy went with it
    finally:
        held.release()
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result, HELD_HOST)
    assert nodes[holder]["status"] == "gone", nodes[holder]
    survivors = [n for n in cluster.node_names if n != holder]
    assert all(nodes[n]["status"] == "succeeded" for n in survivors), nodes
    assert all(cluster.image_present(n, image) for n in survivors)
    # The slot came back only once the dead holder's Lease ran out, on the waiters' own clocks: at least a lease
    # duration after its last renewal, which was at most one renew interval (plus slack for a loaded machine)
    # before the kill.
    next_start = min(window(repo_requests(cluster, n, image))[0] for n in survivors)
    assert next_start - killed_at >= LEASE_DURATION_S - 2 * RENEW_INTERVAL_S, (killed_at, next_start)
    windows = [window(repo_requests(cluster, n, image)) for n in survivors]
    assert most_at_once(windows) <= 1, sorted(windows)
