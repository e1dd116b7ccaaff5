"""Playbook figures for ``make bench``: the role against the seed's own kubectl flow, on the real local cluster.

One run starts a real 3-node cluster (tests/kube), pushes a few small images and pre-loads them on every node (a
warm-up instance), then measures, interleaved round by round so the machine's noise hits every flow alike:

- ``playbook``: ``ansible-playbook stackrox.prefetch.prefetch`` (the installed tarball) for a fresh instance whose
  images are already on the nodes (progress on: the role's default);
- ``kubectl``: the seed's flow for the same manifest (rendered by the role with ``images_state=rendered``, not
  timed): ``kubectl apply -f`` (the Namespace first in the same file) then ``kubectl rollout status``;
- ``noop``: the playbook again on the warm-up instance, which is already done;
- ``ansible_floor``: ``ansible-playbook`` of a play with one debug task (Ansible's own start-up).

Variants, measured in the same rounds: ``--pipelining`` (this checkout with ANSIBLE_PIPELINING=True) and
``--baseline REF`` (e.g. ``--baseline main``: the collection of that git revision, its own tarball from
``git archive``), for before/after figures from one run.

Prints medians, the ratios (playbook/kubectl, no-op/floor), the admin's API requests per flow (from the API
server's audit log) and one JSON line. ``--profile`` also prints each task's median time (a callback in
bench/callback_plugins). Everything it starts is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from e2e.support import Cluster, install_collection, role_vars, write_inventory  # noqa: E402
from infra.images import push_test_image  # noqa: E402
from kube.cluster import KubeCluster  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"
REGISTRY = "registry.test:5000"
IMAGES = [("bench/app0", "v1", 1.0, 2), ("bench/app1", "v1", 1.0, 2), ("bench/app2", "v1", 0.5, 1)]
FLOOR_PLAY = [{"name": "Floor", "hosts": "clusters", "gather_facts": False,
               "tasks": [{"name": "Say hello", "ansible.builtin.debug": {"msg": "hello"}}]}]


def log(message: str) -> None:
    print(f"playbook-bench: {message}", file=sys.stderr, flush=True)


def install_revision(work: Path, revision: str) -> Path:
    """The collection of git revision ``revision`` of this repository (git archive), installed under ``work``."""
    source = work / "source"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    return install_collection(work, source)


def ensure_agent_image() -> None:
    """scripts/lib-cluster.sh's ensure_agent_image: builds the agent image only when its sources changed."""
    script = f'top={REPO}; log() {{ echo "$*" >&2; }}; . {REPO}/scripts/lib-cluster.sh; ensure_agent_image'
    subprocess.run(["bash", "-c", script], check=True, stdout=sys.stderr)


@dataclass(frozen=True)
class Variant:
    """A collection to measure and the environment it runs with."""

    collections: Path
    env: dict[str, str] = field(default_factory=dict)


