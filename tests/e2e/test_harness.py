"""The local cluster harness cleans up after itself: after SIGINT (a Ctrl-C) to ``python -m kube up`` with a pod
running, no process, network namespace, cgroup or mount of that cluster is left on the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from e2e.support import REPO, Cluster
from infra._util import wait_until
from infra.faultproxy import FaultProxy
from kube import cluster as kube_cluster
from kube.cluster import INOTIFY_LIMITS, ensure_inotify_limits


def _leftovers(netns: str, directory: Path) -> list[str]:
    found = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    if netns in listed.split():
        found.append(f"network namespace {netns}")
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        found += [str(p) for p in hierarchy.glob(f"prefetch-{netns}-*")]
    found += [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(directory) in line]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in cmdline:
                found.append(f"process {entry.name}: {cmdline[:200]}")
    return found


def test_sigint_stops_everything_and_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    directory = tmp_path / "kube"
    directory.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.Popen([sys.executable, "-m", "kube", "up", "--dir", str(directory), "--nodes", "1", "--name",
                             "reap", "--registry-upstream", cluster.info["registry"]["upstream"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line == "ready", line + proc.stdout.read().decode()[-3000:]
        info = json.loads((directory / "cluster.json").read_text())
        small = Cluster(directory)
        small.kubectl("run", "sleeper", "--image=registry.test:5000/pause:3.10", "--restart=Never")
        assert wait_until(lambda: any(p.get("status", {}).get("phase") == "Running"
                                      for p in small.pods("default")), 120, 0.5), small.pods("default")
        os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C reaches the whole foreground process group
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:  # a failed assertion above: let the harness stop its cluster before giving up
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert _leftovers(info["netns"], directory) == []


def test_inotify_limits_are_raised_never_lowered(tmp_path: Path) -> None:
    (tmp_path / "max_user_instances").write_text("128\n")
    (tmp_path / "max_user_watches").write_text("9999999\n")
    ensure_inotify_limits(tmp_path)
    assert int((tmp_path / "max_user_instances").read_text()) == INOTIFY_LIMITS["max_user_instances"]
    assert (tmp_path / "max_user_watches").read_text() == "9999999\n"


def stand_in_node(monkeypatch: pytest.MonkeyPatch, killed: list[str]) -> kube_cluster.KubeNode:
    """A KubeNode with nothing started but a made-up mount namespace; its kills are recorded in ``killed``."""
    monkeypatch.setattr(kube_cluster, "kill_mount_namespace", killed.append)
    node = object.__new__(kube_cluster.KubeNode)
    node.name, node.kubelet, node.runtime, node.holder = "test-node-0", None, None, None
    node.mount_ns, node.cgroup_root = "mnt:[4026532999]", "/prefetch-test-0"
    node.kubelet_root = Path("/nonexistent/kubelet")
    node.proxy = typing.cast(FaultProxy, types.SimpleNamespace(stop=lambda: None))
    return node


def test_a_node_stopped_twice_kills_its_mount_namespace_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel gives a freed namespace's inode number to the next new one at once: a second stop() of a node
    (a test stopped it, then the cluster's teardown) must not kill by the old number, which may be another
    cluster's node by then (it was: that run's kubelet went NotReady in the middle of its tests)."""
    killed: list[str] = []
    monkeypatch.setattr(kube_cluster, "remove_cgroups", lambda _root: None)
    node = stand_in_node(monkeypatch, killed)
    node.stop()
    node.stop()
    assert killed == ["mnt:[4026532999]"]


def test_a_failing_stop_step_does_not_skip_the_namespace_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    def vanished(_root: str) -> None:
        raise FileNotFoundError(2, "No such file or directory")  # a cgroup removed under rglob

    killed: list[str] = []
    monkeypatch.setattr(kube_cluster, "remove_cgroups", vanished)
    node = stand_in_node(monkeypatch, killed)
    node.stop()
    assert killed == ["mnt:[4026532999]"]


def test_cgroup_dirs_lists_the_tree_and_skips_what_vanished(tmp_path: Path) -> None:
    (tmp_path / "kubepods" / "burstable" / "pod1").mkdir(parents=True)
    (tmp_path / "kubepods" / "besteffort").mkdir()
    found = {str(p.relative_to(tmp_path)) for p in kube_cluster._cgroup_dirs(tmp_path)}
    assert found == {"kubepods", "kubepods/burstable", "kubepods/burstable/pod1", "kubepods/besteffort"}
    assert kube_cluster._cgroup_dirs(tmp_path / "gone") == []  # removed before the walk: nothing, no error
