"""Simulated nodes: a real containerd behind a per-node fault proxy, a host-root directory, and the Node object.

The host root is where hostPath volumes resolve. It holds the CRI socket at every path a flavor of the product
mounts (containerd, CRI-O, k3s/rke2, microk8s) as hard links of the node's containerd socket (same inode, so a
connect() through any of them reaches containerd even from a mount namespace where the real socket directory is not
visible), ``var/run`` as a relative symlink to ``run`` (as on a real host), and the GKE credential-provider dirs.
A hard link is impossible across file systems; then a symlink is used (documented limit).
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from infra.containerd import ContainerdNode
from infra.faultproxy import FaultProxy
from simcluster import podutil
from simcluster.client import ApiClient, ApiError

Obj = dict[str, Any]
TEST_REGISTRY = "registry.test:5000"

# host path (relative to the host root) → socket file name in it
SOCKET_PATHS = (
    "run/containerd/containerd.sock",
    "run/crio/crio.sock",
    "run/k3s/containerd/containerd.sock",
    "var/snap/microk8s/common/run/containerd.sock",
)
HOST_DIRS = ("etc/srv/kubernetes", "home/kubernetes/bin", "var/lib/kubelet")
CONTROL_PLANE_TAINT: Obj = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


@dataclass
class NodeConfig:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)


def default_node_configs(cluster_name: str, count: int) -> list[NodeConfig]:
    """``<name>-node-1..N``; node 1 is a control-plane node with the NoSchedule taint (so tolerations matter)."""
    configs = []
    for index in range(1, count + 1):
        config = NodeConfig(f"{cluster_name}-node-{index}")
        if index == 1 and count > 1:
            config.labels["node-role.kubernetes.io/control-plane"] = ""
            config.taints.append(dict(CONTROL_PLANE_TAINT))
        else:
            config.labels["node-role.kubernetes.io/worker"] = ""
        configs.append(config)
    return configs


def node_object(config: NodeConfig) -> Obj:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    labels = {"kubernetes.io/hostname": config.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch, **config.labels}
    spec: Obj = {"taints": [dict(t) for t in config.taints]} if config.taints else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": config.name, "labels": labels}, "spec": spec}


def node_status(config: NodeConfig) -> Obj:
    now = podutil.now_iso()
    cpu = str(os.cpu_count() or 2)

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    resources = {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
    return {
        "capacity": resources, "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status (simcluster)"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": config.name}],
        "nodeInfo": {"architecture": node_object(config)["metadata"]["labels"]["kubernetes.io/arch"],
                     "containerRuntimeVersion": "containerd://1.6", "kubeletVersion": "v1.31.0-simcluster",
                     "kubeProxyVersion": "", "operatingSystem": "linux", "osImage": "simcluster",
                     "kernelVersion": platform.release(), "bootID": "", "machineID": "", "systemUUID": ""},
    }


class SimNode:
    """One node: ``start()`` brings up its proxy and containerd and lays out its host root."""

    def __init__(self, workdir: Path, config: NodeConfig, registry_upstream: str) -> None:
        self.config = config
        self.dir = workdir / "nodes" / config.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_root = self.dir / "root"
        self.proxy = FaultProxy(upstream=registry_upstream)
        self.containerd: Optional[ContainerdNode] = None

    @property
    def name(self) -> str:
        return self.config.name

    def start(self) -> SimNode:
        self.proxy.start()
        self.containerd = ContainerdNode(self.dir, registries={TEST_REGISTRY: self.proxy.host}).start()
        self.layout_host_root()
        return self

    def stop(self) -> None:
        if self.containerd is not None:
            self.containerd.close()
            self.containerd = None
        self.proxy.stop()

    def layout_host_root(self) -> None:
        """(Re)creates the host-root tree; also after a containerd restart (a new socket inode)."""
        root = self.host_root
        (root / "run").mkdir(parents=True, exist_ok=True)
        (root / "var").mkdir(parents=True, exist_ok=True)
        if not (root / "var" / "run").is_symlink():
            (root / "var" / "run").symlink_to("../run")
        for directory in HOST_DIRS:
            (root / directory).mkdir(parents=True, exist_ok=True)
        assert self.containerd is not None
        for relative in SOCKET_PATHS:
            link_socket(self.containerd.socket, root / relative)

    def to_json(self) -> Obj:
        assert self.containerd is not None
        return {"name": self.name, "socket": str(self.containerd.socket), "address": self.containerd.address,
                "host_root": str(self.host_root), "proxy": self.proxy.host,
                "proxy_control_url": self.proxy.control_url, "containerd_dir": str(self.containerd.workdir),
                "labels": node_object(self.config)["metadata"]["labels"], "taints": self.config.taints,
                "pods_dir": str(self.dir / "pods")}


def link_socket(socket_path: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if link.exists() and not link.is_symlink() and link.stat().st_ino == socket_path.stat().st_ino:
            return
        link.unlink()
    try:
        os.link(socket_path, link)
    except OSError:  # another file system: a symlink (does not resolve where the socket dir is overlaid)
        link.symlink_to(socket_path)


def register_node(client: ApiClient, config: NodeConfig) -> Obj:
    """Creates (or replaces) the Node object and writes its status once; there are no heartbeats."""
    obj = node_object(config)
    try:
        client.create("Node", obj)
    except ApiError as exc:
        if exc.status != 409:
            raise
        client.merge_patch("Node", config.name, {"metadata": {"labels": obj["metadata"]["labels"]},
                                                 "spec": {"taints": obj["spec"].get("taints")}})
    result: Obj = client.merge_patch("Node", config.name, {"status": node_status(config)}, subresource="status")
    return result
