"""A real CRI-O per test node: its own storage root, run root, socket, registries.conf and every state path under a
work dir, started as a plain background process (as ``infra.containerd`` does for containerd).

How a made-up registry name (``registry.test:5000``) reaches a loopback upstream: through ``HTTP_PROXY``, not a
registries.conf ``location`` rewrite. containers/image (v5.35, docker_image_src.go newImageSourceAttempt) sends the
CRI credentials only to a location whose domain is the image's own, so a rewrite to 127.0.0.1:PORT would turn every
credential test into an anonymous pull. As a forward proxy, the fault proxy sees requests for registry.test:5000
itself, credentials included; the registry stays ``insecure`` (http after https fails: the proxy refuses CONNECT).
One consequence: one upstream per node, and changing it restarts CRI-O (the environment is read at start).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from infra._util import ensure_dir, free_port
from infra.containerd import overlay_supported
from infra.runtime import KubeletRuntime, RuntimeNode

CONMON_BIN = "/usr/bin/conmon"  # Debian's conmon and runc, as the issue asks
RUNC_BIN = "/usr/sbin/runc"
_ACCEPT_ANY = {"default": [{"type": "insecureAcceptAnything"}]}


# Under a kubelet, CRI-O runs runc through this wrapper, which edits a container's spec first. CRI-O adds the
# kubelet's hugepage limits when /proc/cgroups lists the hugetlb controller (internal/config/node/cgroups_linux.go);
# this kernel has it, but no hugetlb hierarchy is mounted (cgroup v1), and runc failed every container with "cannot
# set hugetlb limit: container could not join or create cgroup". The wrapper drops the limits where the hierarchy
# is missing, as CRI-O itself does on a kernel without the controller (and containerd does here).
_RUNC_WRAPPER = """#!@PYTHON@ -S
import json, os, sys

args = sys.argv[1:]


def option(names):
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def hugetlb_mounted():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return True  # cgroup v2: a controller of the one hierarchy
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.partition(" - ")[2].split()
            if len(fields) >= 3 and fields[0] == "cgroup" and "hugetlb" in fields[2].split(","):
                return True
    return False


def edit(path, change):
    with open(path) as f:
        spec = json.load(f)
    if change(spec):
        with open(path, "w") as f:
            json.dump(spec, f)


def drop_hugepage_limits(spec):
    resources = (spec.get("linux") or {}).get("resources") or {}
    if not resources.get("hugepageLimits") or hugetlb_mounted():
        return False
    del resources["hugepageLimits"]
    return True


bundle = option(("--bundle", "-b"))
if bundle is not None:
    edit(os.path.join(bundle, "config.json"), drop_hugepage_limits)
