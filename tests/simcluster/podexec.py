"""Runs one simulated container: a private mount namespace with the pod's volumes at their mount paths, then exec.

Usage (by the kubelet, as root): ``python podexec.py SPEC.json`` where SPEC is
``{"argv": [...], "env": {...}, "cwd": "/", "stage": DIR, "mounts": [{"source", "target", "kind": "dir"|"file",
"read_only"}]}``. Standard library only; it replaces itself with ``argv`` (the kubelet sees the real pid).

How mount points that do not exist on the host (``/tmp/cri``, ``/var/run/secrets/...``, ``/dev/termination-log``)
appear without touching the host: inside the new namespace only, the deepest existing ancestor (``/tmp``, ``/run``,
``/dev``) gets an overlayfs whose upper layer is a tmpfs, so the missing directories/files are created in that tmpfs
and everything already there stays visible; mounts below that ancestor (``/dev/shm``, ``/dev/pts``...) are bound back.
Every bind source is opened (O_PATH) before any overlay, so a source under an overlaid directory is still the real
one: Unix sockets cannot be reached through overlayfs, only through a bind of the real directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                         flags, data.encode() if data else None)
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target} ({fstype or 'bind'}): {os.strerror(err)}")


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            fields = line.split()
            points.append(fields[4].replace("\\040", " "))
    return points


class Namespace:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.stage_fd = -1
        self.overlaid: list[str] = []
        self.bound: list[str] = []
        self._counter = 0

    def enter(self) -> None:
        if _libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)} (the simulated kubelet must run as root)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        os.makedirs(self.stage, exist_ok=True)
        _mount("tmpfs", self.stage, "tmpfs", 0, "mode=755")
        self.stage_fd = os.open(self.stage, os.O_PATH)

    def _covered(self, path: str) -> bool:
        """Is ``path`` inside something we already made writable (an overlay, or a bound volume)?"""
        return any(path == base or path.startswith(base.rstrip("/") + "/") for base in self.overlaid + self.bound)

    def _overlay(self, ancestor: str) -> None:
        if ancestor == "/":
            raise OSError(1, "refusing to overlay / (mount path directly under the root); create it on the host")
        self._counter += 1
        upper = f"/proc/self/fd/{self.stage_fd}/o{self._counter}"
        os.makedirs(f"{self.stage}/o{self._counter}/u")
        os.makedirs(f"{self.stage}/o{self._counter}/w")
        prefix = ancestor.rstrip("/") + "/"
        below = sorted({p for p in _mount_points() if p.startswith(prefix)}, key=len)
        keep: list[tuple[str, int]] = []
        for point in below:  # only top-most submounts; MS_REC brings what is under them
            if not any(point.startswith(k.rstrip("/") + "/") for k, _ in keep):
                try:
                    keep.append((point, os.open(point, os.O_PATH)))
                except OSError:
                    continue
        _mount("overlay", ancestor, "overlay", 0, f"lowerdir={ancestor},upperdir={upper}/u,workdir={upper}/w")
        for point, fd in keep:
            if os.path.lexists(point):
                _mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
            os.close(fd)
        self.overlaid.append(ancestor)

    def ensure_target(self, target: str, kind: str) -> str:
        """Makes ``target`` exist (as dir or file) and returns its resolved path."""
        resolved = os.path.realpath(target)
        if os.path.exists(resolved):
            return resolved
        ancestor = resolved
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not self._covered(ancestor):
            self._overlay(ancestor)
        if kind == "dir":
            os.makedirs(resolved, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(resolved), exist_ok=True)
            with open(resolved, "a", encoding="utf-8"):
                pass
        return resolved

    def bind(self, source_fd: int, target: str, kind: str, read_only: bool) -> None:
        resolved = self.ensure_target(target, kind)
        _mount(f"/proc/self/fd/{source_fd}", resolved, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, resolved, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
        self.bound.append(resolved)


def _die_with_kubelet() -> None:
    """SIGKILL this container when the simulated kubelet's process dies (even by SIGKILL), so no agent outlives it.

    The flag survives exec; the parent check covers a kubelet that died before prctl ran.
    """
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


def run(spec: dict[str, Any]) -> None:
    _die_with_kubelet()
    namespace = Namespace(spec["stage"])
    namespace.enter()
    # Open every source before any overlay (later overlays must not change what a bind points to), but after
    # unshare: a bind source must be a mount of the caller's own namespace.
    sources = [(m, os.open(m["source"], os.O_PATH)) for m in spec["mounts"]]
    # Parents before children, so a nested mount lands inside its parent volume, as with a real runtime.
    for mount, fd in sorted(sources, key=lambda item: item[0]["target"].rstrip("/").count("/")):
        namespace.bind(fd, mount["target"], mount["kind"], bool(mount.get("read_only")))
        os.close(fd)
    os.close(namespace.stage_fd)
    os.chdir(spec.get("cwd") or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        run(spec)
    except OSError as exc:
        # Exit code 128 and a line on stderr, like a runtime's "failed to create containerd task" start error.
        print(f"simcluster podexec: {exc}", file=sys.stderr, flush=True)
        os._exit(128)


if __name__ == "__main__":
    main()
