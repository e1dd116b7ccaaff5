"""Fixtures for the agent's integration tests: a real containerd per test, Debian's registry, the fault proxy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from infra.containerd import ContainerdNode
from infra.faultproxy import FaultProxy
from infra.images import TestImage, build_test_image, push_image
from infra.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[3]
REGISTRY_NAME = "registry.test:5000"
CREDENTIALS = ("prefetch-user", "s3cret-Pa55word-never-logged")


def ref(repo: str, tag: str = "v1") -> str:
    return f"{REGISTRY_NAME}/{repo}:{tag}"


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


# ---- running the agent ---------------------------------------------------------------------------------
@dataclass
class AgentRun:
    rc: int
    stdout: str
    stderr: str
    elapsed: float
    summary: Optional[dict[str, Any]]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return f"rc={self.rc} elapsed={self.elapsed:.1f}s summary={self.summary}\n--- output ---\n{self.output[-3000:]}"


def agent_command(socket: Path | str, images: Sequence[str], flags: Sequence[str], termination_log: Path) -> list[str]:
    return [sys.executable, "-m", "image_prefetcher", "fetch", f"--cri-socket={socket}",
            f"--termination-log={termination_log}", *flags, *images]


def agent_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "agent" / "src"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.update({"NODE_NAME": "it-node", "PYTHONUNBUFFERED": "1"})
    env.pop("INSTANCE_NAME", None)  # no node labelling outside a cluster
    env.update(extra or {})
    return env


def read_summary(path: Path) -> Optional[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    assert len(text.encode()) <= 4096, "the termination summary must fit the kubelet's 4096-byte limit"
    data: dict[str, Any] = json.loads(text)
    return data


class AgentProcess:
    """A running ``image-prefetcher fetch``; ``finish()`` waits for it and collects the outcome."""

    def __init__(self, testdir: Path, socket: Path | str, images: Sequence[str], flags: Sequence[str],
                 env: Optional[dict[str, str]] = None) -> None:
        self.termination_log = testdir / f"termination-{time.monotonic_ns()}.json"
        self.out_path = testdir / "agent.stdout"
        self.err_path = testdir / "agent.stderr"
        self.started = time.monotonic()
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(agent_command(socket, images, flags, self.termination_log),
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=agent_env(env),
                                         cwd=testdir)

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout_s: float) -> AgentRun:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent still running after {timeout_s}s; stderr:\n"
                                 f"{self.err_path.read_text(errors='replace')[-3000:]}") from None
        elapsed = time.monotonic() - self.started
        return AgentRun(rc, self.out_path.read_text(errors="replace"), self.err_path.read_text(errors="replace"),
                        elapsed, read_summary(self.termination_log))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
