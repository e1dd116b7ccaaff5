# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin ``stackrox.prefetch.rollout``: runs the module once, as Ansible would, and prints progress lines
while it waits.

The module keeps its single list + watch (no rounds: a new module run per round would pay the start-up, the
kubernetes client import and three fresh lists each time, and lose what it saw of deleted nodes). It replaces a
small JSON snapshot in a file this plugin gives it (``progress_file``) whenever the rollout changes; the plugin runs
the module in a thread, polls that file and prints ``_progress.progress_line`` through Ansible's display (which a
worker process forwards to the controller's output at once), rate-limited by ``_progress.Throttle``.

On this machine (a local connection, the role's default ``images_delegate_to: localhost``) the file is polled
every ``POLL_SECONDS``. On another host it lives in the task's remote temporary directory and is read through the
connection (``cat``, one command per ``progress_interval``), so lines come at most an interval late and a connection
that cannot run a second command while the module runs just prints none. With ``async`` or ``progress_interval: 0``
the module runs exactly as without this plugin and no line is printed.
"""

from __future__ import annotations

import contextvars
import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Optional

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import (
    Throttle,
    change_key,
    new_warnings,
    progress_line,
    read_snapshot,
)

display = Display()
POLL_SECONDS = 0.5
DEFAULT_INTERVAL = 10


def parse_remote_snapshot(result: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The snapshot from a ``cat`` of the remote file (``_low_level_execute_command``'s result); None if unread."""
    if result.get("rc") != 0:
        return None
    try:
        snap = json.loads(str(result.get("stdout") or ""))
    except ValueError:
        return None
    return snap if isinstance(snap, dict) else None


def progress_interval(value: Any) -> int:
    """The option as the module will read it; a value it will refuse means no progress (the module says why)."""
    if value is None:
        return DEFAULT_INTERVAL
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def follow(
    read: Callable[[], Optional[dict[str, Any]]],
    host: str,
    interval: float,
    running: Callable[[float], bool],
    show: Callable[[str], None],
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    read_every: float = 0.0,
) -> int:
    """Print progress lines from the snapshots ``read()`` returns (None: none yet) while ``running(poll)`` says the
    module runs, reading at most once every ``read_every`` seconds; the line count.

    A warning of the wait (the waves estimate) is printed once, as soon as it appears: it is worth acting on early.
    """
    throttle = Throttle(interval, monotonic())
    printed = 0
    shown: set[str] = set()
    last_read: Optional[float] = None
    while running(POLL_SECONDS):
        if last_read is not None and monotonic() - last_read < read_every:
            continue
        last_read = monotonic()
        snap = read()
        if snap is None:
            continue
        for warning in new_warnings(snap, shown):
            show(f"{host}: warning: {warning}")
            printed += 1
        if throttle.offer(change_key(snap), monotonic()):
            show(progress_line(host, snap, wall()))
            printed += 1
    return printed


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp: Any = None, task_vars: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        task_vars = task_vars or {}
        wrap_async = self._task.async_val and not self._connection.has_native_async
        interval = progress_interval(self._task.args.get("progress_interval"))
        local = getattr(self._connection, "transport", "") == "local"
        host = str(task_vars.get("inventory_hostname") or "") or "?"
        if wrap_async or interval <= 0:
            result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        elif local:
            result = merge_hash(result, self._execute_with_progress(task_vars, host, interval))
        else:
            result = merge_hash(result, self._execute_with_remote_progress(task_vars, host, interval))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _execute_with_progress(self, task_vars: dict[str, Any], host: str, interval: int) -> dict[str, Any]:
        directory = tempfile.mkdtemp(prefix="prefetch-progress-")
        path = os.path.join(directory, "progress.json")
        try:
            return self._run_and_follow(task_vars, path, lambda: read_snapshot(path), host, interval, 0.0)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _execute_with_remote_progress(self, task_vars: dict[str, Any], host: str, interval: int) -> dict[str, Any]:
        """The snapshot file in the task's remote temporary directory (removed with it by ``run``), read with one
        ``cat`` per interval; the module finds the directory made here and uses it as its own."""
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        path = self._connection._shell.join_path(self._connection._shell.tmpdir, "progress.json")
        command = f"cat {shlex.quote(path)}"

        def read() -> Optional[dict[str, Any]]:
            try:
                return parse_remote_snapshot(self._low_level_execute_command(command, sudoable=False))
            except Exception:  # a connection that cannot run it now: no line this time, the wait goes on
                return None

        return self._run_and_follow(task_vars, path, read, host, interval, float(interval))

    def _run_and_follow(
        self,
        task_vars: dict[str, Any],
        path: str,
        read: Callable[[], Optional[dict[str, Any]]],
        host: str,
        interval: int,
        read_every: float,
    ) -> dict[str, Any]:
        """The module in a thread (its snapshots to ``path``), with ``follow`` printing from ``read`` meanwhile."""
        args = dict(self._task.args, progress_file=path)
        outcome: dict[str, Any] = {}

        def execute() -> None:
            try:
                outcome["result"] = self._execute_module(module_args=args, task_vars=task_vars)
            except BaseException as error:  # re-raised in the worker's own thread below
                outcome["error"] = error

        # The module runs in a thread with this thread's context: ansible-core keeps task state in context variables,
        # which a new thread would not see.
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(execute,), name="rollout-module", daemon=True)
        thread.start()

        def running(poll: float) -> bool:
            thread.join(poll)
            return thread.is_alive()

        # Interrupted (KeyboardInterrupt in this worker), the worker leaves without waiting for the module, as it
        # would without this plugin: the module's own watchdog ends it once its output pipe has no reader.
        follow(read, host, interval, running, display.display, read_every=read_every)
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return dict(outcome["result"])
