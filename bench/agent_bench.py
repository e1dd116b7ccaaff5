"""Agent benchmark (``make bench``; not a test): prints one JSON object.

Setup (issue 2, "Benchmark"): Debian's docker-registry behind the fault proxy emulating a remote registry (30 ms added
per request, 25 MiB/s per connection), 20 images of ~10 MiB with three layers each. On a fresh containerd each:
  * agent       - ``image-prefetcher fetch`` with all 20 images (wall time, peak RSS and CPU seconds via wait4)
  * sequential  - a PullImage loop, one image after the other (the naive baseline)
  * parallel_ctr- 20 concurrent ``ctr -n k8s.io images pull --hosts-dir ...`` (the practical limit)
  * gather      - extra reference: an in-process ``asyncio.gather`` of 20 PullImage calls on one grpc.aio channel
                  (what the agent does, minus its process start, logging and bookkeeping)
  * stall       - the agent again, with the first attempt of every image stalled (manifest request never answered);
                  compared against initial-attempt-timeout + initial-delay + the normal agent time
  * rss_500     - the agent pulling 500 tiny distinct images (one 4 KiB layer each) straight from the registry
Scenarios of one round run back to back; with --rounds N the medians are reported (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from infra.agentrun import TEST_REGISTRY_NAME, agent_env, read_summary  # noqa: E402
from infra.containerd import ContainerdNode, overlay_supported  # noqa: E402
from infra.faultproxy import FaultProxy, Rule  # noqa: E402
from infra.images import build_test_image, push_image  # noqa: E402
from infra.registry import Registry  # noqa: E402

LATENCY_S = 0.030
BANDWIDTH_BPS = 25 << 20
STALL_ATTEMPT_TIMEOUT_S = 3
STALL_DELAY_S = 1
TARGETS = {"agent_to_limit": 1.10, "agent_to_sequential": 0.45, "stall_to_bound": 1.15, "rss_500_mib": 64}


def bench_refs(count: int, prefix: str) -> list[str]:
    return [f"{TEST_REGISTRY_NAME}/bench/{prefix}-{i:03d}:v1" for i in range(count)]


def push_images(host: str, count: int, prefix: str, size_mib: float, layers: int) -> None:
    for i in range(count):
        push_image(host, build_test_image(f"bench/{prefix}-{i:03d}", "v1", size_mib=size_mib, layers=layers,
                                          seed=f"{prefix}-{i}"))


def agent_argv() -> list[str]:
    installed = REPO_ROOT / ".venv" / "bin" / "image-prefetcher"
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "image_prefetcher"]


def run_agent(node: ContainerdNode, refs: Sequence[str], workdir: Path, *flags: str) -> dict[str, Any]:
    """Runs the agent as a child and reads its own rusage (peak RSS, CPU) with wait4."""
    termination_log = workdir / f"summary-{time.monotonic_ns()}.json"
    argv = [*agent_argv(), "fetch", f"--cri-socket={node.socket}", f"--termination-log={termination_log}",
            "--overall-timeout=5m", *flags, *refs]
    stderr_path = workdir / "agent.stderr"
    started = time.monotonic()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                env=agent_env())
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    summary = read_summary(termination_log) or {}
    if proc.returncode != 0 or summary.get("ok") != len(set(refs)):
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"agent run failed: rc={proc.returncode} summary={summary}\n{tail}")
    return {"seconds": round(seconds, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "attempts": summary.get("attempts")}


def run_sequential(node: ContainerdNode, refs: Sequence[str]) -> float:
    started = time.monotonic()
    with node.cri() as cri:
        for ref in refs:
            cri.pull_image(ref, timeout_s=300)
    return round(time.monotonic() - started, 3)


def run_parallel_ctr(node: ContainerdNode, refs: Sequence[str]) -> float:
    started = time.monotonic()
    procs = [subprocess.Popen(
        ["ctr", "--address", str(node.socket), "-n", "k8s.io", "images", "pull", "--hosts-dir", str(node.hosts_dir),
         "--snapshotter", node.snapshotter, ref],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for ref in refs]
    failures = []
    for ref, proc in zip(refs, procs):
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"{ref}: {err.decode(errors='replace')[-300:]}")
    if failures:
        raise RuntimeError("ctr pull failed: " + "; ".join(failures))
    return round(time.monotonic() - started, 3)


def run_gather(node: ContainerdNode, refs: Sequence[str]) -> float:
    import asyncio

    import grpc

    from infra.cri import cri_pb2, cri_pb2_grpc

    async def pull_all() -> None:
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = cri_pb2_grpc.ImageServiceStub(channel)
            await asyncio.gather(*(stub.PullImage(cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=ref)),
                                                  timeout=300) for ref in refs))

    started = time.monotonic()
    asyncio.run(pull_all())
    return round(time.monotonic() - started, 3)


class Bench:
    def __init__(self, workdir: Path, registry: Registry, proxy: FaultProxy) -> None:
        self.workdir = workdir
        self.registry = registry
        self.proxy = proxy
        self.nodes = 0

    def fresh_node(self, upstream: str) -> ContainerdNode:
        self.nodes += 1
        return ContainerdNode(self.workdir, registries={TEST_REGISTRY_NAME: upstream}, name=f"node-{self.nodes}")

    def on_fresh_node(self, upstream: str, scenario: Any) -> Any:
        node = self.fresh_node(upstream)
        try:
            node.start()
            return scenario(node)
        finally:
            node.close()
            shutil.rmtree(node.workdir, ignore_errors=True)  # ~400 MB per node: keep the disk footprint small

    def stall_run(self, refs: Sequence[str]) -> dict[str, Any]:
        self.proxy.clear_rules()
        for ref in refs:
            repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
            self.proxy.add_rule(Rule(path=f"^/v2/{repo}/manifests/", action="stall_headers", times=1))
        try:
            return self.on_fresh_node(self.proxy.host, lambda node: run_agent(
                node, refs, self.workdir, f"--initial-pull-attempt-timeout={STALL_ATTEMPT_TIMEOUT_S}s",
                f"--initial-pull-attempt-delay={STALL_DELAY_S}s"))
        finally:
            self.proxy.clear_rules()
            self.proxy.release_stalls()


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--image-mib", type=float, default=10)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rss-images", type=int, default=500)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="prefetch-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        with Registry(workdir) as registry, \
                FaultProxy(upstream=registry.host, latency_s=LATENCY_S, bandwidth_bps=BANDWIDTH_BPS) as proxy:
            result = measure(args, Bench(workdir, registry, proxy))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


def measure(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    refs = bench_refs(args.images, "img")
    push_images(bench.registry.host, args.images, "img", args.image_mib, args.layers)
    agent_runs: list[dict[str, Any]] = []
    sequential: list[float] = []
    parallel: list[float] = []
    gather: list[float] = []
    for _ in range(args.rounds):
        agent_runs.append(bench.on_fresh_node(bench.proxy.host, lambda n: run_agent(n, refs, bench.workdir)))
        sequential.append(bench.on_fresh_node(bench.proxy.host, lambda n: run_sequential(n, refs)))
        parallel.append(bench.on_fresh_node(bench.proxy.host, lambda n: run_parallel_ctr(n, refs)))
        gather.append(bench.on_fresh_node(bench.proxy.host, lambda n: run_gather(n, refs)))
    agent_s = median([r["seconds"] for r in agent_runs])
    limit_s, sequential_s = median(parallel), median(sequential)
    stall = bench.stall_run(refs)
    stall_bound = STALL_ATTEMPT_TIMEOUT_S + STALL_DELAY_S + agent_s

    tiny = bench_refs(args.rss_images, "tiny")
    push_images(bench.registry.host, args.rss_images, "tiny", 4 / 1024, 1)
    rss = bench.on_fresh_node(bench.registry.host, lambda n: run_agent(n, tiny, bench.workdir))

    ratios = {"agent_to_limit": round(agent_s / limit_s, 3), "agent_to_sequential": round(agent_s / sequential_s, 3),
              "stall_to_bound": round(stall["seconds"] / stall_bound, 3)}
    return {
        "setup": {"images": args.images, "image_mib": args.image_mib, "layers": args.layers,
                  "latency_ms": LATENCY_S * 1000, "bandwidth_mib_s_per_connection": BANDWIDTH_BPS / (1 << 20),
                  "rounds": args.rounds, "cpus": os.cpu_count(),
                  "snapshotter": "overlayfs" if overlay_supported(bench.workdir) else "native"},
        "agent_s": agent_s,
        "sequential_pullimage_s": sequential_s,
        "parallel_ctr_s": limit_s,
        **ratios,
        "gather_pullimage_s": median(gather),
        "agent_to_gather": round(agent_s / median(gather), 3),
        "agent_peak_rss_mib": max(r["peak_rss_mib"] for r in agent_runs),
        "agent_cpu_s": median([r["cpu_s"] for r in agent_runs]),
        "stall": {"seconds": stall["seconds"], "bound_s": round(stall_bound, 3), "attempts": stall["attempts"],
                  "initial_attempt_timeout_s": STALL_ATTEMPT_TIMEOUT_S, "initial_delay_s": STALL_DELAY_S,
                  "normal_agent_s": agent_s, "how": "manifest request of every image's first attempt never answered"},
        "rss_500": {**rss, "images": args.rss_images,
                    "how": "distinct tiny images (one 4 KiB layer), not present before, pulled with the default "
                           "Always policy straight from the registry (no proxy)"},
        "targets": {name: {"target": TARGETS[name], "met": value <= TARGETS[name]}
                    for name, value in [*ratios.items(), ("rss_500_mib", rss["peak_rss_mib"])]},
        "runs": {"agent": agent_runs, "sequential_s": sequential, "parallel_ctr_s": parallel, "gather_s": gather},
    }


if __name__ == "__main__":
    sys.exit(main())
