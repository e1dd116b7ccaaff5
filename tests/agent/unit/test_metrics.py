"""Metrics submitter: one Result per attempt, node name, bounded retries (TESTCASES.md §11 adapted)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from image_prefetcher import metrics


@dataclass(frozen=True)
class FakeAttempt:
    image: str
    started_at: float
    duration: float
    error: str | None
    size_bytes: int


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FlakySubmit:
    """Fails the first `failures` calls, like upstream's test RPC that fails to open the stream."""

    def __init__(self, failures: int, clock: FakeClock | None = None, cost: float = 0.0) -> None:
        self.failures = failures
        self.calls: list[tuple[int, float]] = []
        self.clock, self.cost = clock, cost

    async def __call__(self, attempts: Sequence[metrics.Attempt], timeout: float) -> None:
        self.calls.append((len(attempts), timeout))
        if self.clock is not None:
            self.clock.now += self.cost
        if len(self.calls) <= self.failures:
            raise ConnectionError("bam")


def _recorder_with_one() -> metrics.MetricsRecorder:
    recorder = metrics.MetricsRecorder(node="node-a")
    recorder.observe(FakeAttempt("img", 1700000000.9, 1.2349, "bam", 0))
    return recorder


def _submit(submit: FlakySubmit, clock: FakeClock, budget: float) -> str | None:
    return asyncio.run(
        metrics.submit_with_retries(
            _recorder_with_one().attempts,
            submit,
            clock() + budget,
            sleep=clock.sleep,
            rand=lambda: 0.5,
            clock=clock,
        )
    )


def test_simple_submit_is_one_call() -> None:
    clock, submit = FakeClock(), FlakySubmit(0)
    assert _submit(submit, clock, 30) is None
    assert [count for count, _ in submit.calls] == [1]


def test_two_failures_give_three_calls() -> None:
    clock, submit = FakeClock(), FlakySubmit(2)
    assert _submit(submit, clock, 120) is None
    assert len(submit.calls) == 3
    assert clock.sleeps == pytest.approx([10.0, 15.0])  # upstream's 10 s then x1.5 (rand 0.5 = nominal)


def test_short_deadline_gives_up_after_one_call() -> None:
    clock, submit = FakeClock(), FlakySubmit(1000)
    assert _submit(submit, clock, 0.05) == "gave up after 1 call(s): invoking metric Submit RPC failed: bam"
    assert len(submit.calls) == 1
    assert clock.sleeps == []  # the next try (>= 5 s away) would be past the deadline: no sleep into it
    assert submit.calls[0][1] <= 0.05  # the call itself is bounded by the deadline


def test_no_time_left_is_said() -> None:
    clock, submit = FakeClock(), FlakySubmit(0)
    assert _submit(submit, clock, 0) == "gave up after 0 call(s): the deadline passed before the first call"
    assert submit.calls == []


def test_retries_are_bounded_even_with_time_left() -> None:
    clock, submit = FakeClock(), FlakySubmit(1000)
    expected = f"gave up after {metrics.MAX_ATTEMPTS} call(s): invoking metric Submit RPC failed: bam"
    assert _submit(submit, clock, 3600) == expected
    assert len(submit.calls) == metrics.MAX_ATTEMPTS
    assert clock.now - 1000.0 < 3600


def test_never_past_the_deadline_when_calls_are_slow() -> None:
    clock = FakeClock()
    submit = FlakySubmit(1000, clock, cost=15.0)
    assert _submit(submit, clock, 40) is not None
    assert clock.now <= 1000.0 + 40
    assert all(timeout <= 40 for _, timeout in submit.calls)


def test_backoff_shape_is_upstreams_within_bounds() -> None:
    assert metrics.backoff_waits(lambda: 0.5, 7) == pytest.approx([10, 15, 22.5, 33.75, 50.625, 60, 60])
    low, high = metrics.backoff_waits(lambda: 0.0, 2), metrics.backoff_waits(lambda: 1.0, 2)
    assert low == pytest.approx([5, 7.5]) and high == pytest.approx([15, 22.5])


def test_one_result_per_attempt_with_upstreams_fields() -> None:
    recorder = metrics.MetricsRecorder(node="node-a")
    recorder.observe(FakeAttempt("quay.io/a:1", 1700000000.9, 1.2349, None, 5678))
    recorder.observe(FakeAttempt("quay.io/a:1", 1700000002.0, 0.0009, "rpc error: code = Unknown desc = x", 0))
    ok, failed = recorder.attempts
    assert (ok.started_at, ok.duration_ms, ok.size_bytes, ok.error, ok.node) == (1700000000, 1234, 5678, "", "node-a")
    assert (failed.duration_ms, failed.size_bytes, failed.error) == (0, 0, "rpc error: code = Unknown desc = x")
    assert uuid.UUID(ok.attempt_id).version == 4 and ok.attempt_id != failed.attempt_id
    proto = ok.to_proto()
    assert proto.image == "quay.io/a:1" and proto.size_bytes == 5678  # type: ignore[attr-defined]


def test_node_is_node_name_then_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "worker-7")
    assert metrics.MetricsRecorder().node == "worker-7"
    monkeypatch.delenv("NODE_NAME")
    monkeypatch.setattr(metrics.socket, "gethostname", lambda: "pod-abc")
    assert metrics.MetricsRecorder().node == "pod-abc"


def test_grpc_errors_use_gos_form() -> None:
    import grpc

    class Err(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self) -> str:
            return "too slow"

    assert metrics.error_text(Err()) == "rpc error: code = DeadlineExceeded desc = too slow"
    assert metrics.go_code_name("CANCELLED") == "Canceled"
    assert metrics.go_code_name("UNAVAILABLE") == "Unavailable"


def test_unreachable_aggregator_is_not_fatal() -> None:
    """A real gRPC channel to a closed port: logged, False, and within the deadline."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    recorder = _recorder_with_one()
    started = time.monotonic()
    problem = asyncio.run(metrics.submit_metrics(f"127.0.0.1:{port}", recorder, time.monotonic() + 2.0))
    assert problem is not None and problem.startswith("gave up after ")
    assert "rpc error: code = " in problem and "\n" not in problem
    assert time.monotonic() - started < 10
