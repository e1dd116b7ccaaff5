"""Agent benchmark (``make bench``; not a test): prints one JSON object.

Setup (issue 2, "Benchmark"): Debian's docker-registry behind the fault proxy emulating a remote registry (30 ms added
per request, 25 MiB/s per connection), 20 images of ~10 MiB with three layers each. Scenarios, each on a fresh
node of the runtime chosen with ``--runtime`` (containerd, containerd2 or crio: ``infra.runtime``):
  * agent       - ``image-prefetcher fetch`` with all 20 images (wall time, peak RSS, CPU seconds)
  * sequential  - a PullImage loop, one image after the other (the naive baseline)
  * limit       - the practical limit: 20 concurrent ``ctr -n k8s.io images pull --hosts-dir ...`` on containerd
                  (the runtime's own client); on CRI-O, which has none, the ``gather`` below
  * gather      - extra reference: an in-process ``asyncio.gather`` of 20 PullImage calls on one grpc.aio channel
                  (what the agent does, minus its process start, logging and bookkeeping)
  * stall       - the agent again, with the first attempt of every image stalled (manifest request never answered);
                  compared against initial-attempt-timeout + initial-delay + the same round's normal agent time
  * rss_500     - the agent pulling 500 tiny distinct images (one 4 KiB layer each) straight from the registry

The machine is shared and its load varies, so every round runs every scenario back to back (interleaved, the order
rotated by one each round so no scenario always runs first or last), and each ratio is computed within its round
(agent and baseline measured seconds apart) and reported as the median over the rounds, with min and max. Wall times
are medians too. Pass/fail: the timing ratios by their median, the 500-image RSS by its highest round.

Peak RSS and CPU seconds of the agent come from ``wait4`` on the agent process, started through a tiny launcher
(``python -I -S``, ~8 MiB) that forks and execs it. Started directly from this script (subprocess uses vfork), the
agent's ``ru_maxrss`` would include this script's own high-water mark: Linux folds the RSS peak of the address space
an exec replaces into the new program's ``maxrss``, and this script holds registry clients, 520 test images and a
grpc channel (~60 MiB), which is what earlier runs reported as the agent's peak. Through the launcher the folded-in
peak is the launcher's, far below any agent's, so ``ru_maxrss`` is the agent's own VmHWM. The agent's wall time is
taken inside the launcher, from fork to exit.

``--compare-src DIR`` also runs another agent source tree (e.g. ``git archive <rev> agent/src | tar -x -C /tmp/old``,
then ``--compare-src /tmp/old/agent/src``) in the 20-image and 500-image scenarios of every round, interleaved with
the others: a before/after comparison on the same machine under the same load.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from infra.agentrun import TEST_REGISTRY_NAME, agent_env, read_summary  # noqa: E402
from infra.containerd import ContainerdNode, overlay_supported  # noqa: E402
from infra.faultproxy import FaultProxy, Rule  # noqa: E402
from infra.images import build_test_image, push_image  # noqa: E402
from infra.registry import Registry  # noqa: E402
from infra.runtime import RUNTIMES, RuntimeNode, make_node  # noqa: E402

LATENCY_S = 0.030
BANDWIDTH_BPS = 25 << 20
STALL_ATTEMPT_TIMEOUT_S = 3
STALL_DELAY_S = 1
MANY_IMAGES = 150
MANY_TIMEOUT = "3m"
TARGETS = {"agent_to_limit": 1.10, "agent_to_sequential": 0.45, "stall_to_bound": 1.15, "rss_500_mib": 64}
AGENT_SRC = REPO_ROOT / "agent" / "src"

# Forks and execs argv[2:], waits for it with wait4 and writes its own rusage and wall time as JSON to argv[1]. Run as
# `python -I -S -c`: small, so the RSS peak it folds into the child's maxrss at exec is far below the agent's.
LAUNCHER = r"""
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.monotonic() - started
with open(out, "w") as handle:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, handle)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def bench_refs(count: int, prefix: str) -> list[str]:
    return [f"{TEST_REGISTRY_NAME}/bench/{prefix}-{i:03d}:v1" for i in range(count)]


def push_images(host: str, count: int, prefix: str, size_mib: float, layers: int) -> None:
    for i in range(count):
        push_image(
            host,
            build_test_image(f"bench/{prefix}-{i:03d}", "v1", size_mib=size_mib, layers=layers, seed=f"{prefix}-{i}"),
        )


