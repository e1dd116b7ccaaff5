"""``KubeCluster``: a real Kubernetes cluster on this machine, for the end-to-end tests and ``make demo``.

    with KubeCluster(tmp_path / "kube", nodes=3) as cluster:
        cluster.kubeconfig, cluster.info["nodes"][0]["proxy_control_url"]

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and, per node, a real containerd and a real kubelet,
all built from their Go modules by tests/kube/build.sh (cached). Layout (docs/DESIGN.md "The local cluster"):

- One network namespace per cluster (``ip netns add``), made and deleted here. Its loopback carries the API server's
  address, the ``kubernetes`` Service's ClusterIP, one address per node and the registry mirror's address. Each
  node's pods get a real bridge network (Debian's CNI plugins, ``bridge`` + ``host-local``) in that namespace.
- The API server listens on 443 in the namespace, at ``API_IP`` and at the ClusterIP of the ``kubernetes`` Service,
  so in-cluster clients (the agent's node-label PATCH) reach it without kube-proxy.
- Each node runs the cluster's ``runtime`` (``KubeCluster(runtime=...)`` or ``PREFETCH_E2E_RUNTIME``; default
  Debian's containerd 1.6, or ``containerd2``, ``crio`` as tests/runtimes/build.sh builds them) under its kubelet.
- Each node has its own mount namespace (a holder process): a private /run (the runtime's socket where a real
  node has it: containerd's at /run/containerd/containerd.sock, hard-linked at /run/crio/crio.sock and
  /run/k3s/containerd/containerd.sock for the other flavors; CRI-O's at /run/crio/crio.sock only) and a private
  /var/log, so hostPath volumes resolve as on a real node and nothing is written to the host's /run or /var/log.
- The registry and the per-node fault proxies stay on the host's loopback; ``kube.netns``'s forwarder joins them,
  and makes the API server reachable from the host at ``127.0.0.1:<port>``.

Everything started is stopped by ``stop()`` (also after a failed start), cgroups and the namespace are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, cast

import yaml

from infra._util import ensure_dir, free_port, log_tail, stop_process, wait_until
from infra.faultproxy import FaultProxy
from infra.images import build_files_image, push_image
from infra.registry import Registry
from infra.runtime import RUNTIMES, KubeletRuntime, RuntimeNode, built_binaries, make_node
from kube import netns
from kube.client import ApiClient, ApiError
from kube.pki import Pki, kubeconfig

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
TEST_REGISTRY = "registry.test:5000"
AGENT_REPOSITORY = "stackrox/prefetch-agent"
AGENT_TAG = "e2e"
AGENT_IMAGE = f"{TEST_REGISTRY}/{AGENT_REPOSITORY}"
AGENT_ARCHIVE = REPO / "build" / "image" / "prefetch-agent.oci.tar"
PAUSE_IMAGE = f"{TEST_REGISTRY}/pause:3.10"

API_IP = "10.250.0.1"       # the API server (advertised address)
MIRROR_IP = "10.250.0.2"    # forwarders to the nodes' registry fault proxies, one port per node
DNS_IP = "10.250.0.3"       # CoreDNS: the kubelets' clusterDNS (outside the Service range: no kube-dns Service)
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"    # ClusterIP of default/kubernetes: the first address of SERVICE_CIDR
API_PORT = 443
MIRROR_BASE_PORT = 5001
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
RUNTIME_ENV = "PREFETCH_E2E_RUNTIME"  # the nodes' runtime when KubeCluster is not given one
CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
# Where each runtime listens on a node (the flavors' paths, plugins/module_utils/_settings.py), and where else its
# socket is hard-linked: a containerd node also serves the crio/ocp and k3s flavors' paths (the default cluster runs
# every flavor's test); a CRI-O node has its own socket only, as a real one.
NODE_SOCKETS = {"containerd": CONTAINERD_SOCKET, "containerd2": CONTAINERD_SOCKET,
                "crio": Path("/run/crio/crio.sock")}
SOCKET_LINKS = {"containerd": ("run/crio/crio.sock", "run/k3s/containerd/containerd.sock"),
                "containerd2": ("run/crio/crio.sock", "run/k3s/containerd/containerd.sock"), "crio": ()}


def node_ip(index: int) -> str:
    return f"10.250.0.{10 + index}"


def pod_subnet(index: int) -> str:
    return f"10.251.{index}.0/24"


def build_binaries() -> Path:
    """tests/kube/build.sh: the cached bin dir (the first run builds, and says so on stderr)."""
    done = subprocess.run(["bash", str(REPO / "tests" / "kube" / "build.sh")], stdout=subprocess.PIPE, text=True,
                          check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"tests/kube/build.sh failed with exit code {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])


def build_pause_binary(out: Path) -> Path:
    """The static ``pause`` of Kubernetes' own build/pause/linux/pause.c (from the module cache), by gcc."""
    if out.exists():
        return out
    info = json.loads(subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kube_version()}"],
                                     capture_output=True, text=True, check=True).stdout)
    source = Path(info["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-Os", "-static", "-o", str(out), str(source)], check=True, capture_output=True)
    return out


