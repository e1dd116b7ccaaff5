"""The pull engine: every image in parallel over one CRI channel, each with its own escalating retry loop.

Per image (BEHAVIOR.md §2.3, with the §10 quirks fixed):
* credentials are tried one after another in keyring order, never in parallel; the first success ends the image;
  a refused credential (unauthorized, or NOT_FOUND from a registry hiding private repositories) gives way to the
  next one at once; with no credential at all there is one anonymous attempt stream;
* each failed round sleeps a delay; attempt timeout and delay double up to their caps (`retry_schedule`);
* the overall deadline is hard: every RPC deadline is min(attempt timeout, time left), a delay that would end past
  the deadline is not slept (the image gives up at once), so pulls end by the deadline;
* the reason survives the deadline: an attempt that ran out of time only because the overall deadline cut its RPC
  deadline does not replace the image's earlier real errors (`classify.final_failure`, DESIGN.md); the summary,
  the final log line and that attempt's metric all name the last real error plus the cut.

Seam for metrics (issue 5): `AttemptObserver`s are called once per PullImage attempt with a `PullAttempt`.
Durations and deadlines are measured on the event loop's clock (time.monotonic on the default loop), so tests can
run the engine on a virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import grpc.aio

from image_prefetcher._proto import cri_pb2
from image_prefetcher.classify import Action, AttemptRecord, ErrorClass, PullError, decide, final_failure, redact
from image_prefetcher.credentials import CredentialSource
from image_prefetcher.cri import rpc_error
from image_prefetcher.keyring import Credential
from image_prefetcher.logs import Logger, Seconds
from image_prefetcher.ratelimit import RegistryGates, Ticket, host_of, rate_limit_pause
from image_prefetcher.retry import retry_schedule

Outcome = Literal["pending", "ok", "failed", "skipped"]
STATUS_TIMEOUT_SECONDS = 60.0
SIZE_STATUS_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class PullSettings:
    """Engine settings in seconds (the CLI converts from Go durations)."""

    initial_attempt_timeout: float
    max_attempt_timeout: float
    initial_delay: float
    max_delay: float
    max_parallel_pulls: int = 0
    if_not_present: bool = False
    not_found_fails: bool = False


@dataclass(frozen=True)
class PullAttempt:
    """One PullImage call, as reported to observers (metrics)."""

    image: str
    started_at: float  # Unix time in seconds when the call started
    duration: float  # seconds the PullImage call took
    error: str | None  # Go-form gRPC error text, None on success
    size_bytes: int  # ImageStatus size after a success, else 0
    credential_index: int  # authNum: position in the image's credential list
    # When the overall deadline cut this attempt, `error` is the image's reason instead (the last real error plus
    # "(the overall timeout ended attempt N)"), so the metrics tell the same story as the summary.
    cut_by_deadline: bool = False


AttemptObserver = Callable[[PullAttempt], None]


class ImageService(Protocol):
    """What the engine needs of the CRI client (`cri.CriClient`; the unit tests pass an in-process fake)."""

    async def pull_image(self, image: str, credential: Credential | None, timeout: float) -> str: ...

    async def image_status(self, image: str, timeout: float) -> cri_pb2.Image | None: ...


@dataclass
class ImageResult:
    image: str
    outcome: Outcome = "pending"
    attempts: int = 0
    size_bytes: int = 0
    image_ref: str = ""
    # A failure outside the attempts (internal error, CRI not answering, interruption); it wins over `history`.
    error: PullError | None = None
    ended_by_deadline: bool = False
    history: list[AttemptRecord] = field(default_factory=list)  # every PullImage attempt, in order
    # For progress reports (progress.py): when the image's first PullImage attempt started (Unix time, None before
    # it), and the number (1-based, counted like `attempts`) of the attempt whose PullImage call is in flight now,
    # 0 while none is (waiting for a slot or a gate, sleeping between retries, asking ImageStatus, or ended).
    first_attempt_at: float | None = None
    in_flight: int = 0

    def reason(self) -> str:
        """Short `<class>: <detail>` for the summary (only meaningful for failed images)."""
        if self.error is not None:
            return self.error.short_reason()
        failure = final_failure(self.history)
        if failure is not None:
            return failure.short_reason()
        if self.outcome == "pending":
            return "cancelled: the run was interrupted before this image finished"
        return "timeout: the overall timeout passed before the pull could start"


def _now() -> float:
    return asyncio.get_running_loop().time()


class Deadline:
    """An absolute point on the event loop's clock."""

    def __init__(self, seconds_from_now: float) -> None:
        self.when = _now() + seconds_from_now

    def remaining(self) -> float:
        return self.when - _now()


@dataclass
class _Success:
    image_ref: str
    size_bytes: int


