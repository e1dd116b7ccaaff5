"""A real containerd (CRI plugin) per test node: own root/state/sockets under a work dir, registries via hosts.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from infra._util import ensure_dir
from infra.runtime import KubeletRuntime, RuntimeNode

CONTAINERD_BIN = "/usr/bin/containerd"
CTR_BIN = "/usr/bin/ctr"
CRI_NAMESPACE = "k8s.io"
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


# What a kubelet's pods need of containerd's CRI (1.6: the cri plugin; 2.x: its runtime plugin). restrict_oom_score_adj:
# this VM lacks CAP_SYS_RESOURCE, and runc fails every sandbox without it ("failed to update /proc/self/oom_score_adj:
# Permission denied"). Pod network namespaces are mounted under the state dir, so nothing is left in /run/netns.
KUBELET_RUNTIME_OPTIONS = "  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n"


class ContainerdNode(RuntimeNode):
    """``with ContainerdNode(workdir, registries={"registry.test:5000": px.host}) as node: ...``

    ``binaries``: a directory holding containerd, ctr and containerd-shim-runc-v2 of a 2.x build
    (``infra.runtime.built_binaries("containerd2")``); None = Debian's containerd 1.6 in /usr/bin.
    """

    runtime = "containerd"
    socket_name = "containerd.sock"

    def __init__(
        self, workdir: Path | str, registries: Optional[dict[str, str]] = None, name: str = "containerd",
        snapshotter: Optional[str] = None, kubelet: Optional[KubeletRuntime] = None,
        binaries: Optional[Path] = None,
    ) -> None:
        self.binaries = binaries
        if binaries is not None:
            self.runtime = "containerd2"
        super().__init__(workdir, name)
        self.hosts_dir = ensure_dir(self.workdir / "certs.d")
        self.config_path = self.workdir / "config.toml"
        self.snapshotter = snapshotter or ("overlayfs" if overlay_supported(self.workdir) else "native")
        self.kubelet = kubelet
        if kubelet is not None:  # listens inside the node's mount namespace; reached through /proc/<pid>/root
            self.socket = kubelet.socket
        for registry_name, upstream in (registries or {}).items():
            self.set_registry(registry_name, upstream)

    @property
    def containerd_binary(self) -> str:
        return str(self.binaries / "containerd") if self.binaries is not None else CONTAINERD_BIN

    @property
    def ctr_binary(self) -> str:
        return str(self.binaries / "ctr") if self.binaries is not None else CTR_BIN

    def status_tries(self, status: int) -> int:
        """hosts_toml's two host entries: 1.6 tries an error status once on each (2). Measured with 2.4.2 (the
        proxy's request log of one PullImage): a 5xx three times, a 401 twice."""
        if self.binaries is not None and status >= 500:
            return 3
        return 2

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

    def _command(self) -> list[str]:
        self._write_config()
        launcher = list(self.kubelet.launcher) if self.kubelet is not None else []
        return [*launcher, self.containerd_binary, "--config", str(self.config_path)]

    def _environment(self) -> Optional[dict[str, str]]:
        if self.binaries is None:
            return None
        # containerd finds its shim on PATH: the one built with it, not Debian's 1.6 shim.
        return {**os.environ, "PATH": f"{self.binaries}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def _own_session(self) -> bool:
        # Under a kubelet, the harness stops it in order: a Ctrl-C must not reach it first.
        return self.kubelet is not None

    def _write_config(self) -> None:
        if self.binaries is not None:
            self.config_path.write_text(self._config_v3())
            return
        root, state, opt, listen, cni_bin, cni_conf = self._paths()
        cri_extra = ""
        if self.kubelet is not None:
            cri_extra = f'  sandbox_image = "{self.kubelet.sandbox_image}"\n{KUBELET_RUNTIME_OPTIONS}'
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

    def _paths(self) -> tuple[Path, Path, Path, Path, Path, Path]:
        """root, state, opt, the socket containerd listens on, CNI bin dir, CNI conf dir."""
        root = ensure_dir(self.workdir / "root")
        state = ensure_dir(self.workdir / "state")
        opt = ensure_dir(self.workdir / "opt")
        if self.kubelet is None:
            cni = ensure_dir(self.workdir / "cni")
            return root, state, opt, self.socket, cni, cni
        return root, state, opt, self.kubelet.listen_socket, self.kubelet.cni_bin_dir, self.kubelet.cni_conf_dir

    def _config_v3(self) -> str:
        """containerd 2.x's own config format (version 3: the CRI plugin split into images and runtime; the
        sandbox image is a pinned image of the images plugin, the pod options belong to the runtime plugin)."""
        root, state, opt, listen, cni_bin, cni_conf = self._paths()
        images_extra = runtime_extra = ""
        if self.kubelet is not None:
            images_extra = (f'  [plugins."io.containerd.cri.v1.images".pinned_images]\n'
                            f'    sandbox = "{self.kubelet.sandbox_image}"\n')
            runtime_extra = KUBELET_RUNTIME_OPTIONS
        return f"""version = 3
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

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{self.snapshotter}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{self.hosts_dir}"
{images_extra}
[plugins."io.containerd.cri.v1.runtime"]
{runtime_extra}  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
"""

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
            [self.ctr_binary, "--address", str(self.socket), "-n", CRI_NAMESPACE, *args],
            capture_output=True, text=True, timeout=timeout_s, check=check, stdin=subprocess.DEVNULL,
        )
