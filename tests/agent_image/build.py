"""Build the agent image here, without any public registry (``make image``).

1. A Debian bookworm root file system made by mmdebstrap (cached in build/image/) stands in for the public
   ``debian:bookworm-slim`` base image. buildah imports it and pushes it to a local docker-registry.
2. The repository's real Dockerfile is built with
   ``--build-arg BASE_IMAGE=<local registry>/library/debian:bookworm-slim``.
3. The result is saved as an OCI archive (build/image/prefetch-agent.oci.tar) for the tests and benchmarks.

The registry lives only for the build and is always stopped.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.registry import Registry

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "image"
BASE_TAR = OUT / "debian-bookworm-base.tar"
ARCHIVE = OUT / "prefetch-agent.oci.tar"
LOCAL_BASE = "localhost/stackrox/debian-base:bookworm"
REPOSITORY = "stackrox/prefetch-agent"
# buildah defaults that work on this machine: vfs storage (overlay-on-overlay is not reliable) and chroot
# isolation for RUN steps (no nested namespaces needed), with the host network for apt-get.
BUILDAH_ENV = {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
# Keep documentation, man pages and locales out of the stand-in base, as the slim image does.
MMDEBSTRAP_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"]


def log(msg: str) -> None:
    print(f"image: {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, capture: bool = False) -> str:
    env = {**os.environ, **BUILDAH_ENV}
    done = subprocess.run(cmd, check=False, env=env, text=True, capture_output=capture, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:] if capture else ""
        raise SystemExit(f"image: {' '.join(cmd[:3])} ... failed with exit code {done.returncode} {detail}")
    return done.stdout if capture else ""


def make_base_tar() -> None:
    if BASE_TAR.exists():
        log(f"base root file system cached at {BASE_TAR}")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    partial = BASE_TAR.with_suffix(".partial")
    args = ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet"]
    args += [f"--dpkgopt=path-exclude={pattern}" for pattern in MMDEBSTRAP_EXCLUDES]
    args += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", "bookworm", str(partial)]
    log("making the Debian bookworm base with mmdebstrap")
    run(*args)
    partial.rename(BASE_TAR)


def import_base() -> None:
    container = run("buildah", "from", "scratch", capture=True).strip()
    try:
        run("buildah", "add", "--quiet", container, str(BASE_TAR), "/")
        run("buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd", "bash", container)
        run("buildah", "commit", "--quiet", container, LOCAL_BASE)
    finally:
        run("buildah", "rm", container, capture=True)


def build(version: str, registry_host: str) -> str:
    base_ref = f"{registry_host}/library/debian:bookworm-slim"
    run("buildah", "push", "--quiet", "--tls-verify=false", LOCAL_BASE, f"docker://{base_ref}")
    tag = f"localhost/{REPOSITORY}:{version}"
    log(f"building {tag} FROM {base_ref}")
    run("buildah", "bud", "--quiet", "--layers=false", "--network", "host", "--tls-verify=false", "--pull-always",
        "--build-arg", f"BASE_IMAGE={base_ref}", "--build-arg", f"VERSION={version}",
        "-f", str(REPO / "Dockerfile"), "-t", tag, str(REPO))
    return tag


def save(tag: str, version: str) -> None:
    ARCHIVE.unlink(missing_ok=True)
    run("buildah", "push", "--quiet", tag, f"oci-archive:{ARCHIVE}:{REPOSITORY}:{version}")
    log(f"saved {ARCHIVE} ({ARCHIVE.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=os.environ.get("VERSION", "0.1.0"), help="image tag")
    args = parser.parse_args(argv)
    started = time.monotonic()
    make_base_tar()
    import_base()
    with tempfile.TemporaryDirectory(prefix="prefetch-image-") as tmp, Registry(Path(tmp)) as registry:
        tag = build(args.version, registry.host)
    save(tag, args.version)
    log(f"built {tag} in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
