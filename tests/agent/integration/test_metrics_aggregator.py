"""Pull metrics end to end: a real `fetch` against a real containerd submits to a real `aggregate-metrics` process,
whose HTTP `/metrics` returns one Result per PullImage attempt; an aggregator that is down never holds the run."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra._util import free_port, wait_until
from infra.agentrun import REPO_ROOT
from infra.agentrun import image_ref as ref
from infra.faultproxy import PROXY_401, FaultProxy, Rule
from infra.images import TestImage
from infra.runtime import RuntimeNode

pytestmark = pytest.mark.timeout(180)

# 60 s attempts: nothing here stalls by accident, so a slow machine cannot make an attempt time out and add a Result.
FAST = ("--initial-pull-attempt-timeout=60s", "--initial-pull-attempt-delay=200ms", "--max-pull-attempt-delay=1s")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Aggregator:
    """`image-prefetcher aggregate-metrics` as a child process on free ports."""

    def __init__(self, testdir: Path, *extra: str, grpc_port: int | None = None, http_port: int | None = None) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.err_path = testdir / f"aggregator-{time.monotonic_ns()}.stderr"
        env = {"PYTHONPATH": str(REPO_ROOT / "agent" / "src"), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "image_prefetcher",
                    "aggregate-metrics",
                    f"--grpc-port={self.grpc_port}",
                    f"--http-port={self.http_port}",
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        ok = wait_until(lambda: self.proc.poll() is None and http_get(self.http_port, "/healthz")[0] == 200, 30)
        assert ok, f"aggregator not ready; stderr:\n{self.stderr}"

    def results(self) -> list[dict[str, Any]]:
        status, body = http_get(self.http_port, "/metrics")
        assert status == 200
        data: list[dict[str, Any]] = json.loads(body)
        return data

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"aggregator ignored {signum.name}; stderr:\n{self.stderr}") from None


@pytest.fixture
def aggregator(testdir: Path) -> Iterator[Aggregator]:
    agg = Aggregator(testdir, "--debug")
    try:
        agg.wait_ready()
        yield agg
    finally:
        agg.stop()


def test_every_attempt_reaches_the_aggregator(
    aggregator: Aggregator, node: RuntimeNode, proxy: FaultProxy, images: dict[str, TestImage], run_agent: Any
) -> None:
    alpha, beta = ref("it/alpha"), ref("it/beta")
    # One failed attempt of alpha first (as many 500s as one PullImage asks for: RuntimeNode.status_tries).
    proxy.add_rule(Rule(path=r"/it/alpha/manifests/", action="status", status=500, times=node.status_tries(500)))
    started = int(time.time())
    result = run_agent(
        node.socket,
        [alpha, beta],
        *FAST,
        f"--metrics-endpoint=127.0.0.1:{aggregator.grpc_port}",
        "--overall-timeout=60s",
        timeout_s=90,
    )
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["ok"] == 2, result.describe()
    records = aggregator.results()
    assert len(records) == result.summary["attempts"] == 3, records
    ok = [r for r in records if "error" not in r]
    failed = [r for r in records if "error" in r]
    assert sorted(r["image"] for r in ok) == [alpha, beta]
    assert len(failed) == 1 and failed[0]["image"] == alpha
    assert failed[0]["error"].startswith("rpc error: code = ") and "500" in failed[0]["error"]
    assert "size_bytes" not in failed[0]
    for record in records:
        assert record["node"] == "it-node"  # NODE_NAME, not the host name
        assert uuid.UUID(record["attempt_id"]).version == 4
        assert started - 1 <= record["started_at"] <= time.time() + 1
        assert record.get("duration_ms", 0) < 60_000
        assert list(record) == [
            k
            for k in ("attempt_id", "started_at", "image", "error", "duration_ms", "node", "size_bytes")
            if k in record
        ]
    for record in ok:
        assert record["size_bytes"] > 0
    assert "metrics submitted" in result.stderr
    assert "metric submitted" in aggregator.stderr  # its --debug line per Result


def test_the_attempt_the_overall_timeout_ended_reports_the_reason(
    aggregator: Aggregator, node: RuntimeNode, proxy: FaultProxy, images: dict[str, TestImage], run_agent: Any
) -> None:
    """Issue 10: a 401 (as often as one PullImage asks), then a stall that the overall deadline cuts. The cut
    attempt's Result carries the image's reason, the 401 plus the cut, as the summary does; the first Result is
    the plain 401."""
    alpha = ref("it/alpha")
    proxy.add_rule(Rule(path=r"/it/alpha/manifests/", action="status", status=401, times=node.status_tries(401),
                        then="stall_headers"))
    result = run_agent(
        node.socket, [alpha], *FAST, f"--metrics-endpoint=127.0.0.1:{aggregator.grpc_port}", "--overall-timeout=6s",
        timeout_s=60,
    )
    assert result.rc == 0 and result.summary is not None and result.summary["attempts"] == 2, result.describe()
    errors = [record["error"] for record in aggregator.results()]
    assert len(errors) == 2 and PROXY_401.search(errors[0]), errors
    assert errors[1] == errors[0] + " (the overall timeout ended attempt 2)", errors
    reason = result.summary["errors"][alpha]
    assert PROXY_401.search(reason) and reason.endswith(" (the overall timeout ended attempt 2)"), reason


def test_an_aggregator_that_is_down_is_logged_and_not_fatal(
    node: RuntimeNode, images: dict[str, TestImage], run_agent: Any
) -> None:
    closed = free_port()  # nothing listens there
    result = run_agent(
        node.socket,
        [ref("it/gamma")],
        *FAST,
        f"--metrics-endpoint=127.0.0.1:{closed}",
        "--overall-timeout=20s",
        timeout_s=60,
    )
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["ok"] == 1, result.describe()
    assert result.elapsed < 20 + 10, result.describe()
    errors = [line for line in result.stderr.splitlines() if "level=ERROR" in line]
    assert any("metric Submit RPC failed" in line for line in errors), result.describe()
    assert any("giving up retrying metrics submission" in line for line in errors), result.describe()


def test_a_black_hole_aggregator_is_bounded_by_the_overall_timeout(
    node: RuntimeNode, images: dict[str, TestImage], run_agent: Any
) -> None:
    """A listener that accepts and never answers: the submission ends by overall timeout + the agent's grace."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        result = run_agent(
            node.socket,
            [ref("it/alpha")],
            *FAST,
            f"--metrics-endpoint=127.0.0.1:{hole.getsockname()[1]}",
            "--overall-timeout=8s",
            timeout_s=60,
        )
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["ok"] == 1, result.describe()
    assert result.elapsed < 8 + 10, result.describe()
    assert "giving up retrying metrics submission" in result.stderr or "did not finish in time" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_both_servers_cleanly(testdir: Path, signum: signal.Signals) -> None:
    agg = Aggregator(testdir)
    agg.wait_ready()
    assert agg.results() == []
    assert agg.stop(signum) == 0, agg.stderr
    for port in (agg.grpc_port, agg.http_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_a_busy_port_names_the_port_and_the_cause(testdir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agg = Aggregator(testdir, http_port=port)
        assert agg.proc.wait(timeout=30) == 1
    assert f"failed to listen on :{port}: address already in use" in agg.stderr