def run_agent(
    node: RuntimeNode,
    refs: Sequence[str],
    workdir: Path,
    *flags: str,
    src: Path = AGENT_SRC,
    require_all: bool = True,
) -> dict[str, Any]:
    """Runs the agent (from source tree ``src``) through the launcher; wall time, peak RSS and CPU of the agent.
    ``require_all``: a run that did not pull every image is an error (else its ``ok`` count is reported)."""
    stamp = time.monotonic_ns()
    termination_log = workdir / f"summary-{stamp}.json"
    usage_path = workdir / f"usage-{stamp}.json"
    argv = [
        sys.executable,
        "-m",
        "image_prefetcher",
        "fetch",
        f"--cri-socket={node.socket}",
        f"--termination-log={termination_log}",
        "--overall-timeout=5m",
        *flags,
        *refs,
    ]
    env = agent_env()
    env["PYTHONPATH"] = os.pathsep.join([str(src), env["PYTHONPATH"]])  # first on sys.path: this tree's agent
    stderr_path = workdir / "agent.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(usage_path), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            check=False,
        )
    summary = read_summary(termination_log) or {}
    if proc.returncode != 0 or (require_all and summary.get("ok") != len(set(refs))):
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"agent run failed: rc={proc.returncode} summary={summary}\n{tail}")
    usage = json.loads(usage_path.read_text())
    return {
        "seconds": round(usage["seconds"], 3),
        "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1),
        "cpu_s": round(usage["cpu_s"], 3),
        "attempts": summary.get("attempts"),
        "ok": summary.get("ok"),
    }


def run_sequential(node: RuntimeNode, refs: Sequence[str]) -> float:
    started = time.monotonic()
    with node.cri() as cri:
        for ref in refs:
            cri.pull_image(ref, timeout_s=300)
    return round(time.monotonic() - started, 3)


def run_parallel_limit(node: RuntimeNode, refs: Sequence[str]) -> float:
    """The practical limit: the runtime's own client pulling everything at once, else ``run_gather``."""
    if not isinstance(node, ContainerdNode):
        return run_gather(node, refs)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                node.ctr_binary,
                "--address",
                str(node.socket),
                "-n",
                "k8s.io",
                "images",
                "pull",
                "--hosts-dir",
                str(node.hosts_dir),
                "--snapshotter",
                node.snapshotter,
                ref,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for ref in refs
    ]
    failures = []
    for ref, proc in zip(refs, procs):
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"{ref}: {err.decode(errors='replace')[-300:]}")
    if failures:
        raise RuntimeError("ctr pull failed: " + "; ".join(failures))
    return round(time.monotonic() - started, 3)


def run_gather(node: RuntimeNode, refs: Sequence[str]) -> float:
    import asyncio

    import grpc

    from infra.cri import cri_pb2, cri_pb2_grpc

    async def pull_all() -> None:
        async with grpc.aio.insecure_channel(node.address) as channel:
            stub = cri_pb2_grpc.ImageServiceStub(channel)
            await asyncio.gather(
                *(
                    stub.PullImage(cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=ref)), timeout=300)
                    for ref in refs
                )
            )

    started = time.monotonic()
    asyncio.run(pull_all())
    return round(time.monotonic() - started, 3)


