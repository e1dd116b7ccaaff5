# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIGINT, SIGTERM and a controller that went away end a module run through its one error path.

Without this, a Ctrl-C gives the module a KeyboardInterrupt traceback, and a module whose ansible-playbook was
stopped may go on running: ansible-core 2.19 sends a SIGINT/SIGTERM of ansible-playbook on to the module's process
group, 2.16 does not, and its module keeps waiting (up to its timeout) after ansible-playbook has exited. Such a
module's stdout, the pipe its result would go back through, then has no reader any more; a watchdog thread sees that
(``POLLERR`` on the pipe's write end) and sends the module SIGTERM.

``guard(describe)`` turns the first SIGINT/SIGTERM into ``InterruptedRunError`` in the main thread, with
``describe()`` saying what the module was doing; a second signal ends the process at once (the default action).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import InterruptedRunError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
WATCHDOG_INTERVAL_MS = 500


def output_orphaned(fd: int, timeout_ms: int = 0, wake_fd: Optional[int] = None) -> Optional[bool]:
    """True when ``fd`` is the write end of a pipe (or a socket) whose reader is gone, False when it is not (yet,
    or ``wake_fd`` became readable first), None when it cannot tell (``fd`` is not open)."""
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are reported without being asked for
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    try:
        events = poller.poll(timeout_ms)
    except (OSError, ValueError):
        return None
    masks = [mask for each, mask in events if each == fd]
    if any(mask & select.POLLNVAL for mask in masks):
        return None
    return any(mask & (select.POLLERR | select.POLLHUP) for mask in masks)


def interruption_message(signum: int, doing: str, orphaned: bool) -> str:
    name = signal.Signals(signum).name
    cause = " (ansible-playbook went away)" if orphaned else ""
    return f"interrupted by {name}{cause} while {doing}"


@contextlib.contextmanager
def guard(describe: Callable[[], str], output_fd: int = 1) -> Iterator[None]:
    """Inside: SIGINT/SIGTERM raise InterruptedRunError; the watchdog ends the run when ``output_fd`` is orphaned.
    On the way out the previous handlers are back (the module's tests run in one process)."""
    wake_read, wake_write = os.pipe()
    stopped = threading.Event()
    orphaned = threading.Event()

    def handler(signum: int, _frame: Optional[FrameType]) -> None:
        for each in SIGNALS:  # a second signal, while the first one is being reported, ends the process
            signal.signal(each, signal.SIG_DFL)
        raise InterruptedRunError(interruption_message(signum, describe(), orphaned.is_set()))

    def watchdog() -> None:
        while not stopped.is_set():
            state = output_orphaned(output_fd, WATCHDOG_INTERVAL_MS, wake_read)
            if state is None or stopped.is_set():
                return
            if state:
                orphaned.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for each in SIGNALS:
            previous[each] = signal.signal(each, handler)
    thread = threading.Thread(target=watchdog, name="controller-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        os.write(wake_write, b"x")
        thread.join(timeout=5)
        os.close(wake_read)
        os.close(wake_write)
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)
