"""Registry rate limits: one back-off per registry host, shared by every image's retry loop (`engine.PullEngine`).

A registry that answers 429 Too Many Requests (Docker Hub's and Quay's `TOOMANYREQUESTS`) or 503 Service
Unavailable (`classify.ErrorClass.RATE_LIMITED`) is asked less, not more: instead of each image retrying on its own
schedule (N images, N retry loops hammering the same host), the failure closes that host's gate for a pause:

* the pause is the `Retry-After` the error text carries (containerd and CRI-O pass the registry's message through;
  some registries put `Retry-After: 30` or `retry after 30s` in it), else the failing image's own retry delay
  (`retry_schedule`), so the back-off still doubles up to `--max-pull-attempt-delay`;
* while the gate is closed no attempt for that host starts (attempts already in flight run on);
* when it reopens, one attempt (the probe) goes first and the others wait for its outcome: another rate limit closes
  the gate again, anything else opens it for all. A probe that ends without an outcome (cancelled, deadline) hands
  the probe over to the next waiter;
* a gate that would stay closed past the overall deadline is not waited for: the image gives up at once.

`host_of` names the host from the image reference (Docker's rules: the first path component when it has a `.` or a
`:` or is `localhost`, else `docker.io`), so the gate is per registry as the user wrote it, also behind a mirror.
The state machine (`GateState`, `admit`, `report`) is pure; `RegistryGates` adds the waiting (an asyncio
Condition per host, every wait bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

DOCKER_HUB = "docker.io"
MAX_RETRY_AFTER_S = 24 * 3600.0  # a bigger (or garbled) value is read as this: the run's deadline ends it anyway

_RETRY_AFTER = re.compile(
    r"retry[- _]?after[\"']?\s*[:=]?\s*[\"']?(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|minutes?)?\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"ms": 0.001, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0}


def host_of(image: str) -> str:
    """The registry host of an image reference (`nginx` -> `docker.io`, `quay.io/x/y:1` -> `quay.io`)."""
    first, slash, _rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return DOCKER_HUB


def retry_after(details: str) -> float | None:
    """Seconds from a `Retry-After` in an error text (`Retry-After: 30`, `retry after 2m`), None when absent."""
    found = _RETRY_AFTER.search(details)
    if found is None:
        return None
    value = float(found.group(1))
    unit = (found.group(2) or "s").lower()
    return min(value * _UNIT_SECONDS.get(unit, 1.0), MAX_RETRY_AFTER_S)


def rate_limit_pause(details: str, scheduled_delay: float) -> float:
    """How long the host's gate stays closed after a rate limit: the registry's Retry-After, else the schedule."""
    asked = retry_after(details)
    return asked if asked is not None else scheduled_delay


@dataclass
class GateState:
    closed_until: float = 0.0  # no attempt for the host starts before this (loop time)
    limited: bool = False  # the host's last outcome was a rate limit: the next attempt is a lone probe
    probe_out: bool = False  # that probe is in flight


def admit(state: GateState, now: float) -> float:
    """0 when an attempt may start now (and, when the host is limited, it becomes the probe: the caller sets
    `probe_out`); else how long to wait at most before asking again (inf: until the probe reports)."""
    if now < state.closed_until:
        return state.closed_until - now
    if state.limited and state.probe_out:
        return math.inf
    return 0.0


def report(state: GateState, now: float, *, rate_limited: bool, pause: float, probe: bool) -> None:
    """An attempt's outcome for the host. Only a rate limit closes the gate; any other answer opens it."""
    if probe:
        state.probe_out = False
    if rate_limited:
        state.limited = True
        state.closed_until = max(state.closed_until, now + pause)
    else:
        state.limited = False


def abandon(state: GateState, probe: bool) -> None:
    """An attempt ended without an outcome (cancelled): a probe's turn passes to the next waiter."""
    if probe:
        state.probe_out = False


class Deadline(Protocol):
    def remaining(self) -> float: ...


@dataclass(frozen=True)
class Ticket:
    """Leave to start one attempt for `host`; `probe` when it goes alone after a rate limit."""

    host: str
    probe: bool


class RegistryGates:
    """Every host's gate, shared by all images of one run (one event loop)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._states: dict[str, GateState] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self._wakers: set[asyncio.Task[None]] = set()  # kept until done (the loop holds only weak references)

    def state(self, host: str) -> GateState:
        return self._states.setdefault(host, GateState())

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def enter(self, host: str, deadline: Deadline) -> Ticket | None:
        """Waits until an attempt for `host` may start; None when that would be after the deadline (give up)."""
        state = self.state(host)
        changed = self._changed.setdefault(host, asyncio.Condition())
        async with changed:
            while True:
                wait = admit(state, self._now())
                if wait <= 0:
                    probe = state.limited
                    state.probe_out = state.probe_out or probe
                    return Ticket(host, probe)
                remaining = deadline.remaining()
                if remaining <= 0 or (wait >= remaining and not math.isinf(wait)):
                    return None  # the pause outlasts the run: give up now rather than sleep into the deadline
                # Woken by a report (the probe's outcome, a longer pause) or at the end of this wait.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(wait, remaining))

    async def report(self, ticket: Ticket, *, rate_limited: bool, pause: float = 0.0) -> None:
        changed = self._changed.setdefault(ticket.host, asyncio.Condition())
        async with changed:
            report(self.state(ticket.host), self._now(), rate_limited=rate_limited, pause=pause, probe=ticket.probe)
            changed.notify_all()

    def abandon(self, ticket: Ticket) -> None:
        """Synchronous (called from `finally` while cancelled); wakes the waiters from a task of its own."""
        abandon(self.state(ticket.host), ticket.probe)
        if ticket.probe:
            changed = self._changed.get(ticket.host)
            if changed is not None:
                waker = asyncio.ensure_future(self._wake(changed))
                self._wakers.add(waker)
                waker.add_done_callback(self._wakers.discard)

    @staticmethod
    async def _wake(changed: asyncio.Condition) -> None:
        async with changed:
            changed.notify_all()
