"""An asyncio event loop on a virtual clock, so tests of deadlines and delays do not depend on machine speed.

The clock stands still while any task can run, and jumps straight to the next timer when every task waits: a
`sleep(600)`, a `wait_for(..., timeout=30)` or the engine's overall deadline pass at once, in a fixed order, however
slow or loaded the machine is. Real I/O (the loop's self-pipe, threads handing results back) still works; a loop
that waits with no timer set and no I/O arriving is a deadlock and raises instead of hanging the test.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
IDLE_LIMIT_S = 30.0  # real seconds a loop with no timer may wait for real I/O before it counts as deadlocked


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real I/O without blocking; a wait for a timer advances the virtual clock instead of sleeping."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            ready = super().select(IDLE_LIMIT_S)
            if not ready:
                raise RuntimeError("virtual-time loop deadlocked: every task waits and no timer is set")
            return ready
        self._clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(selector=_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a fresh VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
