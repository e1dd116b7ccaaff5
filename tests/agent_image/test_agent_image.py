"""The agent image, built from the repository's Dockerfile by ``make image``, pulled and run for real.

On each runtime of ``PREFETCH_RUNTIMES`` (containerd 1.6, containerd 2.x, CRI-O: ``infra.runtime``): the image is
pulled into a real node through CRI; containerd starts it (``ctr run``, as its non-root default user); and
``image-prefetcher fetch`` from the image pulls test images into that node through its CRI socket (``buildah run``
as root with the socket mounted: the manifests run only the init container as root, and ctr 1.6 cannot override an
image's user). CRI-O has no client of its own that starts a container outside a pod sandbox (only CRI's
RuntimeService, i.e. a kubelet): there the start is left to the end-to-end tests, and the test says so.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_image.oci import OciImage, load
from infra.containerd import ContainerdNode
from infra.images import push_test_image
from infra.registry import Registry
from infra.runtime import RuntimeNode, make_node, selected_runtimes

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "build" / "image" / "prefetch-agent.oci.tar"
AGENT_REF = "registry.test:5000/stackrox/prefetch-agent:test"
BUILDAH_ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
# Anything that compiles, installs packages or fetches code has no place in the final image.
BUILD_TOOLS = re.compile(
    r"^(usr/)?(local/)?s?bin/(gcc|g\+\+|cc|c\+\+|cpp|ld|as|make|cmake|pip3?|pip3\.\d+|apt|apt-get|dpkg|perl|git|curl|wget)"
    r"(-[\d.]+)?$|/dist-packages/pip/"
)
SECRET_FILES = re.compile(r"(\.dockerconfigjson|\.dockercfg|/\.docker/config\.json|id_rsa|id_ed25519|\.netrc)$")
SECRET_CONTENT = re.compile(rb"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----|\"auths\"\s*:")


@pytest.fixture(scope="module")
def image() -> OciImage:
    if not ARCHIVE.exists():
        pytest.fail(f"{ARCHIVE} is missing: scripts/test-image.sh runs `make image` first")
    return load(ARCHIVE)


@pytest.fixture(scope="module", params=selected_runtimes())
def node_and_registry(request: pytest.FixtureRequest) -> Iterator[tuple[RuntimeNode, Registry]]:
    with tempfile.TemporaryDirectory(prefix="prefetch-image-test-") as tmp:
        workdir = Path(tmp)
        with Registry(workdir / "registry") as registry, make_node(
            request.param, workdir / "node", registries={"registry.test:5000": registry.host}
        ) as node:
            subprocess.run(
                ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{ARCHIVE}",
                 f"docker://{registry.host}/stackrox/prefetch-agent:test"],
                check=True, stdin=subprocess.DEVNULL, timeout=300,
            )
            yield node, registry


def test_entrypoint_user_and_labels(image: OciImage) -> None:
    config = image.config["config"]
    assert config["Entrypoint"] == ["image-prefetcher"]
    assert config["User"] == "65534:65534", "the default user must not be root"
    labels = config["Labels"]
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.version",
                "org.opencontainers.image.licenses"):
        assert labels.get(key), f"OCI label {key} missing"


def test_no_build_tools_in_image(image: OciImage) -> None:
    found = sorted(name for name, info in image.files.items() if not info.isdir() and BUILD_TOOLS.search(name))
    assert found == []
    assert not any("/__pycache__/" not in n and n.endswith((".whl",)) for n in image.files)
    assert not any(n.startswith(("root/.cache", "var/cache/apt/archives/")) and image.files[n].isfile()
                   for n in image.files)


def test_no_secrets_in_image(image: OciImage) -> None:
    assert sorted(name for name in image.files if SECRET_FILES.search(name)) == []
    small_text_files = [n for n, info in image.files.items()
                        if info.isfile() and info.size < 64 << 10 and n.startswith(("etc/", "root/", "tmp/"))]
    for name in small_text_files:
        assert not SECRET_CONTENT.search(image.read(name)), f"{name} looks like it holds a secret"


def test_runtime_for_credential_plugins(image: OciImage) -> None:
    # Plugins are dynamic executables (libc) that talk TLS (CA bundle); script plugins need /bin/sh.
    assert "etc/ssl/certs/ca-certificates.crt" in image.files
    assert any(re.search(r"lib/[^/]+/libc\.so\.6$", n) for n in image.files)
    assert "usr/bin/dash" in image.files


def test_pulled_through_cri(node_and_registry: tuple[RuntimeNode, Registry]) -> None:
    node, _ = node_and_registry
    with node.cri() as cri:
        cri.pull_image(AGENT_REF)
    assert node.image_present(AGENT_REF)


def test_started_by_the_runtime(node_and_registry: tuple[RuntimeNode, Registry]) -> None:
    node, _ = node_and_registry
    if not isinstance(node, ContainerdNode):
        pytest.skip("CRI-O starts containers only in a pod sandbox through CRI's RuntimeService (a kubelet)")
    with node.cri() as cri:
        cri.pull_image(AGENT_REF)
    done = node.ctr("run", "--rm", "--net-host", AGENT_REF, "agent-help", "image-prefetcher", "--help", timeout_s=120)
    assert done.returncode == 0, done.stderr
    assert "fetch" in done.stdout and "aggregate-metrics" in done.stdout


def test_fetch_from_the_image_pulls_into_the_node(
    node_and_registry: tuple[RuntimeNode, Registry], tmp_path: Path
) -> None:
    node, registry = node_and_registry
    wanted = [f"registry.test:5000/image-test/app{i}:v1" for i in (1, 2)]
    for i, ref in enumerate(wanted, start=1):
        push_test_image(registry.host, f"image-test/app{i}", "v1", size_mib=1, layers=2, seed=f"image-{i}")
        assert not node.image_present(ref)
    container = subprocess.run(
        ["buildah", "from", "--quiet", "--tls-verify=false", f"{registry.host}/stackrox/prefetch-agent:test"],
        env=BUILDAH_ENV, capture_output=True, text=True, check=True, timeout=300,
    ).stdout.strip()
    try:
        run = subprocess.run(
            ["buildah", "run", "--user", "0:0", "--network", "host",
             "-v", f"{node.socket.parent}:/tmp/cri", "-v", f"{tmp_path}:/out", container, "--",
             "image-prefetcher", "fetch", f"--cri-socket=/tmp/cri/{node.socket.name}",
             "--termination-log=/out/summary.json", "--overall-timeout=2m", *wanted],
            env=BUILDAH_ENV, capture_output=True, text=True, timeout=300,
        )
    finally:
        subprocess.run(["buildah", "rm", container], env=BUILDAH_ENV, capture_output=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] == 2 and summary["failed"] == 0, summary
    for ref in wanted:
        assert node.image_present(ref), f"{ref} not in the node's {node.runtime}"
