# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIGINT/SIGTERM and an orphaned result pipe end a module run through InterruptedRunError."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import InterruptedRunError
from ansible_collections.stackrox.prefetch.plugins.module_utils._interrupt import (
    guard,
    interruption_message,
    output_orphaned,
)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_pipe_is_orphaned_once_its_reader_is_gone(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    assert output_orphaned(write_end) is False
    os.close(read_end)
    assert output_orphaned(write_end) is True


def test_a_file_is_never_orphaned_and_a_closed_fd_cannot_tell() -> None:
    with tempfile.TemporaryFile() as file:
        assert output_orphaned(file.fileno()) is False
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    assert output_orphaned(write_end) is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_becomes_one_error_naming_what_was_done(signum: int, pipe: tuple[int, int]) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(InterruptedRunError) as raised, guard(lambda: "waiting for DaemonSet p/x", pipe[1]):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises long before
    assert str(raised.value) == f"interrupted by {signal.Signals(signum).name} while waiting for DaemonSet p/x"
    assert signal.getsignal(signum) is before


def test_the_watchdog_ends_the_run_when_the_result_pipe_loses_its_reader(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    started = time.monotonic()
    with pytest.raises(InterruptedRunError) as raised, guard(lambda: "waiting", write_end):
        os.close(read_end)
        time.sleep(30)
    assert str(raised.value) == "interrupted by SIGTERM (ansible-playbook went away) while waiting"
    assert time.monotonic() - started < 30


def test_nothing_happens_while_the_reader_is_there(pipe: tuple[int, int]) -> None:
    with guard(lambda: "waiting", pipe[1]):
        time.sleep(1.2)  # more than two watchdog polls


def test_message() -> None:
    assert interruption_message(signal.SIGINT, "applying instance p/x", False) == (
        "interrupted by SIGINT while applying instance p/x")