class Bench:
    """The runs of one bench on one cluster; ``timings`` holds each flow's wall times, ``requests`` its API calls."""

    def __init__(self, cluster: Cluster, variants: dict[str, Variant], work: Path, profile: bool) -> None:
        """``variants``: suffix of the flow names ("" for this checkout, "@REF" for a baseline) -> what runs."""
        self.cluster, self.variants, self.work, self.profile = cluster, variants, work, profile
        self.images = [f"{REGISTRY}/{repo}:{tag}" for repo, tag, _size, _layers in IMAGES]
        self.timings: dict[str, list[float]] = {"kubectl": [], "ansible_floor": []}
        self.requests: dict[str, list[int]] = {"kubectl": []}
        for suffix in variants:
            for flow in ("playbook", "noop"):
                self.timings[flow + suffix] = []
                self.requests[flow + suffix] = []
        self.tasks: dict[str, list[float]] = {}
        self.env = {**os.environ, "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
                    "ANSIBLE_HOST_KEY_CHECKING": "False"}
        self.env.pop("K8S_AUTH_KUBECONFIG", None)
        (work / "floor.yml").write_text(json.dumps(FLOOR_PLAY))

    def _inventory(self, name: str, **extra: Any) -> Path:
        values = role_vars(self.cluster, name, self.images, **extra)
        return write_inventory(self.work / f"inventory-{name}.yml", {"bench": values})

    def _ansible(self, label: str, inventory: Path, play: str, suffix: str = "") -> float:
        variant = self.variants[suffix]
        env = {**self.env, "ANSIBLE_COLLECTIONS_PATH": str(variant.collections), **variant.env}
        times_file = self.work / f"tasks-{label}.json"
        if self.profile:
            env.update({"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "task_clock",
                        "BENCH_TASK_TIMES": str(times_file)})
        started = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), play], cwd=self.work,
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        elapsed = time.monotonic() - started
        (self.work / f"{label}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{label}: ansible-playbook exited {proc.returncode}:\n{proc.stdout[-4000:]}")
        if self.profile and times_file.exists():
            for task, seconds in json.loads(times_file.read_text()):
                task = re.sub(r"bench-[\w-]+/bench-[\w-]+", "<instance>", task)  # one entry across rounds
                self.tasks.setdefault(f"{label.split('-')[0]}: {task}", []).append(seconds)
        return elapsed

    def _kubectl(self, *args: str, stdin: str | None = None) -> None:
        proc = self.cluster.kubectl(*args, stdin=stdin, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")

    def _admin_requests_since(self, seq: int) -> int:
        return len(self.cluster.requests_since(seq))

    def _warm_name(self, suffix: str) -> str:
        return "bench-warm" + (f"-v{list(self.variants).index(suffix)}" if suffix else "")

    def warm_up(self) -> None:
        """Each variant's warm-up instance (the first pulls the images onto every node); the no-op rounds re-run
        them."""
        for suffix in self.variants:
            log(f"warm-up{suffix}: the playbook applies {self._warm_name(suffix)}")
            self._ansible(f"warmup{suffix}", self._inventory(self._warm_name(suffix)), "stackrox.prefetch.prefetch",
                          suffix)

    def render(self, name: str) -> str:
        """The manifest the role applies, as YAML (images_state=rendered), with its Namespace first."""
        dest = self.work / f"{name}.yaml"
        self._ansible(f"render-{name}", self._inventory(name, images_state="rendered", images_dest=str(dest)),
                      "stackrox.prefetch.prefetch")
        namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return f"{namespace}\n---\n{dest.read_text()}"

    def _timed_playbook(self, flow: str, name: str, number: int, suffix: str) -> float:
        seq = self.cluster.request_seq()
        elapsed = self._ansible(f"{flow}{suffix}-{number}", self._inventory(name), "stackrox.prefetch.prefetch",
                                suffix)
        self.timings[flow + suffix].append(elapsed)
        self.requests[flow + suffix].append(self._admin_requests_since(seq))
        return elapsed

    def _timed_kubectl(self, name: str, manifest: str) -> float:
        seq = self.cluster.request_seq()
        started = time.monotonic()
        self._kubectl("apply", "-f", "-", stdin=manifest)
        self._kubectl("-n", name, "rollout", "status", f"daemonset/{name}", "--timeout=300s")
        elapsed = time.monotonic() - started
        self.timings["kubectl"].append(elapsed)
        self.requests["kubectl"].append(self._admin_requests_since(seq))
        return elapsed

    def round(self, number: int) -> None:
        seeded = f"bench-kc{number}"
        manifest = self.render(seeded)
        figures = []
        for suffix in self.variants:
            fresh = f"bench-pb{number}" + (f"-v{list(self.variants).index(suffix)}" if suffix else "")
            figures.append(f"playbook{suffix} {self._timed_playbook('playbook', fresh, number, suffix):.2f}s")
        figures.append(f"kubectl {self._timed_kubectl(seeded, manifest):.2f}s")
        for suffix in self.variants:
            noop = self._timed_playbook("noop", self._warm_name(suffix), number, suffix)
            figures.append(f"no-op{suffix} {noop:.2f}s")
        floor = self._ansible(f"floor-{number}", self._inventory("bench-warm"), str(self.work / "floor.yml"))
        self.timings["ansible_floor"].append(floor)
        log(f"round {number}: {', '.join(figures)}, ansible floor {floor:.2f}s")

    def summary(self) -> dict[str, Any]:
        med = {flow: round(statistics.median(values), 3) for flow, values in self.timings.items()}
        summary: dict[str, Any] = {
            "bench": "playbook", "rounds": len(self.timings["kubectl"]), "median_s": med,
            "runs_s": {flow: [round(v, 3) for v in values] for flow, values in self.timings.items()},
            "admin_api_requests_median": {flow: statistics.median(v) for flow, v in self.requests.items()},
        }
        for suffix in self.variants:
            summary["playbook_over_kubectl" + suffix] = round(med["playbook" + suffix] / med["kubectl"], 2)
            summary["noop_s" + suffix] = med["noop" + suffix]
            summary["noop_over_ansible_floor" + suffix] = round(med["noop" + suffix] / med["ansible_floor"], 2)
        return summary


@contextmanager
def bench_cluster(work: Path) -> Iterator[Cluster]:
    with KubeCluster(work / "cluster", nodes=3, name="bench") as kube:
        for repo, tag, size, layers in IMAGES:
            push_test_image(kube.info["registry"]["upstream"], repo, tag, size_mib=size, layers=layers, seed=repo)
        yield Cluster(work / "cluster")


def print_summary(summary: dict[str, Any], suffixes: list[str], tasks: dict[str, list[float]]) -> None:
    med = summary["median_s"]
    for suffix in suffixes:
        print(f"playbook{suffix} (fresh instance, images on the nodes): {med['playbook' + suffix]:.2f}s median")
        print(f"no-op re-run{suffix}: {med['noop' + suffix]:.2f}s median")
    print(f"kubectl apply -f + rollout status: {med['kubectl']:.2f}s median")
    print(f"ansible-playbook with one debug task: {med['ansible_floor']:.2f}s median")
    for suffix in suffixes:
        print(f"playbook/kubectl{suffix}: {summary['playbook_over_kubectl' + suffix]:.2f}x (target <= 2)   "
              f"no-op{suffix}: {summary['noop_s' + suffix]:.2f}s (target <= 3), "
              f"{summary['noop_over_ansible_floor' + suffix]:.2f}x the Ansible floor")
    print(f"admin API requests (median): {summary['admin_api_requests_median']}")
    if tasks:
        print("per task, median seconds (--profile):")
        for task, values in sorted(tasks.items(), key=lambda item: -statistics.median(item[1])):
            print(f"  {statistics.median(values):6.2f}  {task}")
    print(json.dumps(summary, sort_keys=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also time every task (bench/callback_plugins)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    parser.add_argument("--baseline", metavar="REF", help="also measure the collection of this git revision")
    parser.add_argument("--pipelining", action="store_true",
                        help="also measure this checkout with ANSIBLE_PIPELINING=True (flows suffixed +pipelining)")
    args = parser.parse_args()
    ensure_agent_image()
    work = Path(tempfile.mkdtemp(prefix="playbook-bench-"))
    ok = False
    try:
        variants = {"": Variant(install_collection(work / "this"))}
        if args.pipelining:
            variants["+pipelining"] = Variant(variants[""].collections, {"ANSIBLE_PIPELINING": "True"})
        if args.baseline:
            variants[f"@{args.baseline}"] = Variant(install_revision(work / "baseline", args.baseline))
        log(f"starting a 3-node cluster in {work / 'cluster'}")
        with bench_cluster(work) as cluster:
            bench = Bench(cluster, variants, work, args.profile)
            bench.warm_up()
            for number in range(1, args.rounds + 1):
                bench.round(number)
            print_summary(bench.summary(), list(variants), bench.tasks)
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
