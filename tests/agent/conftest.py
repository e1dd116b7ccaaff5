"""Guards for every agent test: running the agent outside a pod must not leave files in /dev."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


@pytest.fixture(autouse=True)
def _no_stray_termination_log() -> Iterator[None]:
    """`fetch` writes its summary to /dev/termination-log by default; tests must pass --termination-log."""
    existed = os.path.exists(DEFAULT_TERMINATION_LOG)
    yield
    if not existed and os.path.exists(DEFAULT_TERMINATION_LOG):
        os.unlink(DEFAULT_TERMINATION_LOG)
        pytest.fail("the test wrote /dev/termination-log: pass --termination-log to the agent")