@dataclass
class PullEngine:
    cri: ImageService | None  # None only when there is nothing to pull
    settings: PullSettings
    credentials: CredentialSource
    log: Logger
    observers: Sequence[AttemptObserver] = ()
    results: dict[str, ImageResult] = field(default_factory=dict)
    attempts: int = 0
    gates: RegistryGates = field(default_factory=RegistryGates)  # per registry host, shared by every image

    @property
    def _client(self) -> ImageService:
        if self.cri is None:
            raise RuntimeError("pulling images needs a CRI client")
        return self.cri

    async def run(self, images: Sequence[str], deadline: Deadline) -> dict[str, ImageResult]:
        """Pull each unique image (list order kept in `results`); returns when every image has ended."""
        todo = [self.results.setdefault(image, ImageResult(image)) for image in dict.fromkeys(images)]
        limit = self.settings.max_parallel_pulls
        slots: asyncio.Semaphore | None = asyncio.Semaphore(limit) if limit > 0 else None
        await asyncio.gather(*(self._pull_image_safely(result, deadline, slots) for result in todo))
        return self.results

    async def all_present(self, images: Sequence[str], deadline: Deadline) -> bool:
        """Whether the runtime has every image already (ImageStatus, in parallel; a failed check counts as absent)."""
        found = await asyncio.gather(*(self._already_present(image, deadline) for image in images))
        return all(found)

    async def _pull_image_safely(
        self, result: ImageResult, deadline: Deadline, slots: asyncio.Semaphore | None
    ) -> None:
        try:
            await self._pull_image(result, deadline, slots)
        except Exception as err:  # an unexpected failure ends this image only, never the whole run
            result.outcome, result.error = "failed", PullError("UNKNOWN", f"internal error: {err}")
            self.log.error("pulling the image failed unexpectedly", image=result.image, error=str(err))

    async def _pull_image(self, result: ImageResult, deadline: Deadline, slots: asyncio.Semaphore | None) -> None:
        async with slots if slots is not None else contextlib.nullcontext():
            if deadline.remaining() <= 0:
                result.outcome, result.ended_by_deadline = "failed", True
                return
            if self.settings.if_not_present and await self._already_present(result.image, deadline):
                result.outcome = "skipped"
                self.log.info("image already present, not pulling", image=result.image)
                return
            credentials = await self._credentials_for(result.image, deadline)
            await self._retry_loop(result, credentials, deadline)

    async def _already_present(self, image: str, deadline: Deadline) -> bool:
        try:
            found = await self._client.image_status(image, timeout=min(STATUS_TIMEOUT_SECONDS, deadline.remaining()))
        except grpc.aio.AioRpcError as err:
            self.log.warn("failed to check whether the image is present", image=image, error=rpc_error(err).go_string())
            return False
        return found is not None

    async def _credentials_for(self, image: str, deadline: Deadline) -> list[Credential]:
        try:
            return await asyncio.wait_for(self.credentials.credentials_for(image), timeout=deadline.remaining())
        except asyncio.TimeoutError:
            self.log.warn("credential lookup did not finish before the overall timeout", image=image)
        except Exception as err:  # a credential source must never crash the run
            self.log.warn("credential lookup failed, pulling without credentials", image=image, error=str(err))
        return []

    async def _retry_loop(self, result: ImageResult, credentials: list[Credential], deadline: Deadline) -> None:
        choices: list[Credential | None] = list(credentials) or [None]
        secrets = [c.password for c in credentials]
        schedule = retry_schedule(
            self.settings.initial_attempt_timeout,
            self.settings.max_attempt_timeout,
            self.settings.initial_delay,
            self.settings.max_delay,
        )
        step = next(schedule)
        index = 0
        host = host_of(result.image)
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                self._give_up(result, by_deadline=True)
                return
            ticket = await self._enter_gate(result, host, deadline)
            if ticket is None:
                return
            try:
                outcome = await self._attempt(result, index, choices[index], step.attempt_timeout, deadline, secrets)
            except BaseException:
                self.gates.abandon(ticket)
                raise
            limited = isinstance(outcome, PullError) and outcome.error_class is ErrorClass.RATE_LIMITED
            pause = rate_limit_pause(outcome.details, step.delay_after) if isinstance(outcome, PullError) else 0.0
            await self.gates.report(ticket, rate_limited=limited, pause=pause)
            if isinstance(outcome, _Success):
                result.outcome, result.image_ref, result.size_bytes = "ok", outcome.image_ref, outcome.size_bytes
                return
            if limited:
                # The host's gate does the waiting, for every image of that registry at once.
                self.log.warn(
                    "registry rate limited, backing off for the whole host",
                    image=result.image,
                    host=host,
                    timeout=Seconds(pause),
                )
                step = next(schedule)
                continue
            action = decide(
                outcome.error_class,
                not_found_fails=self.settings.not_found_fails,
                has_next_credential=index + 1 < len(choices),
            )
            if action is Action.FINAL:
                self._give_up(result, by_deadline=False)
                return
            if action is Action.NEXT_CREDENTIAL:
                index += 1
                continue
            if outcome.error_class in (ErrorClass.UNAUTHORIZED, ErrorClass.NOT_FOUND):
                index = 0  # every credential was refused: start over with the first one
            if not await self._sleep_before_retry(result, step.delay_after, deadline):
                return
            step = next(schedule)

    async def _enter_gate(self, result: ImageResult, host: str, deadline: Deadline) -> Ticket | None:
        """Leave to start an attempt from the host's rate-limit gate; None (the image has given up) when the gate
        stays closed past the overall deadline."""
        ticket = await self.gates.enter(host, deadline)
        if ticket is not None:
            return ticket
        if not result.history:  # no error of its own to name: say why it never started
            result.error = PullError(
                "UNKNOWN",
                f"registry {host} answered too many requests; its back-off lasts past the overall timeout",
            )
        self._give_up(result, by_deadline=True)
        return None

    async def _sleep_before_retry(self, result: ImageResult, delay: float, deadline: Deadline) -> bool:
        if deadline.remaining() <= delay:
            # The next attempt could only start after the deadline: give up now instead of sleeping into it.
            self._give_up(result, by_deadline=True)
            return False
        self.log.info("sleeping before retry", image=result.image, timeout=Seconds(delay))
        await asyncio.sleep(delay)
        return True

    def _give_up(self, result: ImageResult, by_deadline: bool) -> None:
        result.outcome, result.ended_by_deadline = "failed", by_deadline
        failure = final_failure(result.history)
        # Upstream logs `context deadline exceeded` here and loses the reason; this line names the image's reason
        # (the same as the summary's) and says separately that the overall timeout stopped the retries.
        attrs: dict[str, object] = {
            "image": result.image,
            "error": failure.go_string() if failure is not None else "context deadline exceeded",
            "attempts": result.attempts,
        }
        if by_deadline:
            attrs["overallTimeoutReached"] = True
        self.log.error("not retrying any more", **attrs)

    async def _attempt(
        self,
        result: ImageResult,
        index: int,
        credential: Credential | None,
        nominal_timeout: float,
        deadline: Deadline,
        secrets: list[str],
    ) -> _Success | PullError:
        attrs: dict[str, object] = {"image": result.image, "authNum": index}
        if credential is not None:
            attrs.update(authServer=credential.server, authUsername=credential.username)
        self.log.info("attempting image pull", **attrs, timeout=Seconds(nominal_timeout))
        self.attempts += 1
        result.attempts += 1
        rpc_timeout = min(nominal_timeout, deadline.remaining())
        started_at, started = time.time(), _now()
        if result.first_attempt_at is None:
            result.first_attempt_at = started_at
        result.in_flight = result.attempts
        try:
            image_ref = await self._client.pull_image(result.image, credential, timeout=rpc_timeout)
        except grpc.aio.AioRpcError as err:
            elapsed = _now() - started
            failure = rpc_error(err)
            failure = PullError(failure.code, redact(failure.details, secrets))
            # Cut: the RPC deadline was the overall deadline (shorter than the attempt timeout) and it ran out.
            cut = rpc_timeout < nominal_timeout and failure.code == "DEADLINE_EXCEEDED"
            result.history.append(AttemptRecord(failure, cut_by_deadline=cut))
            self.log.error(
                "image failed to pull",
                **attrs,
                error=failure.go_string(),
                timeout=Seconds(nominal_timeout),
                elapsed=Seconds(elapsed),
            )
            reported = final_failure(result.history) or failure  # never None: the last attempt failed
            self._notify(PullAttempt(result.image, started_at, elapsed, reported.go_string(), 0, index, cut))
            return failure
        finally:
            result.in_flight = 0
        elapsed = _now() - started
        result.history.append(AttemptRecord(None))
        response = f'image_ref:"{image_ref}"'
        self.log.info("image pulled successfully", **attrs, response=response, elapsed=Seconds(elapsed))
        size = await self._pulled_size(image_ref, deadline)
        self._notify(PullAttempt(result.image, started_at, elapsed, None, size, index))
        return _Success(image_ref, size)

    async def _pulled_size(self, image_ref: str, deadline: Deadline) -> int:
        # Within the overall deadline, but at least 1 s: the image is pulled, only its size is missing, and the
        # post-run grace keeps the process within overall timeout + 10 s.
        timeout = max(min(SIZE_STATUS_TIMEOUT_SECONDS, deadline.remaining()), 1.0)
        try:
            image = await self._client.image_status(image_ref, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            self.log.warn("failed to obtain pulled image status", image=image_ref, error=rpc_error(err).go_string())
            return 0
        return int(image.size) if image is not None else 0

    def _notify(self, attempt: PullAttempt) -> None:
        for observer in self.observers:
            try:
                observer(attempt)
            except Exception as err:  # an observer (metrics) must never break a pull
                self.log.warn("attempt observer failed", error=str(err))
