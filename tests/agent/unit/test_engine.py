"""The pull engine against fake runtimes: retries, deadlines, credentials, cancellation, the reason rule.

Most tests run in-process on a virtual clock (`virtualclock.run_virtual`): delays, attempt timeouts and the overall
deadline pass in a fixed order whatever the machine's speed, so their assertions can be exact. The few that need
real RPCs (gRPC enforcing a deadline, a cancellation reaching the server) use the gRPC fake in real time and only
assert bounds taken from their own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakecri import HANG, OK, Action, FakeCri, FakeImageService, ScriptedImages, fail, unauthorized
from virtualclock import run_virtual

from image_prefetcher.cri import CriClient
from image_prefetcher.engine import Deadline, ImageService, PullAttempt, PullEngine, PullSettings
from image_prefetcher.keyring import Credential
from image_prefetcher.logs import configure_logging
from image_prefetcher.metrics import MetricsRecorder
from image_prefetcher.summary import RunReport, build_summary

INVALID_REF = (
    'failed to pull and unpack image "Bad:x:y": failed to parse image reference "Bad:x:y": invalid reference format'
)
NOT_FOUND = 'failed to resolve reference "r/missing:v1": r/missing:v1: not found'


class StaticCredentials:
    def __init__(self, creds: dict[str, list[Credential]] | None = None) -> None:
        self.creds = creds or {}

    async def credentials_for(self, image: str) -> list[Credential]:
        return list(self.creds.get(image, []))


def fast_settings(**overrides: Any) -> PullSettings:
    values: dict[str, Any] = dict(
        initial_attempt_timeout=5.0, max_attempt_timeout=5.0, initial_delay=0.05, max_delay=0.1
    )
    values.update(overrides)
    return PullSettings(**values)


Prepare = Callable[[ScriptedImages], None]


@contextlib.asynccontextmanager
async def grpc_runtime(tmp_path: Path, prepare: Prepare) -> AsyncIterator[tuple[ScriptedImages, ImageService]]:
    """The script served by a real gRPC server on a UNIX socket, reached through the agent's CriClient."""
    fake = FakeCri(tmp_path / "cri.sock")
    prepare(fake)
    async with fake:
        client = CriClient(str(fake.socket_path))
        try:
            yield fake, client
        finally:
            await client.close()


@contextlib.asynccontextmanager
async def inprocess_runtime(_tmp_path: Path, prepare: Prepare) -> AsyncIterator[tuple[ScriptedImages, ImageService]]:
    """The script played in-process (no gRPC): with run_virtual, every timeout passes on the virtual clock."""
    fake = FakeImageService()
    prepare(fake)
    yield fake, fake


def run_engine(
    tmp_path: Path,
    prepare: Prepare,
    images: list[str],
    settings: PullSettings,
    overall: float = 20.0,
    creds: dict[str, list[Credential]] | None = None,
    during: Callable[[ScriptedImages, asyncio.Task[Any]], Awaitable[None]] | None = None,
    virtual: bool = True,
) -> tuple[PullEngine, ScriptedImages, list[PullAttempt], str]:
    """Runs the engine against a fake runtime: in-process on a virtual clock (default; the outcome cannot depend on
    machine speed), or with `virtual=False` over real gRPC in real time (for what only real RPCs show)."""
    log_stream = io.StringIO()
    observed: list[PullAttempt] = []
    runtime = inprocess_runtime if virtual else grpc_runtime

    async def scenario() -> tuple[PullEngine, ScriptedImages]:
        async with runtime(tmp_path, prepare) as (fake, client):
            engine = PullEngine(
                client,
                settings,
                StaticCredentials(creds),
                configure_logging(True, "text", log_stream),
                [observed.append],
            )
            task = asyncio.ensure_future(engine.run(images, Deadline(overall)))
            if during is not None:
                await during(fake, task)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return engine, fake

    if virtual:
        engine, fake = run_virtual(scenario())
    else:
        engine, fake = asyncio.run(asyncio.wait_for(scenario(), 60))
    return engine, fake, observed, log_stream.getvalue()