os.execv(@RUNC@, [@RUNC@, *args])
"""


def registries_conf(names: list[str]) -> str:
    """registries.conf: fully qualified names only, each named registry over plain HTTP (``insecure``)."""
    entries = "".join(
        f'\n[[registry]]\nprefix = "{name}"\nlocation = "{name}"\ninsecure = true\n' for name in sorted(names)
    )
    return f'unqualified-search-registries = []\nshort-name-mode = "disabled"\n{entries}'


class CrioNode(RuntimeNode):
    """``with CrioNode(workdir, registries={"registry.test:5000": px.host}, binaries=bin_dir) as node: ...``"""

    runtime = "crio"
    socket_name = "crio.sock"

    def __init__(self, workdir: Path | str, binaries: Path, registries: Optional[dict[str, str]] = None,
                 name: str = "crio", kubelet: Optional[KubeletRuntime] = None) -> None:
        super().__init__(workdir, name)
        self.binaries = binaries
        self.kubelet = kubelet
        if kubelet is not None:  # listens inside the node's mount namespace; reached through /proc/<pid>/root
            self.socket = kubelet.socket
        self.storage_driver = "overlay" if overlay_supported(self.workdir) else "vfs"
        self._registries: dict[str, str] = {}
        # Where pulls go while no registry is mapped: a closed loopback port (never a DNS name off this machine).
        self._nowhere = f"127.0.0.1:{free_port()}"
        for registry_name, upstream in (registries or {}).items():
            self.set_registry(registry_name, upstream)

    def set_registry(self, registry_name: str, upstream: Optional[str]) -> None:
        """Maps ``registry_name`` to ``upstream`` (restarting a running CRI-O, which reads HTTP_PROXY at start)."""
        mapped = dict(self._registries)
        if upstream is None:
            mapped.pop(registry_name, None)
        else:
            mapped[registry_name] = upstream
        if len(set(mapped.values())) > 1:
            raise ValueError(f"a CRI-O test node reaches one upstream (HTTP_PROXY), not {sorted(set(mapped.values()))}")
        self._registries = mapped
        if self.pid is not None:
            self.restart()

    @property
    def proxy(self) -> str:
        return next(iter(self._registries.values()), self._nowhere)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        # https too: the https attempt of an insecure registry goes to the proxy (refused at once), not to DNS.
        return {**env, "HTTP_PROXY": f"http://{self.proxy}", "HTTPS_PROXY": f"http://{self.proxy}",
                "PATH": f"{self.binaries}:{env.get('PATH', '/usr/bin:/bin')}"}

    def _own_session(self) -> bool:
        # Under a kubelet, the harness stops it in order: a Ctrl-C must not reach it first.
        return self.kubelet is not None

    def _runc(self) -> str:
        """Debian's runc; under a kubelet, behind ``_RUNC_WRAPPER`` (written next to the config)."""
        if self.kubelet is None:
            return RUNC_BIN
        wrapper = self.workdir / "runc-wrapper"
        wrapper.write_text(_RUNC_WRAPPER.replace("@PYTHON@", sys.executable).replace("@RUNC@", repr(RUNC_BIN)))
        wrapper.chmod(0o755)
        return str(wrapper)

    def _command(self) -> list[str]:
        w = self.workdir
        dirs = {name: ensure_dir(w / name) for name in (
            "storage", "runroot", "logs", "exits", "attach", "namespaces", "hooks", "cni", "cdi", "keys", "tmp",
            "conf.d", "state")}
        (w / "crio.conf").write_text("# every setting is a flag (infra.crio)\n")
        (w / "registries.conf").write_text(registries_conf(list(self._registries)))
        (w / "policy.json").write_text(json.dumps(_ACCEPT_ANY))
        state = dirs["state"]
        launcher: list[str] = []
        listen, cni_conf, cni_bin, pods = self.socket, dirs["cni"], dirs["cni"], []
        if self.kubelet is not None:  # the node's socket path, its CNI network and the pause image its pods use
            launcher, listen = list(self.kubelet.launcher), self.kubelet.listen_socket
            cni_conf, cni_bin = self.kubelet.cni_conf_dir, self.kubelet.cni_bin_dir
            pods = ["--pause-image", self.kubelet.sandbox_image]
        return [
            *launcher, str(self.binaries / "crio"),
            "--config", str(w / "crio.conf"), "--config-dir", str(dirs["conf.d"]),
            "--listen", str(listen), "--log-level", "info", "--log-dir", str(dirs["logs"]),
            "--root", str(dirs["storage"]), "--runroot", str(dirs["runroot"]), "--storage-driver", self.storage_driver,
            "--registries-conf", str(w / "registries.conf"), "--registries-conf-dir", str(dirs["conf.d"]),
            "--signature-policy", str(w / "policy.json"), "--global-auth-file", "",
            "--cgroup-manager", "cgroupfs", "--conmon", CONMON_BIN, "--conmon-cgroup", "pod",
            "--default-runtime", "runc", "--runtimes", f"runc:{self._runc()}:{state / 'runc'}",
            "--pinns-path", str(self.binaries / "pinns"), "--namespaces-dir", str(dirs["namespaces"]),
            "--container-exits-dir", str(dirs["exits"]), "--container-attach-socket-dir", str(dirs["attach"]),
            "--version-file", str(state / "version"), "--version-file-persist", str(state / "version-persist"),
            "--clean-shutdown-file", str(state / "clean.shutdown"),
            "--hooks-dir", str(dirs["hooks"]), "--cdi-spec-dirs", str(dirs["cdi"]),
            "--decryption-keys-path", str(dirs["keys"]), "--big-files-temporary-dir", str(dirs["tmp"]),
            "--cni-config-dir", str(cni_conf), "--cni-plugin-dir", str(cni_bin),
            "--stream-address", "127.0.0.1", "--stream-port", "0",
            "--enable-nri=false", "--enable-metrics=false", "--selinux=false",
            "--irqbalance-config-file", "", "--irqbalance-config-restore-file", "disable",
            "--default-mounts-file", "",
            *pods,
        ]
