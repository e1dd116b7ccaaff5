"""Fixtures for the agent's integration tests: a real runtime per test (each test runs once per runtime of
``PREFETCH_RUNTIMES``, default containerd 1.6, containerd 2.x and CRI-O: ``infra.runtime``), Debian's registry, the
fault proxy. ``PREFETCH_ERROR_LOG=FILE`` appends every pull error the agents logged (test, runtime, image, gRPC code
and text) as JSON lines: the evidence behind docs/runtimes.md's table (``tests/runtimes/error_table.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from infra.agentrun import TEST_REGISTRY_NAME as REGISTRY_NAME
from infra.agentrun import AgentProcess, AgentRun
from infra.faultproxy import FaultProxy
from infra.images import TestImage, build_test_image, push_image
from infra.registry import Registry
from infra.runtime import RuntimeNode, make_node, selected_runtimes

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
    # Brackets of parametrised names out: containerd 1.6 reads some paths as glob patterns ("containerd: syntax
    # error in pattern" for a root under ".../test_x[containerd]-abc/").
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]
    path = Path(tempfile.mkdtemp(prefix=prefix + "-", dir=workdir))
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


MANY_IMAGES = 150


@pytest.fixture(scope="session")
def many_images(registry: Registry) -> list[str]:
    """``MANY_IMAGES`` distinct tiny images (one 4 KiB layer each): ``registry.test:5000/it/many-NNN:v1``."""
    names = [f"it/many-{i:03d}" for i in range(MANY_IMAGES)]
    for name in names:
        push_image(registry.host, build_test_image(name, "v1", size_mib=4 / 1024, layers=1, seed=name))
    return [f"{REGISTRY_NAME}/{name}:v1" for name in names]


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


@pytest.fixture(params=selected_runtimes())
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime under test: every test that uses a node runs once per selected runtime."""
    name: str = request.param
    return name


@pytest.fixture
def node(testdir: Path, proxy: FaultProxy, runtime: str) -> Iterator[RuntimeNode]:
    with make_node(runtime, testdir, registries={REGISTRY_NAME: proxy.host}) as started:
        yield started


_PULL_ERROR = re.compile(r'msg="image failed to pull" image=(\S+) .*?error="((?:[^"\\]|\\.)*)"')
_RPC_ERROR = re.compile(r"rpc error: code = (\w+) desc = (.*)", re.DOTALL)


def record_pull_errors(stderr: str, test: str, runtime: Optional[str]) -> None:
    """Appends the pull errors in an agent's stderr to $PREFETCH_ERROR_LOG (when set) as JSON lines."""
    target = os.environ.get("PREFETCH_ERROR_LOG")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        for image, quoted in _PULL_ERROR.findall(stderr):
            text = quoted.replace('\\"', '"').replace("\\\\", "\\")
            parsed = _RPC_ERROR.match(text)
            code, detail = parsed.groups() if parsed else ("", text)
            out.write(json.dumps({"test": test, "runtime": runtime, "image": image, "code": code,
                                  "text": detail}) + "\n")


@pytest.fixture
def start_agent(testdir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(socket: Path | str, images: Sequence[str], *flags: str,
              env: Optional[dict[str, str]] = None) -> AgentProcess:
        agent = AgentProcess(testdir, socket, images, flags, env)
        started.append(agent)
        return agent

    yield start
    runtime = request.node.callspec.params.get("runtime") if hasattr(request.node, "callspec") else None
    for agent in started:
        agent.kill()
        record_pull_errors(agent.err_path.read_text(errors="replace"), request.node.name, runtime)


@pytest.fixture
def run_agent(start_agent: Any) -> Any:
    """``run_agent(node.socket, [refs], "--flag=v", ..., timeout_s=40)`` -> AgentRun."""

    def run(socket: Path | str, images: Sequence[str], *flags: str, timeout_s: float,
            env: Optional[dict[str, str]] = None) -> AgentRun:
        return start_agent(socket, images, *flags, env=env).finish(timeout_s)

    return run
