"""The Dockerfile installs only Debian bookworm packages and compiles nothing, so it builds for every
architecture that has those packages. Check the four the upstream tool ships for, in Debian's own index
(a private apt state dir: the host's dpkg architectures are not touched)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ARCHES = ("amd64", "arm64", "ppc64el", "s390x")  # Debian's names for linux/{amd64,arm64,ppc64le,s390x}
PACKAGES = ("python3", "python3-grpcio", "python3-protobuf", "python3-yaml", "ca-certificates", "dash")


def _apt(tool: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    options = [
        f"-o=Dir::State={state}/state", f"-o=Dir::Cache={state}/cache", f"-o=Dir::Etc::SourceParts={state}/none",
        f"-o=Dir::Etc::SourceList={state}/sources.list", f"-o=APT::Architectures={','.join(ARCHES)}",
        "-o=Debug::NoLocking=1",
    ]
    return subprocess.run([tool, *options, *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)


def _debian_mirror() -> str:
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") or line.startswith("deb "):
                uri = line.split()[-3] if line.startswith("deb ") else line.split()[1]
                if uri.rstrip("/").endswith("/debian"):  # the main archive, not -security or third parties
                    return uri
    return "http://deb.debian.org/debian"


def test_runtime_packages_exist_for_every_architecture(tmp_path: Path) -> None:
    for sub in ("state/lists/partial", "cache/archives/partial", "none"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "sources.list").write_text(f"deb [trusted=yes] {_debian_mirror()} bookworm main\n")
    update = _apt("apt-get", tmp_path, "-qq", "update")
    if update.returncode != 0:
        pytest.fail(f"apt-get update (Debian mirror) failed: {update.stderr[-500:]}")
    missing = []
    for arch in ARCHES:
        for package in PACKAGES:
            shown = _apt("apt-cache", tmp_path, "show", f"{package}:{arch}")
            if shown.returncode == 0 and "Package:" in shown.stdout:
                continue
            # Architecture-independent packages (e.g. ca-certificates) serve every architecture.
            shown = _apt("apt-cache", tmp_path, "show", package)
            if "Architecture: all" not in shown.stdout:
                missing.append(f"{package}:{arch}")
    assert missing == []
