"""`sleep`: the DaemonSet's main container. Blocks until SIGTERM or SIGINT, then exits 0."""

from __future__ import annotations

import signal
import sys
import threading

SIGNAL_NAMES = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}


def run_sleep() -> int:
    received: list[int] = []
    woken = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        woken.set()

    for signum in SIGNAL_NAMES:
        signal.signal(signum, on_signal)
    print("Sleeping...", file=sys.stderr, flush=True)  # after the handlers: a signal from now on is handled
    while not woken.wait(3600):
        pass
    name = SIGNAL_NAMES.get(signal.Signals(received[0]), signal.Signals(received[0]).name)
    # Go's signal names (os.Signal.String()), not upstream's pointer garbage (BEHAVIOR.md §7).
    print(f"Terminating due to {name}", file=sys.stderr, flush=True)
    return 0
