"""A real containerd (CRI plugin) per test node: own root/state/sockets under a work dir, registries via hosts.toml."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Optional

from infra._util import ensure_dir, log_tail, stop_process, wait_until
from infra.cri import CriClient

CONTAINERD_BIN = "/usr/bin/containerd"
CTR_BIN = "/usr/bin/ctr"
CRI_NAMESPACE = "k8s.io"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room for ".ttrpc"
_overlay_works: Optional[bool] = None


def overlay_supported(scratch: Path) -> bool:
    """Whether an overlay mount works here (not inside overlay-on-overlay, etc.); checked once per process."""
    global _overlay_works
    if _overlay_works is None:
        base = Path(tempfile.mkdtemp(prefix="overlay-check-", dir=scratch))
        dirs = {name: ensure_dir(base / name) for name in ("lower", "upper", "work", "merged")}
        options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(dirs["merged"])],
            capture_output=True, timeout=10, check=False,
        )
        _overlay_works = mounted.returncode == 0
        if _overlay_works:
            subprocess.run(["umount", str(dirs["merged"])], capture_output=True, timeout=10, check=False)
        shutil.rmtree(base, ignore_errors=True)
    return _overlay_works


def hosts_toml(upstream: str) -> str:
    """hosts.toml that sends pulls for a made-up registry name to plain HTTP on ``upstream`` (loopback).

    Observed with containerd 1.6.20: ``server`` alone is ignored (pulls go to https://<name>), and a ``[host]`` entry
    alone makes a 404 fall through to https://<name> ("no such host" instead of NOT_FOUND). With both, each request
    that gets an HTTP error status (404, 500, 401...) is tried twice on the same URL inside one PullImage: a
    ``status`` fault meant to fail one attempt needs ``times=2``. Connection-level faults (stalls, resets) are not
    tried twice.
    """
    url = f"http://{upstream}"
    return f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'


@dataclass(frozen=True)
class KubeletRuntime:
    """What a real kubelet on top needs (tests/kube): pods that run, a CNI network, and a socket at the node's path.

    ``launcher`` runs containerd inside the node's network and mount namespaces (``nsenter ...``); there it listens
    on ``listen_socket`` (e.g. /run/containerd/containerd.sock, as on a real node), reached from the host through
    ``access_root`` (``/proc/<pid>/root`` of a process in that mount namespace).
    """

    launcher: tuple[str, ...]
    listen_socket: Path
    access_root: Path
    sandbox_image: str
    cni_conf_dir: Path
    cni_bin_dir: Path = Path("/usr/lib/cni")


class ContainerdNode:
    """``with ContainerdNode(workdir, registries={"registry.test:5000": px.host}) as node: ...``"""

    def __init__(
        self, workdir: Path | str, registries: Optional[dict[str, str]] = None, name: str = "containerd",
        snapshotter: Optional[str] = None, kubelet: Optional[KubeletRuntime] = None,
    ) -> None:
        self.workdir = ensure_dir(Path(workdir) / name)
        self.hosts_dir = ensure_dir(self.workdir / "certs.d")
        self.log_path = self.workdir / "containerd.log"
        self.config_path = self.workdir / "config.toml"
        self.snapshotter = snapshotter or ("overlayfs" if overlay_supported(self.workdir) else "native")
        sock_dir = self.workdir / "run"
        self._own_sock_dir: Optional[Path] = None
        if len(str(sock_dir / "containerd.sock.ttrpc")) > _MAX_SOCKET_PATH:  # deep pytest tmp paths
            self._own_sock_dir = Path(tempfile.mkdtemp(prefix="prefetch-sock-"))
            sock_dir = self._own_sock_dir
        self.socket_dir = ensure_dir(sock_dir)
        self.socket = self.socket_dir / "containerd.sock"
        self.kubelet = kubelet
        if kubelet is not None:  # listens inside the node's mount namespace; reached through /proc/<pid>/root
            self.socket = kubelet.access_root / kubelet.listen_socket.relative_to("/")
        self._proc: Optional[subprocess.Popen[bytes]] = None
        for registry_name, upstream in (registries or {}).items():
            self.set_registry(registry_name, upstream)

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def set_registry(self, registry_name: str, upstream: Optional[str]) -> None:
        """Maps ``registry_name`` (e.g. "registry.test:5000") to ``upstream`` ("127.0.0.1:PORT"); None unmaps.

        containerd re-reads hosts.toml on every pull, so no restart is needed.
        """
        target = self.hosts_dir / registry_name
        if upstream is None:
            shutil.rmtree(target, ignore_errors=True)
            return
        ensure_dir(target)
        (target / "hosts.toml").write_text(hosts_toml(upstream))

    def _write_config(self) -> None:
        root = ensure_dir(self.workdir / "root")
        state = ensure_dir(self.workdir / "state")
        opt = ensure_dir(self.workdir / "opt")
        cni = ensure_dir(self.workdir / "cni")
        cni_bin, cni_conf, listen, cri_extra = cni, cni, self.socket, ""
        if self.kubelet is not None:
            cni_bin, cni_conf, listen = self.kubelet.cni_bin_dir, self.kubelet.cni_conf_dir, self.kubelet.listen_socket
            # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, and runc fails every sandbox without it
            # ("failed to update /proc/self/oom_score_adj: Permission denied"). Pod network namespaces are
            # mounted under the state dir, so nothing is left in /run/netns.
            cri_extra = (f'  sandbox_image = "{self.kubelet.sandbox_image}"\n  restrict_oom_score_adj = true\n'
                         '  netns_mounts_under_state_dir = true\n')
        self.config_path.write_text(f"""version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{listen}"

[ttrpc]
  address = "{listen}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_tcp_service = true
{cri_extra}  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{self.snapshotter}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.hosts_dir}"
""")

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = CriClient(self.address)
        try:
            return client.version(timeout_s=2) == "v1"
        except Exception:
            return False
        finally:
            client.close()

    def start(self) -> ContainerdNode:
        if self._proc is not None and self._proc.poll() is None:
            return self
        ensure_dir(self.socket_dir)
        self._write_config()
        launcher = list(self.kubelet.launcher) if self.kubelet is not None else []
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*launcher, CONTAINERD_BIN, "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Under a kubelet, the harness stops it in order: a Ctrl-C must not reach it first.
                start_new_session=self.kubelet is not None,
            )
        if not wait_until(lambda: self._proc is not None and self._proc.poll() is None and self._answers(), 30):
            self.stop()
            raise RuntimeError(f"containerd did not come up; log tail:\n{self.log_text()}")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, term_timeout_s=10)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a node crash would (the socket file stays behind)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_sock_dir is not None:
            shutil.rmtree(self._own_sock_dir, ignore_errors=True)

    def __enter__(self) -> ContainerdNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def cri(self) -> CriClient:
        """A CRI client on this node's socket (close it, or use it as a context manager)."""
        return CriClient(self.address)

    def image_present(self, ref: str) -> bool:
        with self.cri() as client:
            return client.image_status(ref) is not None

    def image_size(self, ref: str) -> Optional[int]:
        with self.cri() as client:
            info = client.image_status(ref)
        return info.size if info is not None else None

    def remove_image(self, ref: str) -> None:
        """Removes the image and every name CRI gave it (tag, repo digest, id), so the next pull starts clean."""
        with self.cri() as client:
            info = client.image_status(ref)
        if info is None:
            return
        names = [*info.repo_tags, *info.repo_digests, info.id]
        self.ctr("images", "rm", "--sync", *names)

    def ctr(self, *args: str, timeout_s: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``ctr -n k8s.io --address <socket> ARGS`` (namespace k8s.io: what CRI sees)."""
        return subprocess.run(
            [CTR_BIN, "--address", str(self.socket), "-n", CRI_NAMESPACE, *args],
            capture_output=True, text=True, timeout=timeout_s, check=check, stdin=subprocess.DEVNULL,
        )

    def log_text(self, max_chars: int = 4000) -> str:
        return log_tail(self.log_path, max_chars)
