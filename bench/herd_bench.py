"""Thundering-herd benchmark (``make bench``; not a test): the node-slot cap on a real cluster. Prints one JSON object.

Setup (issue 12, "Benchmark"): a real local cluster of ``--nodes`` nodes (default 6; each its own kubelet and
containerd, tests/kube) and one registry, every node reaching it through its own fault proxy set to emulate a remote
registry (``--latency-ms`` per request, ``--bandwidth-mib`` per connection). Each round runs, back to back and on
images no node has yet:
  * cap     - the playbook with ``parallel_nodes: 2`` (``--slots``)
  * nocap   - the same without a cap, for contrast
Measured from what the proxies saw (each node's pull window: its first request for the round's images to the end
of its last) and from the API server's audit log:
  * peak    - the most nodes pulling at one instant (exact, from the windows), and the most slot Leases held at
              once, sampled every 0.2 s while the play runs; target for ``cap``: <= slots at every sample;
  * total   - first request to the end of the last, against the ideal ``ceil(nodes / slots) x one node's time``
              (one node's time = the median of the agents' run minus their wait for a slot, in the same run);
              target <= 1.2x;
  * writes  - the agents' Lease writes per node (create/update that succeeded, from the audit log), against
              ``2 + renewals`` (one renewal every lease duration / 4 a node holds its slot); the writes refused
              with 409 (two waiters racing for a freed slot) are counted apart, as conflicts.
The figures of each round are printed; the ratios are the medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from e2e.support import (  # noqa: E402
    HELD_HOST,
    Cluster,
    install_collection,
    most_at_once,
    nodes_by_name,
    role_vars,
    run_playbook,
)
from infra.faultproxy import ProxyClient  # noqa: E402
from infra.images import push_test_image  # noqa: E402
from kube.cluster import KubeCluster  # noqa: E402

LEASE_DURATION_S = 30.0  # the agent's --lease-duration default
IDEAL_TARGET = 1.2


def log(text: str) -> None:
    print(f"herd_bench: {text}", file=sys.stderr, flush=True)


def ensure_agent_image() -> None:
    subprocess.run(["bash", "-c", 'top="$1"; log() { echo "herd_bench: $*" >&2; }; . "$top/scripts/lib-cluster.sh";'
                    " ensure_agent_image", "-", str(REPO)], check=True, stdin=subprocess.DEVNULL)


def windows(cluster: Cluster, prefix: str) -> dict[str, tuple[float, float]]:
    """Per node, the first request for an image of ``prefix`` to the end of its last one."""
    spans = {}
    for node in cluster.node_names:
        records = [r for r in cluster.proxy_requests(node) if f"/{prefix}" in str(r["path"])]
        if records:
            spans[node] = (min(r["started"] for r in records), max(r["ended"] or r["started"] for r in records))
    return spans


class LeaseSampler(threading.Thread):
    """The number of slot Leases with a holder, every ``interval_s``, while the play runs."""

    def __init__(self, cluster: Cluster, namespace: str, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.interval_s = cluster, namespace, interval_s
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        while not self.stopped.wait(self.interval_s):
            try:
                listed = self.cluster.raw_get(path)
            except Exception:  # a sample lost to a busy API server is just not counted
                continue
            items = (listed or {}).get("items", [])
            self.samples.append(sum(1 for lease in items if lease["spec"].get("holderIdentity")))


def run_scenario(cluster: Cluster, collections: Path, work: Path, name: str, images: list[str],
                 slots: int) -> dict[str, Any]:
    cluster.clear_proxy_requests()
    seq = cluster.request_seq()
    sampler = LeaseSampler(cluster, name)
    sampler.start()
    started = time.monotonic()
    hosts = {HELD_HOST: role_vars(cluster, name, images, images_parallel_nodes=slots or None,
                                  images_overall_timeout="30m", images_timeout=1800,
                                  images_initial_pull_attempt_timeout="60s")}
    result = run_playbook(work / name, collections, hosts, timeout_s=2400)
    play_s = time.monotonic() - started
    sampler.stopped.set()
    sampler.join()
    if result.rc != 0:
        raise RuntimeError(f"{name}: the play failed: {result.stdout[-3000:]}")
    nodes = nodes_by_name(result, HELD_HOST)
    failed = [n for n, r in nodes.items() if r["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{name}: nodes not succeeded: {failed}")
    spans = windows(cluster, f"herd/{name}-")
    lengths = [end - start for start, end in spans.values()]
    total = max(end for _, end in spans.values()) - min(start for start, _ in spans.values())
    # One node's time is its agent's own: the run minus the wait for a slot, unpacking and CRI calls included
    # (what a slot is held for); the proxy's window ends at the last byte, before the image is unpacked.
    one_node = statistics.median(float(r["seconds"]) - float(r.get("waited") or 0.0) for r in nodes.values())
    figures: dict[str, Any] = {
        "play_s": round(play_s, 1), "pull_total_s": round(total, 1), "one_node_s": round(one_node, 1),
        "one_node_proxy_window_s": round(statistics.median(lengths), 1),
        "waited_s": {n: r.get("waited") for n, r in sorted(nodes.items()) if r.get("waited") is not None},
        "peak_nodes": most_at_once(list(spans.values())), "nodes_pulled": len(spans),
    }
    if slots:
        ideal = math.ceil(len(spans) / slots) * one_node
        users = {f"system:serviceaccount:{name}:{name}"}
        attempts = [r for r in cluster.writes_since(seq, user=None)
                    if r["user"] in users and r["resource"] == "leases"]
        writes = [r for r in attempts if r["code"] is not None and 200 <= int(r["code"]) < 300]
        renewals = sum(math.floor(length / (LEASE_DURATION_S / 4)) for length in lengths)
        figures.update({
            "ideal_s": round(ideal, 1), "total_vs_ideal": round(total / ideal, 2),
            "peak_leases_sampled": max(sampler.samples, default=0), "lease_samples": len(sampler.samples),
            "lease_writes_per_node": round(len(writes) / len(spans), 2),
            "lease_conflicts_per_node": round((len(attempts) - len(writes)) / len(spans), 2),
            "lease_writes_budget_per_node": round(2 + renewals / len(spans), 2),
        })
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="images per node per scenario")
    parser.add_argument("--size-mib", type=float, default=16.0)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--bandwidth-mib", type=float, default=4.0, help="per connection, MiB/s")
    args = parser.parse_args()

    ensure_agent_image()
    with tempfile.TemporaryDirectory(prefix="herd-bench-") as tmp:
        work = Path(tmp)
        log("installing the collection tarball")
        collections = install_collection(work / "collection")
        log(f"starting a {args.nodes}-node cluster")
        with KubeCluster(work / "kube", nodes=args.nodes, name="herd") as kube:
            cluster = Cluster(kube.dir)
            upstream = kube.info["registry"]["upstream"]
            for node in cluster.node_names:
                ProxyClient(cluster.node(node)["proxy_control_url"]).configure(
                    latency_s=args.latency_ms / 1000, bandwidth_bps=int(args.bandwidth_mib * 1024 * 1024))
            rounds = []
            for index in range(args.rounds):
                figures = {}
                for scenario, slots in (("cap", args.slots), ("nocap", 0))[:: 1 if index % 2 == 0 else -1]:
                    name = f"{scenario}{index}"
                    images = []
                    for i in range(args.images):
                        repo = f"herd/{name}-{i}"
                        push_test_image(upstream, repo, "v1", size_mib=args.size_mib, layers=2, seed=repo)
                        images.append(f"registry.test:5000/{repo}:v1")
                    log(f"round {index + 1}/{args.rounds}: {scenario} ({args.nodes} nodes, slots={slots})")
                    figures[scenario] = run_scenario(cluster, collections, work, name, images, slots)
                    log(f"  {json.dumps(figures[scenario])}")
                rounds.append(figures)
    cap = [r["cap"] for r in rounds]
    summary = {
        "nodes": args.nodes, "slots": args.slots, "rounds": rounds,
        "peak_nodes_cap": max(r["peak_nodes"] for r in cap),
        "peak_leases_cap": max(r["peak_leases_sampled"] for r in cap),
        "peak_nodes_nocap": max(r["nocap"]["peak_nodes"] for r in rounds),
        "total_vs_ideal_median": statistics.median(r["total_vs_ideal"] for r in cap),
        "lease_writes_per_node_median": statistics.median(r["lease_writes_per_node"] for r in cap),
        "lease_writes_budget_per_node_median": statistics.median(r["lease_writes_budget_per_node"] for r in cap),
    }
    summary["targets"] = {
        "peak_within_slots": summary["peak_nodes_cap"] <= args.slots and summary["peak_leases_cap"] <= args.slots,
        "total_within_1.2x_ideal": summary["total_vs_ideal_median"] <= IDEAL_TARGET,
        "lease_writes_within_budget": summary["lease_writes_per_node_median"]
        <= summary["lease_writes_budget_per_node_median"],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