# Each kubelet takes several inotify instances (cAdvisor, the certificate and config watchers), containerd some more;
# the kernel's default of 128 per user is used up by about five nodes (two clusters at once) and the next kubelet
# exits with "Failed to start cAdvisor" err="inotify_init: too many open files". kind documents the same limits.
INOTIFY_LIMITS = {"max_user_instances": 8192, "max_user_watches": 524288}


def ensure_inotify_limits(sysctl_dir: Path = Path("/proc/sys/fs/inotify")) -> None:
    """Raises the inotify limits to ``INOTIFY_LIMITS`` where they are lower (never lowers one); a limit that
    cannot be raised fails the start with the reason instead of a kubelet dying later."""
    for name, wanted in INOTIFY_LIMITS.items():
        path = sysctl_dir / name
        current = int(path.read_text())
        if current >= wanted:
            continue
        try:
            path.write_text(f"{wanted}\n")
        except OSError as e:
            raise RuntimeError(f"fs.inotify.{name} is {current}; the kubelets need {wanted} and it cannot be "
                               f"raised here ({e}): run `sysctl -w fs.inotify.{name}={wanted}` as root") from e
        log.info("raised fs.inotify.%s from %d to %d (the kubelets need it)", name, current, wanted)


def kube_version() -> str:
    return os.environ.get("KUBE_VERSION", "v1.34.4")


def node_runtime(given: Optional[str]) -> str:
    """The nodes' runtime: ``given``, else $PREFETCH_E2E_RUNTIME, else Debian's containerd 1.6."""
    runtime = given or os.environ.get(RUNTIME_ENV) or "containerd"
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown node runtime {runtime!r} (from {'the argument' if given else RUNTIME_ENV}); "
                         f"one of {', '.join(RUNTIMES)}")
    return runtime


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


