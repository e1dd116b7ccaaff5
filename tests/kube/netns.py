"""The cluster's own network namespace, and a TCP forwarder between it and the host's loopback.

Every component of the local cluster (etcd, the control plane, each node's containerd and kubelet, the pods) lives in
one network namespace that the harness creates (``ip netns add``) and deletes: the nodes get addresses of their own
there (a kubelet refuses a loopback node IP), pods get a real bridge network, and two clusters on one machine never
share a port. The tests, ansible-playbook and the registry's fault proxies stay on the host's loopback; this module's
forwarder joins the two: ``python -m kube.netns FORWARD...`` with ``FORWARD`` =
``LISTEN_NS,HOST:PORT=CONNECT_NS,HOST:PORT`` (a namespace is a path such as ``/run/netns/NAME``, or ``host``).

Why it works: a socket belongs to the network namespace its creating thread was in when it was created, and keeps it.
Each listener is created after ``setns()`` into its namespace, and each outbound connection in a thread that entered
the target namespace first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Optional

CLONE_NEWNET = 0x40000000
# The namespace this process started in ("host"): kept open, since threads leave it.
HOST_NS = f"/proc/{os.getpid()}/fd/{os.open('/proc/self/ns/net', os.O_RDONLY)}"
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: str) -> None:
    """Moves the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def ns_path(name: str) -> str:
    return HOST_NS if name == "host" else name


@dataclass(frozen=True)
class Forward:
    listen_ns: str
    listen: tuple[str, int]
    connect_ns: str
    connect: tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> Forward:
        left, right = text.split("=", 1)

        def side(part: str) -> tuple[str, tuple[str, int]]:
            ns, address = part.split(",", 1)
            host, port = address.rsplit(":", 1)
            return ns_path(ns), (host, int(port))

        listen_ns, listen = side(left)
        connect_ns, connect = side(right)
        return cls(listen_ns, listen, connect_ns, connect)

    def __str__(self) -> str:
        listen, connect = f"{self.listen[0]}:{self.listen[1]}", f"{self.connect[0]}:{self.connect[1]}"
        return f"{self.listen_ns},{listen}={self.connect_ns},{connect}"


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copies both ways until either side closes; half-closes are passed on."""
    open_ends = {a: b, b: a}
    try:
        while open_ends:
            readable, _, _ = select.select(list(open_ends), [], [], 300)
            if not readable:
                return  # idle for 5 minutes: a test long gone
            for src in readable:
                data = src.recv(65536)
                dst = open_ends[src]
                if data:
                    dst.sendall(data)
                    continue
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                del open_ends[src]
    except OSError:
        pass
    finally:
        a.close()
        b.close()


def _serve_connection(client: socket.socket, forward: Forward) -> None:
    setns(forward.connect_ns)  # this thread only
    try:
        upstream = socket.create_connection(forward.connect, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    _pump(client, upstream)


def _accept_loop(listener: socket.socket, forward: Forward) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(client, forward), daemon=True).start()


def listen_in(ns: str, address: tuple[str, int]) -> socket.socket:
    """A listening socket created inside ``ns`` by a short-lived thread (the caller's namespace is unchanged)."""
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            setns(ns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            made.append(sock)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return made[0]


def main(argv: Optional[list[str]] = None) -> int:
    forwards = [Forward.parse(a) for a in (argv if argv is not None else sys.argv[1:])]
    listeners = [(listen_in(f.listen_ns, f.listen), f) for f in forwards]
    for listener, forward in listeners:
        threading.Thread(target=_accept_loop, args=(listener, forward), daemon=True).start()
    print("forwarding", flush=True)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    return 0


# ---- the namespace itself --------------------------------------------------------------------------------
def run_ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def create(name: str, addresses: list[str]) -> Path:
    """``ip netns add NAME``; loopback up with ``addresses`` (each /32) on it; IPv4 forwarding on (pod bridges)."""
    run_ip("netns", "add", name)
    run_ip("-n", name, "link", "set", "lo", "up")
    for address in addresses:
        run_ip("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                   capture_output=True, timeout=30, check=True)
    return Path("/run/netns") / name


def delete(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)


if __name__ == "__main__":
    sys.exit(main())
