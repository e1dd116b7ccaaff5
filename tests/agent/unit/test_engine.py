"""The pull engine against the in-process fake CRI server: retries, deadlines, credentials, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from fakecri import HANG, OK, Action, FakeCri, fail

from image_prefetcher.cri import CriClient
from image_prefetcher.engine import Deadline, PullAttempt, PullEngine, PullSettings
from image_prefetcher.keyring import Credential
from image_prefetcher.logs import configure_logging

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


def run_engine(
    tmp_path: Path,
    prepare: Callable[[FakeCri], None],
    images: list[str],
    settings: PullSettings,
    overall: float = 20.0,
    creds: dict[str, list[Credential]] | None = None,
    during: Callable[[FakeCri, asyncio.Task[Any]], Awaitable[None]] | None = None,
) -> tuple[PullEngine, FakeCri, list[PullAttempt], str]:
    log_stream = io.StringIO()
    observed: list[PullAttempt] = []

    async def scenario() -> tuple[PullEngine, FakeCri]:
        fake = FakeCri(tmp_path / "cri.sock")
        prepare(fake)
        async with fake:
            client = CriClient(str(fake.socket_path))
            engine = PullEngine(
                client,
                settings,
                StaticCredentials(creds),
                configure_logging(True, "text", log_stream),
                [observed.append],
            )
            try:
                task = asyncio.ensure_future(engine.run(images, Deadline(overall)))
                if during is not None:
                    await during(fake, task)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                await client.close()
        return engine, fake

    engine, fake = asyncio.run(asyncio.wait_for(scenario(), 60))
    return engine, fake, observed, log_stream.getvalue()


def test_transient_errors_are_retried_until_success(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/app:v1"] = [
            fail(grpc.StatusCode.UNAVAILABLE, "connection error"),
            fail(grpc.StatusCode.UNKNOWN, "unexpected status: 500 Internal Server Error"),
            OK,
        ]

    engine, fake, observed, log = run_engine(tmp_path, prepare, ["r/app:v1"], fast_settings())
    result = engine.results["r/app:v1"]
    assert (result.outcome, result.attempts, result.size_bytes) == ("ok", 3, 1234)
    assert [a.error for a in observed][:2] == [
        "rpc error: code = Unavailable desc = connection error",
        "rpc error: code = Unknown desc = unexpected status: 500 Internal Server Error",
    ]
    assert observed[2].error is None and observed[2].size_bytes == 1234
    gaps = [b.started - a.ended for a, b in zip(fake.calls, fake.calls[1:]) if a.ended is not None]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # the delay doubles (0.05 s, then 0.1 s)
    assert log.count("sleeping before retry") == 2


def test_invalid_reference_fails_at_once(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["Bad:x:y"] = [fail(grpc.StatusCode.UNKNOWN, INVALID_REF)]

    engine, fake, _, _ = run_engine(tmp_path, prepare, ["Bad:x:y"], fast_settings())
    result = engine.results["Bad:x:y"]
    assert (result.outcome, result.attempts, len(fake.calls)) == ("failed", 1, 1)
    assert result.reason().startswith("invalid_reference: failed to pull")
    assert not result.ended_by_deadline


def test_not_found_fail_mode_is_final(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/missing:v1"] = [fail(grpc.StatusCode.NOT_FOUND, NOT_FOUND)]

    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/missing:v1"], fast_settings(not_found_fails=True))
    assert (engine.results["r/missing:v1"].outcome, len(fake.calls)) == ("failed", 1)


def test_not_found_is_retried_by_default_until_the_deadline(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/missing:v1"] = [fail(grpc.StatusCode.NOT_FOUND, NOT_FOUND)]

    started = time.monotonic()
    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/missing:v1"], fast_settings(), overall=1.0)
    result = engine.results["r/missing:v1"]
    assert result.outcome == "failed" and result.ended_by_deadline
    assert len(fake.calls) >= 3
    assert result.reason().startswith("not_found: ")
    assert time.monotonic() - started < 1.0 + 10


def test_overall_timeout_cuts_a_hanging_attempt(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/stall:v1"] = [HANG]

    started = time.monotonic()
    engine, _fake, observed, _ = run_engine(
        tmp_path,
        prepare,
        ["r/stall:v1"],
        fast_settings(initial_attempt_timeout=30.0, max_attempt_timeout=60.0),
        overall=1.0,
    )
    elapsed = time.monotonic() - started
    result = engine.results["r/stall:v1"]
    assert result.outcome == "failed" and result.ended_by_deadline and result.attempts == 1
    assert observed[0].error is not None and "DeadlineExceeded" in observed[0].error
    assert 0.9 <= elapsed < 1.0 + 10  # the 30 s attempt timeout is cut by the 1 s overall timeout


def test_attempt_timeout_doubles_after_a_stall(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/slow:v1"] = [HANG, HANG, OK]

    engine, _fake, observed, log = run_engine(
        tmp_path, prepare, ["r/slow:v1"], fast_settings(initial_attempt_timeout=0.2, max_attempt_timeout=0.3)
    )
    assert engine.results["r/slow:v1"].outcome == "ok"
    durations = [a.duration for a in observed[:2]]
    assert 0.15 <= durations[0] < 0.3 <= durations[1] + 0.05  # 0.2 s, then min(0.4, 0.3) s
    assert "timeout=200ms" in log and "timeout=300ms" in log


def test_credentials_are_tried_one_after_another(tmp_path: Path) -> None:
    image = "registry.test:5000/private/app:v1"
    creds = {
        image: [
            Credential("stale", "old-secret", "registry.test:5000"),
            Credential("good", "s3cret", "registry.test:5000"),
        ]
    }

    def prepare(fake: FakeCri) -> None:
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

    def prepare(fake: FakeCri) -> None:
        fake.required_login[image] = ("nobody", "x")

    engine, fake, _, _ = run_engine(tmp_path, prepare, [image], fast_settings(), overall=0.6, creds=creds)
    assert engine.results[image].outcome == "failed"
    users = [c.username for c in fake.calls]
    assert users[:4] == ["a", "b", "a", "b"]
    assert engine.results[image].reason().startswith("unauthorized: ")


def test_anonymous_attempt_only_without_credentials(tmp_path: Path) -> None:
    engine, fake, _, _ = run_engine(tmp_path, lambda fake: None, ["nginx"], fast_settings())
    assert [(c.username, c.password) for c in fake.calls] == [("", "")]
    assert engine.results["nginx"].outcome == "ok"


def test_duplicates_are_pulled_once_and_parallelism_is_bounded(tmp_path: Path) -> None:
    images = [f"r/img{i}:v1" for i in range(5)]

    def prepare(fake: FakeCri) -> None:
        for image in images:
            fake.scripts[image] = [Action(delay=0.2)]

    engine, fake, _, _ = run_engine(tmp_path, prepare, images + images[:2], fast_settings(max_parallel_pulls=2))
    assert sorted(c.image for c in fake.calls) == sorted(images)
    assert fake.max_active == 2
    assert list(engine.results) == images


def test_unbounded_parallelism_pulls_all_at_once(tmp_path: Path) -> None:
    images = [f"r/img{i}:v1" for i in range(4)]

    def prepare(fake: FakeCri) -> None:
        for image in images:
            fake.scripts[image] = [Action(delay=0.3)]

    run = run_engine(tmp_path, prepare, images, fast_settings())
    assert run[1].max_active == 4


def test_if_not_present_skips_present_images_without_pulling(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.present.add("r/here:v1")

    engine, fake, _, _ = run_engine(tmp_path, prepare, ["r/here:v1", "r/new:v1"], fast_settings(if_not_present=True))
    assert engine.results["r/here:v1"].outcome == "skipped"
    assert engine.results["r/new:v1"].outcome == "ok"
    assert [c.image for c in fake.calls] == ["r/new:v1"]


def test_cancelling_the_run_cancels_the_rpcs(tmp_path: Path) -> None:
    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/stall:v1"] = [HANG]

    async def cancel_when_pulling(fake: FakeCri, task: asyncio.Task[Any]) -> None:
        while not fake.calls:
            await asyncio.sleep(0.02)
        task.cancel()
        for _ in range(100):  # the server side learns about the cancellation shortly after
            if fake.calls[0].cancelled:
                break
            await asyncio.sleep(0.02)

    engine, fake, _, _ = run_engine(
        tmp_path, prepare, ["r/stall:v1"], fast_settings(initial_attempt_timeout=30.0), during=cancel_when_pulling
    )
    assert fake.calls[0].cancelled
    assert engine.results["r/stall:v1"].outcome == "pending"


def test_zero_delay_retries_immediately(tmp_path: Path) -> None:
    delay = 0.0

    def prepare(fake: FakeCri) -> None:
        fake.scripts["r/app:v1"] = [fail(grpc.StatusCode.UNAVAILABLE, "x"), OK]

    engine, _, _, _ = run_engine(tmp_path, prepare, ["r/app:v1"], fast_settings(initial_delay=delay, max_delay=delay))
    assert engine.results["r/app:v1"].attempts == 2
