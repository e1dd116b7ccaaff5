"""Runs the real ``image-prefetcher fetch`` as a child process and collects its outcome (exit code, output,
the JSON termination summary). Used by the agent's integration tests and the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_REGISTRY_NAME = "registry.test:5000"  # the made-up name every test node maps with hosts.toml


def image_ref(repo: str, tag: str = "v1") -> str:
    return f"{TEST_REGISTRY_NAME}/{repo}:{tag}"


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


