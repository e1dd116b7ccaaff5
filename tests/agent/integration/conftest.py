"""Fixtures for the agent's integration tests: a real containerd per test, Debian's registry, the fault proxy."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from infra.agentrun import TEST_REGISTRY_NAME as REGISTRY_NAME
from infra.agentrun import AgentProcess, AgentRun
from infra.containerd import ContainerdNode
from infra.faultproxy import FaultProxy
from infra.images import TestImage, build_test_image, push_image
from infra.registry import Registry

CREDENTIALS = ("prefetch-user", "s3cret-Pa55word-never-logged")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="prefetch-it-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def testdir(workdir: Path, request: pytest.FixtureRequest) -> Path:
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=workdir))
    return path


@pytest.fixture(scope="session")
def registry(workdir: Path) -> Iterator[Registry]:
    with Registry(workdir, name="registry") as reg:
        yield reg


@pytest.fixture(scope="session")
def images(registry: Registry) -> dict[str, TestImage]:
    """Small three-layer images under ``registry.test:5000/it/<name>:v1``."""
    built = {}
    for name in ("alpha", "beta", "gamma"):
        image = build_test_image(f"it/{name}", "v1", size_mib=2, layers=3, seed=name)
        push_image(registry.host, image)
        built[name] = image
    return built


@pytest.fixture(scope="session")
def credentials() -> tuple[str, str]:
    return CREDENTIALS


@pytest.fixture(scope="session")
def auth_registry(workdir: Path) -> Iterator[Registry]:
    with Registry(workdir, htpasswd={CREDENTIALS[0]: CREDENTIALS[1]}, name="auth-registry") as reg:
        push_image(reg.host, build_test_image("private/app", "v1", size_mib=1, layers=2, seed="private"),
                   auth=CREDENTIALS)
        yield reg


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=registry.host) as px:
        yield px


@pytest.fixture
def node(testdir: Path, proxy: FaultProxy) -> Iterator[ContainerdNode]:
    with ContainerdNode(testdir, registries={REGISTRY_NAME: proxy.host}) as cd:
        yield cd


@pytest.fixture
def start_agent(testdir: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(socket: Path | str, images: Sequence[str], *flags: str,
              env: Optional[dict[str, str]] = None) -> AgentProcess:
        agent = AgentProcess(testdir, socket, images, flags, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture
def run_agent(start_agent: Any) -> Any:
    """``run_agent(node.socket, [refs], "--flag=v", ..., timeout_s=40)`` -> AgentRun."""

    def run(socket: Path | str, images: Sequence[str], *flags: str, timeout_s: float,
            env: Optional[dict[str, str]] = None) -> AgentRun:
        return start_agent(socket, images, *flags, env=env).finish(timeout_s)

    return run
