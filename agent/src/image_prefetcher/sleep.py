"""`sleep`: the DaemonSet's main container. Blocks until SIGTERM or SIGINT, then exits 0."""

from __future__ import annotations

import signal
import sys

SIGNAL_NAMES = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}


def run_sleep() -> int:
    # The signals are blocked and then waited for, not handled: a handler that wakes a threading.Event can deadlock
    # when the signal lands while the main thread holds the Event's lock (it did, under load, on a quick SIGINT).
    # Blocked before the line is printed, so a signal from then on stays pending until sigwait takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNAL_NAMES))
    print("Sleeping...", file=sys.stderr, flush=True)
    signum = signal.sigwait(set(SIGNAL_NAMES))
    name = SIGNAL_NAMES.get(signal.Signals(signum), signal.Signals(signum).name)
    # Go's signal names (os.Signal.String()), not upstream's pointer garbage (BEHAVIOR.md §7).
    print(f"Terminating due to {name}", file=sys.stderr, flush=True)
    return 0
