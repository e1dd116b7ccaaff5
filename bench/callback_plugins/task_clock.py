"""``task_clock``: each task's wall time (start of the task to its last host's result), written as JSON to the file
named by $BENCH_TASK_TIMES when the play ends. For bench/playbook_bench.py --profile; not part of the collection."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_clock
type: aggregate
short_description: time every task (for the playbook bench)
description: Writes [[task name, seconds], ...] to $BENCH_TASK_TIMES.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_clock"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.times: list[list[Any]] = [["(start-up to the first task)", 0.0]]
        self.current: list[Any] | None = None
        self.task_started = 0.0

    def _close(self) -> None:
        if self.current is not None:
            self.current[1] = round(time.monotonic() - self.task_started, 3)
            self.current = None

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        del is_conditional
        self._close()
        if len(self.times) == 1 and self.times[0][1] == 0.0:
            self.times[0][1] = round(time.monotonic() - self.started, 3)
        self.task_started = time.monotonic()
        self.current = [task.get_name(), 0.0]
        self.times.append(self.current)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        del stats
        self._close()
        path = os.environ.get("BENCH_TASK_TIMES")
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump(self.times, out)