def final_line(log: str, image: str) -> str:
    """The engine's last line for an image: `not retrying any more`."""
    (line,) = [ln for ln in log.splitlines() if 'msg="not retrying any more"' in ln and f"image={image}" in ln]
    return line


def summary_errors(engine: PullEngine) -> dict[str, str]:
    report = RunReport("node-1", engine.results, engine.attempts, 1.0, complete=False)
    errors: dict[str, str] = json.loads(build_summary(report))["errors"]
    return errors


# --- real gRPC, real time ------------------------------------------------------------------------------------------


def test_transient_errors_are_retried_until_success(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/app:v1"] = [
            fail(grpc.StatusCode.UNAVAILABLE, "connection error"),
            fail(grpc.StatusCode.UNKNOWN, "unexpected status: 500 Internal Server Error"),
            OK,
        ]

    # 60 s attempts: nothing here stalls, so no attempt can time out on a slow machine and add a retry.
    settings = fast_settings(initial_attempt_timeout=60.0, max_attempt_timeout=60.0)
    engine, fake, observed, log = run_engine(tmp_path, prepare, ["r/app:v1"], settings, overall=120, virtual=False)
    result = engine.results["r/app:v1"]
    assert (result.outcome, result.attempts, result.size_bytes) == ("ok", 3, 1234)
    assert [a.error for a in observed][:2] == [
        "rpc error: code = Unavailable desc = connection error",
        "rpc error: code = Unknown desc = unexpected status: 500 Internal Server Error",
    ]
    assert observed[2].error is None and observed[2].size_bytes == 1234
    gaps = [b.started - a.ended for a, b in zip(fake.calls, fake.calls[1:]) if a.ended is not None]
    assert gaps[0] >= 0.05 * 0.9 and gaps[1] >= 0.1 * 0.9  # the delay doubles; a sleep never ends early
    assert log.count("sleeping before retry") == 2


def test_overall_timeout_cuts_a_hanging_attempt_over_grpc(tmp_path: Path) -> None:
    """gRPC itself enforces the cut RPC deadline: the 30 s attempt ends at the 1 s overall deadline."""

    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/stall:v1"] = [HANG]

    attempt_timeout, overall = 30.0, 1.0
    started = time.monotonic()
    engine, _fake, observed, _ = run_engine(
        tmp_path,
        prepare,
        ["r/stall:v1"],
        fast_settings(initial_attempt_timeout=attempt_timeout, max_attempt_timeout=attempt_timeout),
        overall=overall,
        virtual=False,
    )
    elapsed = time.monotonic() - started
    result = engine.results["r/stall:v1"]
    assert result.outcome == "failed" and result.ended_by_deadline and result.attempts == 1
    assert observed[0].error is not None and "DeadlineExceeded" in observed[0].error and observed[0].cut_by_deadline
    assert result.reason() == "timeout: Deadline Exceeded (the overall timeout ended attempt 1)"
    assert overall * 0.9 <= elapsed < attempt_timeout  # ended by the overall deadline, not the attempt timeout