class Bench:
    def __init__(self, workdir: Path, registry: Registry, proxy: FaultProxy, runtime: str) -> None:
        self.runtime = runtime
        self.workdir = workdir
        self.registry = registry
        self.proxy = proxy
        self.nodes = 0

    def fresh_node(self, upstream: str) -> RuntimeNode:
        self.nodes += 1
        return make_node(self.runtime, self.workdir, registries={TEST_REGISTRY_NAME: upstream},
                         name=f"node-{self.nodes}")

    def on_fresh_node(self, upstream: str, scenario: Callable[[RuntimeNode], Any]) -> Any:
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
            return self.on_fresh_node(
                self.proxy.host,
                lambda node: run_agent(
                    node,
                    refs,
                    self.workdir,
                    f"--initial-pull-attempt-timeout={STALL_ATTEMPT_TIMEOUT_S}s",
                    f"--initial-pull-attempt-delay={STALL_DELAY_S}s",
                ),
            )
        finally:
            self.proxy.clear_rules()
            self.proxy.release_stalls()


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "values": [round(v, 3) for v in values],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime", choices=RUNTIMES, default="containerd", help="the nodes' runtime")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--image-mib", type=float, default=10)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario, interleaved (default 3)")
    parser.add_argument("--rss-images", type=int, default=500)
    parser.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        help="another agent source tree (its agent/src) to run in the 20- and 500-image scenarios "
        "of every round too, for a before/after comparison under the same load",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.compare_src is not None and not (args.compare_src / "image_prefetcher").is_dir():
        parser.error(f"--compare-src {args.compare_src}: no image_prefetcher package in it")

    workdir = Path(tempfile.mkdtemp(prefix="prefetch-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        with (
            Registry(workdir) as registry,
            FaultProxy(upstream=registry.host, latency_s=LATENCY_S, bandwidth_bps=BANDWIDTH_BPS) as proxy,
        ):
            result = measure(args, Bench(workdir, registry, proxy, args.runtime))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


def measure(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    refs = bench_refs(args.images, "img")
    tiny = bench_refs(args.rss_images, "tiny")
    many = tiny[:MANY_IMAGES]
    push_images(bench.registry.host, args.images, "img", args.image_mib, args.layers)
    push_images(bench.registry.host, args.rss_images, "tiny", 4 / 1024, 1)
    proxied, direct = bench.proxy.host, bench.registry.host

    scenarios: dict[str, Callable[[], Any]] = {
        "agent": lambda: bench.on_fresh_node(proxied, lambda n: run_agent(n, refs, bench.workdir)),
        "sequential": lambda: bench.on_fresh_node(proxied, lambda n: run_sequential(n, refs)),
        "limit": lambda: bench.on_fresh_node(proxied, lambda n: run_parallel_limit(n, refs)),
        "gather": lambda: bench.on_fresh_node(proxied, lambda n: run_gather(n, refs)),
        "stall": lambda: bench.stall_run(refs),
        "rss_500": lambda: bench.on_fresh_node(direct, lambda n: run_agent(n, tiny, bench.workdir)),
        # The default cap of 32 pulls at once against the Go tool's all-at-once (docs/runtimes.md).
        "many_default": lambda: bench.on_fresh_node(direct, lambda n: run_agent(n, many, bench.workdir)),
        "many_unlimited": lambda: bench.on_fresh_node(
            direct,
            lambda n: run_agent(
                n, many, bench.workdir, "--max-parallel-pulls=0", f"--overall-timeout={MANY_TIMEOUT}", require_all=False
            ),
        ),
    }
    if args.compare_src is not None:
        src = args.compare_src.resolve()
        scenarios["compare_agent"] = lambda: bench.on_fresh_node(
            proxied, lambda n: run_agent(n, refs, bench.workdir, src=src)
        )
        scenarios["compare_rss_500"] = lambda: bench.on_fresh_node(
            direct, lambda n: run_agent(n, tiny, bench.workdir, src=src)
        )

    load_start = load_average()
    names = list(scenarios)
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        shift = number % len(names)
        measured = {name: scenarios[name]() for name in names[shift:] + names[:shift]}
        rounds.append({name: measured[name] for name in names})
    load_end = load_average()

    def column(name: str, key: str | None = None) -> list[float]:
        return [r[name] if key is None else r[name][key] for r in rounds]

    def ratios(numerator: str, denominator: str) -> list[float]:
        return [n / d for n, d in zip(column(numerator, "seconds"), column(denominator))]

    stall_bound = [STALL_ATTEMPT_TIMEOUT_S + STALL_DELAY_S + a for a in column("agent", "seconds")]
    per_round = {
        "agent_to_limit": spread(ratios("agent", "limit")),
        "agent_to_sequential": spread(ratios("agent", "sequential")),
        "stall_to_bound": spread([s / b for s, b in zip(column("stall", "seconds"), stall_bound)]),
    }
    rss_500 = spread(column("rss_500", "peak_rss_mib"))
    agent_s = spread(column("agent", "seconds"))
    gather_s = spread(column("gather"))
    judged = {**{name: value["median"] for name, value in per_round.items()}, "rss_500_mib": rss_500["max"]}
    result: dict[str, Any] = {
        "setup": {
            "images": args.images,
            "image_mib": args.image_mib,
            "layers": args.layers,
            "latency_ms": LATENCY_S * 1000,
            "bandwidth_mib_s_per_connection": BANDWIDTH_BPS / (1 << 20),
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": load_end,
            "runtime": args.runtime,
            "limit_baseline": "concurrent PullImage calls on one channel (CRI-O has no client of its own)"
            if args.runtime == "crio" else "concurrent ctr images pull",
            "snapshotter": "overlayfs" if overlay_supported(bench.workdir) else "native",
        },
        "agent_s": agent_s["median"],
        "sequential_pullimage_s": spread(column("sequential"))["median"],
        "parallel_limit_s": spread(column("limit"))["median"],
        **{name: value["median"] for name, value in per_round.items()},
        "gather_pullimage_s": gather_s["median"],
        "agent_to_gather": spread([a / g for a, g in zip(column("agent", "seconds"), column("gather"))])["median"],
        "agent_peak_rss_mib": max(column("agent", "peak_rss_mib")),
        "agent_cpu_s": spread(column("agent", "cpu_s"))["median"],
        "stall": {
            "seconds": spread(column("stall", "seconds"))["median"],
            "bound_s": round(statistics.median(stall_bound), 3),
            "attempts": rounds[-1]["stall"]["attempts"],
            "initial_attempt_timeout_s": STALL_ATTEMPT_TIMEOUT_S,
            "initial_delay_s": STALL_DELAY_S,
            "how": "manifest request of every image's first attempt never answered; bound = initial attempt "
            "timeout + initial delay + the same round's normal agent time",
        },
        "rss_500": {
            "peak_rss_mib": rss_500["max"],
            "median_peak_rss_mib": rss_500["median"],
            "seconds": spread(column("rss_500", "seconds"))["median"],
            "cpu_s": spread(column("rss_500", "cpu_s"))["median"],
            "images": args.rss_images,
            "how": "distinct tiny images (one 4 KiB layer), not present before, pulled with the default "
            "Always policy straight from the registry (no proxy); peak RSS = ru_maxrss of the agent "
            "from wait4 via a small fork/exec launcher (its own VmHWM), highest over the rounds",
        },
        "many_images": {
            "images": MANY_IMAGES,
            "default_s": spread(column("many_default", "seconds"))["median"],
            "unlimited_s": spread(column("many_unlimited", "seconds"))["median"],
            "default_to_unlimited": spread(
                [d / u for d, u in zip(column("many_default", "seconds"), column("many_unlimited", "seconds"))]
            )["median"],
            "default_attempts": rounds[-1]["many_default"]["attempts"],
            "unlimited_attempts": rounds[-1]["many_unlimited"]["attempts"],
            "unlimited_ok": [r["many_unlimited"]["ok"] for r in rounds],
            "how": f"distinct tiny images straight from the registry; default = --max-parallel-pulls 32, unlimited = "
            f"--max-parallel-pulls=0 (the Go tool: every pull at once) with --overall-timeout={MANY_TIMEOUT}",
        },
        "targets": {
            name: {"target": TARGETS[name], "value": value, "met": value <= TARGETS[name]}
            for name, value in judged.items()
        },
        "spread": {
            **per_round,
            "agent_s": agent_s,
            "sequential_pullimage_s": spread(column("sequential")),
            "parallel_limit_s": spread(column("limit")),
            "gather_pullimage_s": gather_s,
            "stall_s": spread(column("stall", "seconds")),
            "rss_500_mib": rss_500,
        },
        "runs": rounds,
    }
    if args.compare_src is not None:
        result["compare"] = {
            "src": str(args.compare_src),
            "agent_s": spread(column("compare_agent", "seconds")),
            "agent_to_limit": spread(ratios("compare_agent", "limit")),
            "agent_to_sequential": spread(ratios("compare_agent", "sequential")),
            "agent_cpu_s": spread(column("compare_agent", "cpu_s")),
            "rss_500_mib": spread(column("compare_rss_500", "peak_rss_mib")),
            "rss_500_cpu_s": spread(column("compare_rss_500", "cpu_s")),
            "rss_500_s": spread(column("compare_rss_500", "seconds")),
        }
    return result


if __name__ == "__main__":
    sys.exit(main())