class KubeNode:
    """One node: a mount-namespace holder, the container runtime in it, a kubelet in it, and a registry fault
    proxy."""

    def __init__(self, cluster: KubeCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"{cluster.name}-node-{index}"
        self.ip = node_ip(index)
        self.dir = ensure_dir(cluster.dir / "nodes" / self.name)
        self.proxy = FaultProxy(upstream=cluster.registry_host)
        self.mirror_port = MIRROR_BASE_PORT + index
        self.holder: Optional[subprocess.Popen[bytes]] = None
        self.runtime: Optional[RuntimeNode] = None
        self.socket_path = NODE_SOCKETS[cluster.runtime]
        self.kubelet: Optional[Proc] = None
        self.cgroup_root = f"/prefetch-{cluster.netns_name}-{index}"
        # The kubelet's root dir holds unix sockets (pod-resources, plugin registration): a deep test directory
        # would pass the 108-byte socket path limit, so it lives in a short temp dir, removed at stop().
        self.kubelet_root = Path(tempfile.mkdtemp(prefix=f"pfk-{self.name}-"))
        self.token = ""
        self.mount_ns = ""

    @property
    def control_plane(self) -> bool:
        return self.index == 1 and len(self.cluster.nodes) > 1

    @property
    def access_root(self) -> Path:
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root")

    def enter(self) -> list[str]:
        """The prefix that runs a command in this node's network and mount namespaces."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net"]

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start_holder(self) -> None:
        script = ("set -e; mount -t tmpfs -o mode=755 tmpfs /run; mount -t tmpfs -o mode=755 tmpfs /var/log; "
                  "mkdir -p /run/containerd /run/crio /run/k3s/containerd; echo ready; exec sleep infinity")
        self.holder = subprocess.Popen(
            [*self.cluster.in_netns(), "unshare", "--mount", "--propagation", "slave", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"{self.name}: the mount namespace holder failed: {line}")
        self.mount_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")

    def write_cni_config(self) -> Path:
        conf_dir = ensure_dir(self.dir / "cni-conf")
        conflist = {"cniVersion": "0.4.0", "name": f"pods-{self.index}", "plugins": [{
            "type": "bridge", "bridge": f"cni{self.index}", "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_subnet(self.index)}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ensure_dir(self.dir / "cni-ipam"))}}]}
        (conf_dir / "10-bridge.conflist").write_text(json.dumps(conflist, indent=2))
        return conf_dir

    def start_runtime(self) -> None:
        kubelet = KubeletRuntime(launcher=tuple(self.enter()), listen_socket=self.socket_path,
                                 access_root=self.access_root, sandbox_image=PAUSE_IMAGE,
                                 cni_conf_dir=self.write_cni_config())
        self.runtime = make_node(self.cluster.runtime, self.dir, kubelet=kubelet,
                                 registries={TEST_REGISTRY: f"{MIRROR_IP}:{self.mirror_port}"})
        self.runtime.start()
        self.link_sockets()

    def link_sockets(self) -> None:
        """The other flavors' socket paths as hard links of the runtime's (redone after a runtime restart)."""
        assert self.runtime is not None
        for relative in SOCKET_LINKS[self.cluster.runtime]:
            link = self.access_root / relative
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(self.runtime.socket, link)

    def restart_runtime(self) -> None:
        assert self.runtime is not None
        self.runtime.restart()
        self.link_sockets()

    def make_cgroups(self) -> None:
        """The kubelet's cgroupRoot in every v1 hierarchy (cpuset needs its parent's cpus and mems copied)."""
        for hierarchy in cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for item in ("cpuset.cpus", "cpuset.mems"):
                    (path / item).write_text((hierarchy / item).read_text())

    def write_kubelet_config(self) -> Path:
        pki = self.cluster.pki
        assert pki is not None
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.ip, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": self.ip, "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki.ca_path)}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root, "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{self.socket_path}",
            "failSwapOn": False, "clusterDomain": "cluster.local", "clusterDNS": [DNS_IP],
            # Pods get the cluster's DNS only, not this machine's resolvers and search domains.
            "resolvConf": str(self.cluster.empty_resolv_conf),
            "podLogsDir": str(ensure_dir(self.dir / "pod-logs")),
            "volumePluginDir": str(ensure_dir(self.dir / "volume-plugins")),
            # Never collect the images a test prefetched, nor evict pods of a machine with a full-ish disk.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi"},
            "nodeStatusUpdateFrequency": "5s", "syncFrequency": "10s",
            "registerWithTaints": ([{"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}]
                                   if self.control_plane else []),
            "serializeImagePulls": False,
        }
        path = self.dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start_kubelet(self) -> None:
        if self.kubelet is not None and self.kubelet.popen.poll() is None:
            return
        cluster = self.cluster
        assert cluster.pki is not None and cluster.bin_dir is not None
        config = self.write_kubelet_config()
        kubeconfig_path = kubeconfig(self.dir / "kubelet.kubeconfig", cluster.inside_url, cluster.pki.ca_path,
                                     f"system:node:{self.name}", token=self.token)
        argv = [*self.enter(), str(cluster.bin_dir / "kubelet"), f"--config={config}",
                f"--kubeconfig={kubeconfig_path}", f"--root-dir={self.kubelet_root}",
                f"--cert-dir={ensure_dir(self.dir / 'kubelet-pki')}", f"--hostname-override={self.name}",
                f"--node-ip={self.ip}", "--v=2"]
        self.kubelet = cluster.spawn(f"kubelet-{self.index}", argv, self.dir / "kubelet.log")

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            stop_process(self.kubelet.popen, term_timeout_s=10)
            self.kubelet = None

    def stop(self) -> None:
        """Kubelet, then the pods' processes (by cgroup), the runtime, whatever else runs in the node's mount
        namespace (runc shims, conmon), the holder; then the cgroups. The node's mounts go with its namespace.

        Every step runs even when one before it failed (a cgroup vanishing under ``rglob``, a runtime that does not
        close): a skipped namespace kill would leave the node's shims running after its cluster."""
        steps: list[Callable[[], None]] = [
            self.stop_kubelet, lambda: remove_cgroups(self.cgroup_root), self._stop_runtime, self._kill_namespace,
            self._stop_holder, self.proxy.stop, lambda: remove_cgroups(self.cgroup_root),
            lambda: shutil.rmtree(self.kubelet_root, ignore_errors=True),
        ]
        for step in steps:
            try:
                step()
            except Exception:  # the next steps still run; the log says what failed
                log.exception("%s: a step of stopping the node failed", self.name)

    def _stop_runtime(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.close()

    def _kill_namespace(self) -> None:
        # Never by this name again: the kernel hands a freed namespace's inode number to the next new namespace at
        # once, so a second stop() (a test stops a node, the cluster's teardown stops it again) would kill whatever
        # node of another cluster got it (it did: another run's kubelet went NotReady).
        mount_ns, self.mount_ns = self.mount_ns, ""
        if mount_ns:
            kill_mount_namespace(mount_ns)

    def _stop_holder(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            stop_process(holder, term_timeout_s=5)

    def to_json(self) -> dict[str, Any]:
        assert self.runtime is not None
        return {"name": self.name, "ip": self.ip, "runtime": self.cluster.runtime, "socket": str(self.runtime.socket),
                "node_socket": str(self.socket_path), "address": self.runtime.address, "proxy": self.proxy.host,
                "proxy_control_url": self.proxy.control_url, "runtime_dir": str(self.runtime.workdir),
                "kubelet_log": str(self.dir / "kubelet.log"), "control_plane": self.control_plane,
                "holder_pid": self.holder.pid if self.holder else None}


def kill_mount_namespace(mount_ns: str) -> None:
    """SIGKILL to every process in the mount namespace ``mount_ns`` (as ``readlink /proc/PID/ns/mnt`` gives it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "mnt") == mount_ns:
                os.kill(int(entry.name), 9)


def cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies: the named ``systemd`` one too (the kubelet checks it), not cgroup2's ``unified``."""
    root = Path("/sys/fs/cgroup")
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink() and
            p.name != "unified" and (p / "cgroup.procs").exists()]


def _cgroup_dirs(top: Path) -> list[Path]:
    """Every directory under ``top``. os.walk, not Path.rglob: the kubelet and the runtime remove cgroups while this
    walks, and rglob raises FileNotFoundError for a directory gone between listing and entering it (seen in a bench
    teardown, which then left the cgroup trees behind); os.walk skips it."""
    return [Path(root) / name for root, names, _files in os.walk(top) for name in names]


def remove_cgroups(cgroup_root: str) -> None:
    """Removes the cgroup tree bottom-up, killing what is still in it first (a kubelet that died mid-pod); also
    from cgroup2's ``unified`` hierarchy, where the kubelet makes its tree too."""
    for hierarchy in [*cgroup_hierarchies(), Path("/sys/fs/cgroup/unified")]:
        top = hierarchy / cgroup_root.lstrip("/")
        if not top.exists():
            continue
        for _ in range(50):
            dirs = sorted(_cgroup_dirs(top), key=lambda p: len(p.parts), reverse=True)
            for path in [*dirs, top]:
                with contextlib.suppress(OSError):
                    for pid in (path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), 9)
                with contextlib.suppress(OSError):
                    path.rmdir()
            if not top.exists():
                break
            time.sleep(0.1)