def test_cancelling_the_run_cancels_the_rpcs(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/stall:v1"] = [HANG]

    async def cancel_when_pulling(fake: ScriptedImages, task: asyncio.Task[Any]) -> None:
        while not fake.calls:
            await asyncio.sleep(0.02)
        task.cancel()
        # The server learns about the cancellation a moment later: wait for it (bounded far above any delay).
        for _ in range(1500):
            if fake.calls[0].cancelled:
                break
            await asyncio.sleep(0.02)

    engine, fake, _, _ = run_engine(
        tmp_path,
        prepare,
        ["r/stall:v1"],
        fast_settings(initial_attempt_timeout=30.0),
        during=cancel_when_pulling,
        virtual=False,
    )
    assert fake.calls[0].cancelled
    assert engine.results["r/stall:v1"].outcome == "pending"


# --- in-process, virtual clock -------------------------------------------------------------------------------------


def test_delays_double_up_to_their_cap(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/app:v1"] = [fail(grpc.StatusCode.UNAVAILABLE, "connection error")] * 3 + [OK]

    engine, fake, _, log = run_engine(tmp_path, prepare, ["r/app:v1"], fast_settings())
    assert engine.results["r/app:v1"].attempts == 4
    gaps = [b.started - a.started for a, b in zip(fake.calls, fake.calls[1:])]
    assert gaps == pytest.approx([0.05, 0.1, 0.1])  # 0.05 s doubled, capped at 0.1 s; failures take no time here
    assert log.count("sleeping before retry") == 3


def test_invalid_reference_fails_at_once(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["Bad:x:y"] = [fail(grpc.StatusCode.UNKNOWN, INVALID_REF)]

    engine, fake, _, log = run_engine(tmp_path, prepare, ["Bad:x:y"], fast_settings())
    result = engine.results["Bad:x:y"]
    assert (result.outcome, result.attempts, len(fake.calls)) == ("failed", 1, 1)
    assert result.reason().startswith("invalid_reference: failed to pull")
    assert not result.ended_by_deadline
    line = final_line(log, "Bad:x:y")
    assert "invalid reference format" in line and "overallTimeoutReached" not in line


def test_not_found_fail_mode_is_final(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/missing:v1"] = [fail(grpc.StatusCode.NOT_FOUND, NOT_FOUND)]

    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/missing:v1"], fast_settings(not_found_fails=True))
    assert (engine.results["r/missing:v1"].outcome, len(fake.calls)) == ("failed", 1)


def test_not_found_is_retried_by_default_until_the_deadline(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/missing:v1"] = [fail(grpc.StatusCode.NOT_FOUND, NOT_FOUND)]

    engine, fake, _, log = run_engine(tmp_path, prepare, ["r/missing:v1"], fast_settings(), overall=1.0)
    result = engine.results["r/missing:v1"]
    assert result.outcome == "failed" and result.ended_by_deadline
    # attempts at 0, 0.05, 0.15, ... 0.95; then only 0.05 s are left, not more than the 0.1 s delay: no more
    starts = [c.started - fake.calls[0].started for c in fake.calls]
    assert starts == pytest.approx([0.0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95])
    assert result.reason() == f"not_found: {NOT_FOUND}"  # the last attempt was not cut: no note
    line = final_line(log, "r/missing:v1")
    assert "code = NotFound desc = failed to resolve" in line and "overallTimeoutReached=true" in line


def test_attempt_timeout_doubles_after_a_stall(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/slow:v1"] = [HANG, HANG, OK]

    engine, fake, observed, log = run_engine(
        tmp_path, prepare, ["r/slow:v1"], fast_settings(initial_attempt_timeout=0.2, max_attempt_timeout=0.3)
    )
    assert engine.results["r/slow:v1"].outcome == "ok"
    assert [c.timeout for c in fake.calls] == pytest.approx([0.2, 0.3, 0.3])  # 0.2 s, then min(0.4, 0.3) s
    assert [a.duration for a in observed[:2]] == pytest.approx([0.2, 0.3])
    assert not any(a.cut_by_deadline for a in observed)  # ended by their own attempt timeout, not the deadline
    assert "timeout=200ms" in log and "timeout=300ms" in log


def test_credentials_are_tried_one_after_another(tmp_path: Path) -> None:
    image = "registry.test:5000/private/app:v1"
    creds = {
        image: [
            Credential("stale", "old-secret", "registry.test:5000"),
            Credential("good", "s3cret", "registry.test:5000"),
        ]
    }

    def prepare(fake: ScriptedImages) -> None:
        fake.required_login[image] = ("good", "s3cret")
        fake.scripts[image] = [Action(delay=0.2)]

    engine, fake, observed, log = run_engine(tmp_path, prepare, [image], fast_settings(), creds=creds)
    assert engine.results[image].outcome == "ok"
    assert [c.username for c in fake.calls] == ["stale", "good"]
    assert fake.calls[0].ended is not None and fake.calls[1].started >= fake.calls[0].ended  # never in parallel
    assert fake.max_active == 1
    assert [a.credential_index for a in observed] == [0, 1]
    assert "old-secret" not in log and "s3cret" not in log
    assert "authUsername=stale" in log


def test_all_credentials_refused_then_retried_from_the_first(tmp_path: Path) -> None:
    image = "registry.test:5000/private/app:v1"
    creds = {image: [Credential("a", "pa"), Credential("b", "pb")]}

    def prepare(fake: ScriptedImages) -> None:
        fake.required_login[image] = ("nobody", "x")

    engine, fake, _, _ = run_engine(tmp_path, prepare, [image], fast_settings(), overall=0.6, creds=creds)
    assert engine.results[image].outcome == "failed"
    # rounds at 0, 0.05, 0.15, ... 0.55, each trying a then b at once; then 0.05 s are left, not more than the 0.1 s
    # delay: no eighth round. The last attempt is a refusal, never a cut (that case is the next test).
    assert [c.username for c in fake.calls] == ["a", "b"] * 7
    assert engine.results[image].reason() == f"unauthorized: {unauthorized(image)}"


def test_the_reason_survives_the_overall_timeout(tmp_path: Path) -> None:
    """Issue 10: three 401s, then an attempt that only the overall deadline ends. The summary, the final log line
    and that attempt's metric name the 401 and the cut, not `Deadline Exceeded`."""
    image = "registry.test:5000/private/app:v1"
    refused = fail(grpc.StatusCode.UNKNOWN, unauthorized(image))

    def prepare(fake: ScriptedImages) -> None:
        fake.scripts[image] = [refused, refused, refused, HANG]

    recorder = MetricsRecorder(node="node-1")
    settings = fast_settings(initial_attempt_timeout=30.0, max_attempt_timeout=30.0)
    engine, fake, observed, log = run_engine(tmp_path, prepare, [image], settings, overall=1.0)
    for attempt in observed:
        recorder.observe(attempt)

    result = engine.results[image]
    assert (result.outcome, result.attempts, result.ended_by_deadline) == ("failed", 4, True)
    assert fake.calls[3].timeout == pytest.approx(1.0 - 0.25) and fake.calls[3].cancelled  # cut at the deadline
    expected = f"unauthorized: {unauthorized(image)} (the overall timeout ended attempt 4)"
    assert result.reason() == expected
    assert summary_errors(engine) == {image: expected}
    go_error = f"rpc error: code = Unknown desc = {unauthorized(image)}"
    assert [a.error for a in observed] == [go_error] * 3 + [f"{go_error} (the overall timeout ended attempt 4)"]
    assert [a.cut_by_deadline for a in observed] == [False, False, False, True]
    assert [a.error for a in recorder.attempts] == [a.error for a in observed]
    line = final_line(log, image)
    assert "401 Unauthorized (the overall timeout ended attempt 4)" in line and "overallTimeoutReached=true" in line
    assert "Deadline Exceeded" not in line
    # the attempt's own line still says what happened to it
    assert log.count("code = DeadlineExceeded desc = Deadline Exceeded") == 1


def test_only_an_image_whose_every_attempt_timed_out_is_a_timeout(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/stall:v1"] = [HANG]

    # 0.3 s attempts: two end by their own timeout (real timeouts), the third (0.25 s left) by the overall deadline.
    settings = fast_settings(initial_attempt_timeout=0.3, max_attempt_timeout=0.3)
    engine, fake, observed, log = run_engine(tmp_path, prepare, ["r/stall:v1"], settings, overall=1.0)
    result = engine.results["r/stall:v1"]
    assert [c.timeout for c in fake.calls] == pytest.approx([0.3, 0.3, 0.25])
    assert [a.cut_by_deadline for a in observed] == [False, False, True]
    assert result.reason() == "timeout: Deadline Exceeded (the overall timeout ended attempt 3)"
    assert "overallTimeoutReached=true" in final_line(log, "r/stall:v1")


def test_a_real_error_in_the_last_attempt_is_the_reason(tmp_path: Path) -> None:
    """An attempt whose RPC deadline was cut but that failed for another reason is not a cut: it is the reason."""

    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/app:v1"] = [
            fail(grpc.StatusCode.UNKNOWN, unauthorized("r/app:v1")),
            fail(grpc.StatusCode.UNAVAILABLE, "connection refused"),
        ]

    settings = fast_settings(initial_attempt_timeout=30.0, max_attempt_timeout=30.0, initial_delay=0.5)
    engine, _fake, observed, _ = run_engine(tmp_path, prepare, ["r/app:v1"], settings, overall=0.8)
    assert engine.results["r/app:v1"].reason() == "unavailable: connection refused"
    assert not any(a.cut_by_deadline for a in observed)


def test_no_attempt_before_the_deadline_is_a_timeout(tmp_path: Path) -> None:
    class SlowCredentials(StaticCredentials):
        async def credentials_for(self, image: str) -> list[Credential]:
            await asyncio.sleep(60)  # longer than the overall timeout: the lookup is given up
            return []

    async def scenario() -> PullEngine:
        engine = PullEngine(FakeImageService(), fast_settings(), SlowCredentials(), configure_logging(False))
        await engine.run(["r/app:v1"], Deadline(1.0))
        return engine

    result = run_virtual(scenario()).results["r/app:v1"]
    assert (result.outcome, result.attempts, result.ended_by_deadline) == ("failed", 0, True)
    assert result.reason() == "timeout: the overall timeout passed before the pull could start"


def test_anonymous_attempt_only_without_credentials(tmp_path: Path) -> None:
    engine, fake, _, _ = run_engine(tmp_path, lambda fake: None, ["nginx"], fast_settings())
    assert [(c.username, c.password) for c in fake.calls] == [("", "")]
    assert engine.results["nginx"].outcome == "ok"


def test_duplicates_are_pulled_once_and_parallelism_is_bounded(tmp_path: Path) -> None:
    images = [f"r/img{i}:v1" for i in range(5)]

    def prepare(fake: ScriptedImages) -> None:
        for image in images:
            fake.scripts[image] = [Action(delay=0.2)]

    engine, fake, _, _ = run_engine(tmp_path, prepare, images + images[:2], fast_settings(max_parallel_pulls=2))
    assert sorted(c.image for c in fake.calls) == sorted(images)
    assert fake.max_active == 2
    assert list(engine.results) == images
    starts = sorted(c.started - fake.calls[0].started for c in fake.calls)
    assert starts == pytest.approx([0.0, 0.0, 0.2, 0.2, 0.4])  # two at a time, the next as soon as one ends


def test_unbounded_parallelism_pulls_all_at_once(tmp_path: Path) -> None:
    images = [f"r/img{i}:v1" for i in range(4)]

    def prepare(fake: ScriptedImages) -> None:
        for image in images:
            fake.scripts[image] = [Action(delay=0.3)]

    run = run_engine(tmp_path, prepare, images, fast_settings())
    assert run[1].max_active == 4


def test_if_not_present_skips_present_images_without_pulling(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.present.add("r/here:v1")

    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/here:v1", "r/new:v1"], fast_settings(if_not_present=True))
    assert engine.results["r/here:v1"].outcome == "skipped"
    assert engine.results["r/new:v1"].outcome == "ok"
    assert [c.image for c in fake.calls] == ["r/new:v1"]


def test_zero_delay_retries_immediately(tmp_path: Path) -> None:
    delay = 0.0

    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["r/app:v1"] = [fail(grpc.StatusCode.UNAVAILABLE, "x"), OK]

    settings = fast_settings(initial_delay=delay, max_delay=delay)
    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/app:v1"], settings)
    assert engine.results["r/app:v1"].attempts == 2
    assert fake.calls[1].started == fake.calls[0].started  # no time passed between them
