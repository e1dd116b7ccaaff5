"""The per-image retry schedule (BEHAVIOR.md §2.3), as a pure function."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryStep:
    """One round: the attempt timeout to use, and the delay to sleep if the round fails."""

    attempt_timeout: float
    delay_after: float


def retry_schedule(
    initial_timeout: float, max_timeout: float, initial_delay: float, max_delay: float
) -> Iterator[RetryStep]:
    """Endless schedule: timeout and delay double after each round, each capped by its max.

    As upstream, the caps apply only when doubling: an initial value above its max is used once as is.
    """
    timeout, delay = initial_timeout, initial_delay
    while True:
        yield RetryStep(timeout, delay)
        timeout = min(timeout * 2, max_timeout)
        delay = min(delay * 2, max_delay)