class KubeCluster:
    def __init__(self, directory: Path | str, nodes: int = 3, name: str = "kube",
                 registry_upstream: Optional[str] = None, spare_nodes: int = 0, runtime: Optional[str] = None) -> None:
        self.runtime = node_runtime(runtime)
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.node_count = nodes
        # Nodes that add_node() can start later: their address, token and registry forward exist from the start
        # (the API server reads its token file once, the forwarder its rules once).
        self.spare_count = spare_nodes
        self.spares: list[KubeNode] = []
        self.netns_name = f"pf{os.getpid()}{name}"[:15]
        self.netns_path = f"/run/netns/{self.netns_name}"
        self.registry_upstream = registry_upstream
        self.registry: Optional[Registry] = None
        self.registry_host = registry_upstream or ""
        self.pki: Optional[Pki] = None
        self.bin_dir: Optional[Path] = None
        self.procs: list[Proc] = []
        self.nodes: list[KubeNode] = []
        self.api_port = 0
        self.tokens: dict[str, str] = {}
        self.forwarder: Optional[Proc] = None
        self.netns_made = False
        self.info: dict[str, Any] = {}
        self.kubeconfig = self.dir / "kubeconfig"
        self.kubeconfig_viewer = self.dir / "kubeconfig-viewer"
        self.cluster_json = self.dir / "cluster.json"
        self.audit_log = self.dir / "apiserver" / "audit.log"
        self.client: Optional[ApiClient] = None
        self.empty_resolv_conf = self.dir / "resolv.conf"
        self.empty_resolv_conf.write_text("")

    @property
    def inside_url(self) -> str:
        return f"https://{API_IP}:{API_PORT}"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def in_netns(self) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}"]

    def spawn(self, name: str, argv: list[str], log_path: Path) -> Proc:
        with log_path.open("ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches the harness only, which stops its children in
            # order (kubelets before their containerd, the control plane last).
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> KubeCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        started = time.monotonic()
        self.bin_dir = build_binaries()
        if self.runtime != "containerd":  # built once, cached; a cold build takes minutes and says so
            built_binaries(self.runtime)
        ensure_inotify_limits()
        total = self.node_count + self.spare_count
        addresses = [API_IP, MIRROR_IP, DNS_IP, SERVICE_IP, *(node_ip(i) for i in range(1, total + 1))]
        netns.delete(self.netns_name)  # a leftover of a killed run with the same pid
        netns.create(self.netns_name, addresses)
        self.netns_made = True
        self.pki = Pki(self.dir / "pki")
        self._start_registry()
        self.nodes = [KubeNode(self, i) for i in range(1, self.node_count + 1)]
        self.spares = [KubeNode(self, i) for i in range(self.node_count + 1, total + 1)]
        for node in [*self.nodes, *self.spares]:
            node.proxy.start()
        self._start_forwarder()
        self._start_control_plane()
        for node in self.nodes:
            self._start_node(node)
        self._start_cluster_network()
        self._wait_nodes_ready(self.nodes)
        self._label_nodes(self.nodes)
        self._wait_default_service_account()
        self._write_info()
        log.info("cluster %s (%s nodes) ready in %.0fs", self.name, self.runtime, time.monotonic() - started)

    @staticmethod
    def _start_node(node: KubeNode) -> None:
        node.start_holder()
        node.make_cgroups()
        node.start_runtime()
        node.start_kubelet()

    def add_node(self) -> KubeNode:
        """Starts the next spare node (a new machine joining the cluster); returns it once it is Ready."""
        if not self.spares:
            raise RuntimeError("no spare node left: start the cluster with spare_nodes=N")
        node = self.spares.pop(0)
        self.nodes.append(node)
        self._start_node(node)
        self._wait_nodes_ready([node])
        self._label_nodes([node])
        self._write_info()
        return node

    def restart_apiserver(self, down_s: float = 0.0) -> float:
        """Stops kube-apiserver (SIGTERM, as a rolling restart does), waits ``down_s`` seconds, starts it again with
        the same command line and waits until it is ready; returns how many seconds it was gone. Everything else
        (etcd, the other components, the kubelets) keeps running and reconnects by itself."""
        index = next(i for i, proc in enumerate(self.procs) if proc.name == "kube-apiserver")
        old = self.procs[index]
        stopped = time.monotonic()
        stop_process(old.popen, term_timeout_s=30)
        time.sleep(down_s)
        argv = cast("list[str]", old.popen.args)  # spawn() was given a list
        self.procs[index] = self.spawn(old.name, list(argv), old.log_path)
        self.procs.pop()  # spawn() appended it; it keeps its place in the stop order
        self._wait_api_ready()
        return time.monotonic() - stopped

    def _start_registry(self) -> None:
        if not self.registry_upstream:
            self.registry = Registry(self.dir, name="registry").start()
            self.registry_host = self.registry.host
        pause = build_pause_binary(self.bin_dir.parent / "pause" if self.bin_dir else self.dir / "pause")
        image = build_files_image("pause", "3.10", {"/pause": (pause.read_bytes(), 0o755)}, ["/pause"])
        push_image(self.registry_host, image)
        push_agent_image(self.registry_host)

    def _start_forwarder(self) -> None:
        self.api_port = free_port()
        forwards = [f"host,127.0.0.1:{self.api_port}={self.netns_path},{API_IP}:{API_PORT}"]
        forwards += [f"{self.netns_path},{MIRROR_IP}:{n.mirror_port}=host,{n.proxy.host}"
                     for n in [*self.nodes, *self.spares]]
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        log_path = self.dir / "forwarder.log"
        out = log_path.open("ab")
        popen = subprocess.Popen([sys.executable, "-m", "kube.netns", *forwards], stdout=subprocess.PIPE,
                                 stderr=out, stdin=subprocess.DEVNULL, env=env)
        out.close()
        assert popen.stdout is not None
        self.forwarder = Proc("forwarder", popen, log_path)
        self.procs.append(self.forwarder)
        if popen.stdout.readline().decode().strip() != "forwarding":
            raise RuntimeError(f"the forwarder failed: {log_tail(log_path)}")

    def _write_tokens(self) -> Path:
        # user → (token, groups); components use tokens as kubeadm's use certificates: the same users and groups.
        users = {"admin": ("kubernetes-admin", "system:masters"), "viewer": ("viewer", ""),
                 "controller-manager": ("system:kube-controller-manager", ""),
                 "scheduler": ("system:kube-scheduler", ""), "proxy": ("system:kube-proxy", ""),
                 "coredns": ("system:coredns", "")}
        users.update({n.name: (f"system:node:{n.name}", "system:nodes") for n in [*self.nodes, *self.spares]})
        lines = []
        for key, (user, groups) in users.items():
            token = os.urandom(24).hex()
            self.tokens[key] = token
            lines.append(f'{token},{user},{user},"{groups}"' if groups else f"{token},{user},{user}")
        for node in [*self.nodes, *self.spares]:
            node.token = self.tokens[node.name]
        path = self.dir / "apiserver" / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def _start_control_plane(self) -> None:
        assert self.pki is not None and self.bin_dir is not None
        pki, bins = self.pki, self.bin_dir
        api_dir = ensure_dir(self.dir / "apiserver")
        etcd_dir = ensure_dir(self.dir / "etcd")
        self.spawn("etcd", [*self.in_netns(), str(bins / "etcd"), "--name=local", f"--data-dir={etcd_dir / 'data'}",
                            "--listen-client-urls=http://127.0.0.1:2379",
                            "--advertise-client-urls=http://127.0.0.1:2379",
                            "--listen-peer-urls=http://127.0.0.1:2380",
                            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                            "--initial-cluster=local=http://127.0.0.1:2380", "--unsafe-no-fsync=true",
                            "--log-level=warn"], etcd_dir / "etcd.log")
        serving = pki.issue("apiserver", "kube-apiserver", server=True, ips=("127.0.0.1", API_IP, SERVICE_IP),
                            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                 "kubernetes.default.svc.cluster.local"))
        kubelet_client = pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                   ("system:masters",))
        sa_key, sa_pub = pki.service_account_keys()
        tokens = self._write_tokens()
        audit_policy = api_dir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata"}]}))
        self.spawn("kube-apiserver", [
            *self.in_netns(), str(bins / "kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:2379", "--bind-address=0.0.0.0", f"--secure-port={API_PORT}",
            f"--advertise-address={API_IP}", f"--tls-cert-file={serving[0]}", f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={pki.ca_path}", f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={kubelet_client[0]}", f"--kubelet-client-key={kubelet_client[1]}",
            "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=0",
            "--audit-log-mode=blocking", "--v=1",
        ], api_dir / "kube-apiserver.log")
        kubeconfig(self.kubeconfig, self.api_url, pki.ca_path, "admin", token=self.tokens["admin"])
        kubeconfig(self.kubeconfig_viewer, self.api_url, pki.ca_path, "viewer", token=self.tokens["viewer"])
        self.client = ApiClient(self.api_url, self.tokens["admin"], str(pki.ca_path), "kube-harness")
        self._wait_api_ready()
        self._bind_viewer()
        for component, port, extra in (
            ("kube-controller-manager", 10257, [
                f"--service-account-private-key-file={sa_key}", f"--root-ca-file={pki.ca_path}",
                f"--cluster-signing-cert-file={pki.ca_path}", f"--cluster-signing-key-file={pki.ca_key_path}",
                "--use-service-account-credentials=true", "--node-monitor-grace-period=20s"]),
            ("kube-scheduler", 10259, []),
        ):
            short = component.removeprefix("kube-")
            config = kubeconfig(api_dir / f"{short}.kubeconfig", self.inside_url, pki.ca_path, short,
                                token=self.tokens[short])
            self.spawn(component, [*self.in_netns(), str(bins / component), f"--kubeconfig={config}",
                                   f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
                                   "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
                                   "--v=1", *extra], api_dir / f"{component}.log")

    def _start_cluster_network(self) -> None:
        """kube-proxy (iptables mode) gives Services their ClusterIPs, CoreDNS their names.

        One of each serves every node: the nodes share one network namespace, as pods on one node share its
        kernel. masqueradeAll: a pod that reaches a Service backed by a pod on its own bridge gets the answer back
        through the namespace's conntrack (this kernel has no br_netfilter for bridged replies).
        """
        assert self.pki is not None and self.bin_dir is not None and self.client is not None
        api_dir = self.dir / "apiserver"
        proxy_kubeconfig = kubeconfig(api_dir / "kube-proxy.kubeconfig", self.inside_url, self.pki.ca_path,
                                      "kube-proxy", token=self.tokens["proxy"])
        proxy_config = api_dir / "kube-proxy.yaml"
        proxy_config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(proxy_kubeconfig)}, "mode": "iptables",
            "iptables": {"masqueradeAll": True}, "conntrack": {"maxPerCore": 0},
            "clusterCIDR": "10.251.0.0/16", "hostnameOverride": self.nodes[0].name,
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256"}))
        self.spawn("kube-proxy", [*self.in_netns(), str(self.bin_dir / "kube-proxy"), f"--config={proxy_config}",
                                  "--v=1"], api_dir / "kube-proxy.log")
        self._grant_coredns()
        dns_kubeconfig = kubeconfig(api_dir / "coredns.kubeconfig", self.inside_url, self.pki.ca_path, "coredns",
                                    token=self.tokens["coredns"])
        corefile = api_dir / "Corefile"
        corefile.write_text(f""".:53 {{
    errors
    health {DNS_IP}:18080
    ready {DNS_IP}:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {dns_kubeconfig} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        self.spawn("coredns", [*self.in_netns(), str(self.bin_dir / "coredns"), "-conf", str(corefile)],
                   api_dir / "coredns.log")

    def _grant_coredns(self) -> None:
        """What kubeadm grants CoreDNS's ServiceAccount (ClusterRole system:coredns), to its user here."""
        assert self.client is not None
        rules = [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                  "verbs": ["list", "watch"]},
                 {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
        self._ensure("/apis/rbac.authorization.k8s.io/v1/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"}, "rules": rules})
        self._ensure("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}]})

    def _ensure(self, collection: str, obj: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            self.client.request("POST", collection, obj)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _wait_api_ready(self) -> None:
        assert self.client is not None
        client = self.client

        def ready() -> bool:
            self._check_alive()
            try:
                client.request("GET", "/readyz", timeout=5)
                return True
            except (ApiError, OSError):
                return False

        if not wait_until(ready, 180, interval_s=0.5):
            tail = log_tail(self.dir / "apiserver" / "kube-apiserver.log")
            raise RuntimeError(f"kube-apiserver not ready in 180s:\n{tail}")

    def _bind_viewer(self) -> None:
        self._ensure("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "prefetch-tests-viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer"}]})

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None and not proc.name.startswith("kubelet"):
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{log_tail(proc.log_path)}")

    def _wait_nodes_ready(self, nodes: list[KubeNode], timeout_s: float = 180) -> None:
        assert self.client is not None
        client = self.client
        wanted = {n.name for n in nodes}

        def ready() -> bool:
            self._check_alive()
            for node in nodes:
                if node.kubelet is not None and node.kubelet.popen.poll() is not None:
                    raise RuntimeError(f"kubelet of {node.name} exited:\n{log_tail(node.dir / 'kubelet.log')}")
            items = client.list("Node")["items"]
            return wanted <= {n["metadata"]["name"] for n in items if node_is_ready(n)}

        if not wait_until(ready, timeout_s, interval_s=1):
            tails = "\n".join(f"--- {n.name}\n{log_tail(n.dir / 'kubelet.log', 1500)}" for n in nodes)
            raise RuntimeError(f"nodes not Ready within {timeout_s:.0f}s:\n{tails}")

    def _wait_default_service_account(self) -> None:
        """Pods can be created once the controller-manager made the namespace's ``default`` ServiceAccount (the
        ServiceAccount admission refuses them before); ready means ready for ``kubectl run``."""
        assert self.client is not None
        client = self.client
        if not wait_until(lambda: client.get_or_none("ServiceAccount", "default", "default") is not None, 120, 0.5):
            tail = log_tail(self.dir / "apiserver" / "kube-controller-manager.log")
            raise RuntimeError(f"no default ServiceAccount after 120s:\n{tail}")

    def _label_nodes(self, nodes: list[KubeNode]) -> None:
        """Role labels, as kubeadm sets them (a kubelet may not set node-role.kubernetes.io/* itself)."""
        assert self.client is not None
        for node in nodes:
            role = "control-plane" if node.control_plane else "worker"
            self.client.merge_patch("Node", node.name, {"metadata": {"labels": {
                f"node-role.kubernetes.io/{role}": ""}}})

    def _write_info(self) -> None:
        assert self.pki is not None
        self.info = {
            "name": self.name, "kind": "kubernetes", "version": kube_version(), "runtime": self.runtime,
            "api_url": self.api_url,
            "ca_path": str(self.pki.ca_path), "kubeconfig": str(self.kubeconfig),
            "kubeconfig_viewer": str(self.kubeconfig_viewer), "audit_log": str(self.audit_log),
            "bin_dir": str(self.bin_dir), "netns": self.netns_name,
            "registry": {"name": TEST_REGISTRY, "upstream": self.registry_host, "own": self.registry is not None,
                         "dir": str(self.registry.workdir) if self.registry else None},
            "agent_image": {"image": AGENT_IMAGE, "version": AGENT_TAG, "ref": f"{AGENT_IMAGE}:{AGENT_TAG}"},
            "nodes": [node.to_json() for node in self.nodes],
        }
        self.cluster_json.write_text(json.dumps(self.info, indent=2) + "\n")

    def stop(self) -> None:
        """Stops everything that was started, in reverse order; safe to call twice."""
        for node in reversed([*self.nodes, *self.spares]):
            with contextlib.suppress(Exception):
                node.stop()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc.popen, term_timeout_s=10)
        self.procs = []
        if self.registry is not None:
            self.registry.stop()
            self.registry = None
        if self.netns_made:
            netns.delete(self.netns_name)
            self.netns_made = False

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def node(self, name: str) -> KubeNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def node_is_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def push_agent_image(registry_host: str) -> None:
    """The agent image of ``make image`` (build/image/prefetch-agent.oci.tar), pushed as the cluster's agent."""
    if not AGENT_ARCHIVE.exists():
        raise RuntimeError(f"{AGENT_ARCHIVE} is missing: run `bash scripts/image.sh` (make image) first")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{AGENT_ARCHIVE}",
                    f"docker://{registry_host}/{AGENT_REPOSITORY}:{AGENT_TAG}"], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
