"""The container runtimes a test node can run, behind one interface: each a real daemon with its own root, state,
socket and registry configuration under a work dir, started as a plain background process.

- ``containerd``: Debian's containerd 1.6 (/usr/bin), as on the nodes of ``tests/kube``;
- ``containerd2``: containerd 2.x built from its Go module by ``tests/runtimes/build.sh`` (cached);
- ``crio``: CRI-O built from its Go module by the same script, with Debian's conmon and runc.

``make_node(runtime, workdir, registries=...)`` gives a started-on-enter node of either kind. What differs between
them and matters to a test is a method here (``status_tries``), with the measurement that fixed it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Optional, Self

from infra._util import ensure_dir, log_tail, stop_process, wait_until
from infra.cri import CriClient

RUNTIMES = ("containerd", "containerd2", "crio")
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room for ".ttrpc"
_BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "runtimes" / "build.sh"
_built: dict[str, Path] = {}


def selected_runtimes() -> tuple[str, ...]:
    """The runtimes the suites run on: ``PREFETCH_RUNTIMES=containerd,crio`` (default: all of them)."""
    wanted = tuple(r.strip() for r in os.environ.get("PREFETCH_RUNTIMES", ",".join(RUNTIMES)).split(",") if r.strip())
    unknown = sorted(set(wanted) - set(RUNTIMES))
    if unknown:
        raise ValueError(f"PREFETCH_RUNTIMES names unknown runtimes {unknown}; known: {', '.join(RUNTIMES)}")
    return wanted


def built_binaries(runtime: str) -> Path:
    """The bin dir of a runtime built by tests/runtimes/build.sh (a cold build takes minutes; later calls are free)."""
    if runtime not in _built:
        done = subprocess.run(["bash", str(_BUILD_SCRIPT), runtime], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, timeout=3600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tests/runtimes/build.sh {runtime} failed (exit {done.returncode}); see its stderr")
        _built[runtime] = Path(done.stdout.strip().splitlines()[-1])
    return _built[runtime]


@dataclass(frozen=True)
class KubeletRuntime:
    """What a real kubelet on top needs (tests/kube): pods that run, a CNI network, and a socket at the node's path.

    ``launcher`` runs the runtime inside the node's network and mount namespaces (``nsenter ...``); there it listens
    on ``listen_socket`` (e.g. /run/containerd/containerd.sock or /run/crio/crio.sock, as on a real node), reached
    from the host through ``access_root`` (``/proc/<pid>/root`` of a process in that mount namespace).
    """

    launcher: tuple[str, ...]
    listen_socket: Path
    access_root: Path
    sandbox_image: str
    cni_conf_dir: Path
    cni_bin_dir: Path = Path("/usr/lib/cni")

    @property
    def socket(self) -> Path:
        """The listening socket as the host reaches it."""
        return self.access_root / self.listen_socket.relative_to("/")


class RuntimeNode(ABC):
    """One runtime daemon serving CRI on ``socket``. Subclasses write the config and give the command line."""

    runtime = ""
    socket_name = "cri.sock"

    def __init__(self, workdir: Path | str, name: str) -> None:
        self.name = name
        self.workdir = ensure_dir(Path(workdir) / name)
        self.log_path = self.workdir / f"{self.runtime}.log"
        sock_dir = self.workdir / "run"
        self._own_sock_dir: Optional[Path] = None
        if len(str(sock_dir / self.socket_name)) + len(".ttrpc") > _MAX_SOCKET_PATH:  # deep pytest tmp paths
            self._own_sock_dir = Path(tempfile.mkdtemp(prefix="prefetch-sock-"))
            sock_dir = self._own_sock_dir
        self.socket_dir = ensure_dir(sock_dir)
        self.socket = self.socket_dir / self.socket_name
        self._proc: Optional[subprocess.Popen[bytes]] = None

    # ---- what each runtime defines ------------------------------------------------------------------
    @abstractmethod
    def set_registry(self, registry_name: str, upstream: Optional[str]) -> None:
        """Maps ``registry_name`` (e.g. "registry.test:5000") to plain HTTP on ``upstream``; None unmaps."""

    @abstractmethod
    def _command(self) -> list[str]:
        """Writes the daemon's configuration and returns its command line."""

    def _environment(self) -> Optional[dict[str, str]]:
        return None

    def status_tries(self, status: int) -> int:
        """How many times one PullImage requests a manifest that answers HTTP ``status`` before it gives up (a
        ``status`` fault meant to fail exactly one pull needs this many ``times``)."""
        return 1

    def remove_image(self, ref: str) -> None:
        """Removes the image under every name it has, so the next pull starts clean."""
        with self.cri() as client:
            info = client.image_status(ref)
            if info is not None:
                client.remove_image(info.id)

    # ---- shared ---------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

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

    def start(self) -> Self:
        if self._proc is not None and self._proc.poll() is None:
            return self
        ensure_dir(self.socket_dir)
        command = self._command()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self._environment(), start_new_session=self._own_session())
        if not wait_until(lambda: self._proc is not None and self._proc.poll() is None and self._answers(), 60):
            self.stop()
            raise RuntimeError(f"{self.runtime} did not come up; log tail:\n{self.log_text()}")
        return self

    def _own_session(self) -> bool:
        return False

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

    def __enter__(self) -> Self:
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
        """The size the runtime reports over CRI (containerd: the registry's compressed bytes; CRI-O: the size
        of the unpacked image in its storage)."""
        with self.cri() as client:
            info = client.image_status(ref)
        return info.size if info is not None else None

    def log_text(self, max_chars: int = 4000) -> str:
        return log_tail(self.log_path, max_chars)


def make_node(runtime: str, workdir: Path | str, registries: Optional[dict[str, str]] = None,
              name: Optional[str] = None, kubelet: Optional[KubeletRuntime] = None) -> RuntimeNode:
    """A node of ``runtime`` (one of RUNTIMES), not started yet (``with make_node(...) as node`` starts it);
    ``kubelet``: run it for a real kubelet on top (tests/kube)."""
    if runtime in ("containerd", "containerd2"):
        from infra.containerd import ContainerdNode

        return ContainerdNode(workdir, registries=registries, name=name or runtime, kubelet=kubelet,
                              binaries=built_binaries(runtime) if runtime == "containerd2" else None)
    if runtime == "crio":
        from infra.crio import CrioNode

        return CrioNode(workdir, registries=registries, name=name or runtime, binaries=built_binaries("crio"),
                        kubelet=kubelet)
    raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
