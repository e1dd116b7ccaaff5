"""Shared fixtures of the agent tests: a guard against stray files in /dev, and log capture."""

from __future__ import annotations

import logging
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


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record the agent's loggers emit during the test, at DEBUG and above."""
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger("image_prefetcher")
    handler, old_level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
