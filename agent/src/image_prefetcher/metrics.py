"""Pull-attempt metrics: one `Result` per PullImage attempt, submitted to the aggregator at the end of `fetch`.

As upstream (BEHAVIOR.md §6.2-§6.3): Results are buffered in memory during the run and sent in ONE client-streaming
`/Metrics/Submit` call after the pulls, even when there are none; retries use upstream's backoff shape (10 s, times 1.5,
plus or minus 50 %, cap 60 s).

Differences from upstream:
* `node` is `NODE_NAME` (the pod's hostname only as a fallback): upstream reports the pod name.
* Retries are bounded: at most MAX_ATTEMPTS calls, each with its own timeout, and never past the deadline the caller
  gives (the run's overall deadline plus a grace), so an unreachable aggregator cannot hold the run; it is logged
  (ERROR) and never fatal.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from image_prefetcher.logs import get_logger

INITIAL_INTERVAL_S = 10.0
MULTIPLIER = 1.5
RANDOMIZATION = 0.5
MAX_INTERVAL_S = 60.0
MAX_ATTEMPTS = 5
ATTEMPT_TIMEOUT_S = 15.0
# How long the submission may run after the overall deadline (issue 5: overall timeout + 30 s at most).
GRACE_S = 30.0

log = get_logger()

# Go's codes.Code String() names where they differ from a CamelCase of Python's enum names.
_GO_CODE_NAMES = {"OK": "OK", "CANCELLED": "Canceled"}


def go_code_name(code_name: str) -> str:
    """`DEADLINE_EXCEEDED` -> `DeadlineExceeded`, as Go's grpc codes print."""
    return _GO_CODE_NAMES.get(code_name) or "".join(part.capitalize() for part in code_name.split("_"))


def error_text(error: BaseException | str | None) -> str:
    """The Go error form upstream records: `rpc error: code = <Code> desc = <details>` for gRPC errors."""
    if error is None:
        return ""
    if isinstance(error, str):
        return error
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        try:
            status = code()
            return f"rpc error: code = {go_code_name(status.name)} desc = {details() or ''}"
        except Exception:
            pass
    return str(error) or type(error).__name__


def node_name() -> str:
    """`NODE_NAME`, else the host name, else `unknown` (with upstream's WARN)."""
    name = os.environ.get("NODE_NAME", "")
    if name:
        return name
    try:
        return socket.gethostname() or "unknown"
    except OSError as err:
        log.warn("could not obtain hostname", error=str(err))
        return "unknown"


@dataclass(frozen=True)
class Attempt:
    """One PullImage attempt, in the shape of the metrics `Result` message."""

    attempt_id: str
    started_at: int
    image: str
    error: str
    duration_ms: int
    node: str
    size_bytes: int

    def to_proto(self) -> object:
        from image_prefetcher._proto import metrics_pb2

        return metrics_pb2.Result(
            attempt_id=self.attempt_id,
            started_at=self.started_at,
            image=self.image,
            error=self.error,
            duration_ms=self.duration_ms,
            node=self.node,
            size_bytes=self.size_bytes,
        )


def backoff_waits(rand: Callable[[], float] = random.random, count: int = MAX_ATTEMPTS - 1) -> list[float]:
    """Waits between attempts: cenkalti/backoff's ExponentialBackOff with upstream's settings, `count` of them."""
    waits, interval = [], INITIAL_INTERVAL_S
    for _ in range(count):
        delta = RANDOMIZATION * interval
        waits.append(interval - delta + rand() * 2 * delta)
        interval = min(interval * MULTIPLIER, MAX_INTERVAL_S)
    return waits


class PullAttemptLike(Protocol):
    """What the engine reports per attempt (engine.PullAttempt): times in seconds, error in Go form or None."""

    @property
    def image(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def error(self) -> BaseException | str | None: ...
    @property
    def size_bytes(self) -> int: ...


SubmitFn = Callable[[Sequence[Attempt], float], Awaitable[None]]


@dataclass
class MetricsRecorder:
    """Buffers one Attempt per pull attempt; `observe` is the engine's attempt observer."""

    node: str = field(default_factory=node_name)
    attempts: list[Attempt] = field(default_factory=list)

    def observe(self, attempt: PullAttemptLike) -> None:
        """The engine's attempt observer: one Result per PullImage call, success or failure."""
        failed = attempt.error is not None
        self.attempts.append(
            Attempt(
                attempt_id=str(uuid.uuid4()),
                started_at=int(attempt.started_at),
                image=attempt.image,
                error=error_text(attempt.error) if failed else "",
                duration_ms=max(0, int(attempt.duration * 1000)),
                node=self.node,
                size_bytes=0 if failed else max(0, int(attempt.size_bytes or 0)),
            )
        )
        log.debug("metric received", image=attempt.image, error=self.attempts[-1].error)


def grpc_submit(endpoint: str) -> tuple[SubmitFn, Callable[[], Awaitable[None]]]:
    """A Submit function over one lazily connected plaintext channel to `endpoint` (host:port), plus its closer."""
    import grpc

    from image_prefetcher._proto import metrics_pb2_grpc

    channel = grpc.aio.insecure_channel(endpoint)
    stub = metrics_pb2_grpc.MetricsStub(channel)

    async def submit(attempts: Sequence[Attempt], timeout: float) -> None:
        await stub.Submit(iter([a.to_proto() for a in attempts]), timeout=timeout)

    async def close() -> None:
        await channel.close()

    return submit, close


async def submit_with_retries(
    attempts: Sequence[Attempt],
    submit: SubmitFn,
    deadline: float,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    attempt_timeout: float = ATTEMPT_TIMEOUT_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Submit all attempts in one call, retrying; never past `deadline` (a `clock()` value).

    None once submitted, else why not in one line (for the termination summary's `warnings`).
    """
    waits = backoff_waits(rand, max(0, max_attempts - 1))
    calls, reason = 0, "the deadline passed before the first call"
    for number in range(max_attempts):
        remaining = deadline - clock()
        if remaining <= 0:
            break
        calls += 1
        try:
            await submit(attempts, min(attempt_timeout, remaining))
        except Exception as err:
            reason = f"invoking metric Submit RPC failed: {error_text(err)}"
            log.error("metric Submit RPC failed, retrying", error=reason)
        else:
            log.info("metrics submitted", count=len(attempts))
            return None
        if number + 1 >= max_attempts:
            break
        wait = waits[number]
        if clock() + wait >= deadline:
            break  # the next try would start after the deadline: give up now instead of sleeping into it
        await sleep(wait)
    log.error("giving up retrying metrics submission", error="attempts exhausted or deadline reached")
    return f"gave up after {calls} call(s): {' '.join(reason.split())}"


async def submit_metrics(
    endpoint: str, recorder: MetricsRecorder, deadline: float, submit: SubmitFn | None = None
) -> str | None:
    """The post-run step: send the recorder's attempts to `endpoint` before `deadline` (time.monotonic); None once
    sent, else why not (one line)."""
    log.info("waiting for metrics to be submitted")
    if submit is not None:
        return await submit_with_retries(recorder.attempts, submit, deadline)
    try:
        grpc_fn, close = grpc_submit(endpoint)
    except Exception as err:
        reason = f"failed to dial metrics endpoint {endpoint!r}: {err}"
        log.error("giving up retrying metrics submission", error=reason)
        return " ".join(reason.split())
    try:
        return await submit_with_retries(recorder.attempts, grpc_fn, deadline)
    finally:
        await close()
