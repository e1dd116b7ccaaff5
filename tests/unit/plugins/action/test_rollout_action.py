# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout action plugin: progress lines printed while the module still runs, and the plain run otherwise."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional
from unittest import mock

import pytest

from ansible_collections.stackrox.prefetch.plugins.action import rollout as plugin
from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import read_snapshot, write_snapshot

PULLING = {"nodes": 3, "counts": {"pulling": 2, "succeeded": 1}, "slowest": {"node": "n2", "since": 1000.0}}
DONE = {"nodes": 3, "counts": {"succeeded": 3}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_follow_prints_changes_rate_limited_while_the_module_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "p.json")
    clock = FakeClock()
    script = {2.0: PULLING, 14.0: {**PULLING, "counts": {"pulling": 1, "succeeded": 2}}, 16.0: DONE}
    shown: list[tuple[float, str]] = []

    def running(_poll: float) -> bool:
        clock.now += 0.5
        if clock.now in script:
            write_snapshot(path, script[clock.now])
        return clock.now < 30

    count = plugin.follow(
        lambda: read_snapshot(path), "prod-east", 10, running, lambda line: shown.append((clock.now, line)), clock,
        lambda: 1125.0,
    )
    assert shown == [
        (10.0, "prod-east: 1/3 nodes done (1 succeeded), 2 pulling; slowest: n2 pulling for 2m05s"),
        (20.0, "prod-east: 3/3 nodes done (3 succeeded)"),  # 14 s changed and 16 s: held back to 20 s, newest wins
    ]
    assert count == 2


def test_follow_prints_a_warning_of_the_wait_at_once_and_once(tmp_path: Path) -> None:
    path = str(tmp_path / "p.json")
    clock = FakeClock()
    warning = "timeout 600s is likely too short for 6 nodes at parallel_nodes=2: 3 waves of ~250s each need ~750s"
    waiting = {"nodes": 6, "counts": {"pulling": 2, "succeeded": 1, "waiting": 3}, "warnings": [warning]}
    shown: list[tuple[float, str]] = []

    def running(_poll: float) -> bool:
        clock.now += 0.5
        if clock.now == 2.0:
            write_snapshot(path, waiting)
        return clock.now < 12

    plugin.follow(
        lambda: read_snapshot(path), "c1", 10, running, lambda line: shown.append((clock.now, line)), clock, lambda: 0.0
    )
    assert shown == [
        (2.0, f"c1: warning: {warning}"),  # not held back by the throttle's first interval
        (10.0, "c1: 1/6 nodes done (1 succeeded), 2 pulling, 3 waiting for a slot"),
    ]


def task(args: dict[str, Any], async_val: int = 0) -> mock.MagicMock:
    return mock.MagicMock(args=args, async_val=async_val, check_mode=False, action="stackrox.prefetch.rollout")


def action(args: dict[str, Any], transport: str = "local", async_val: int = 0) -> plugin.ActionModule:
    connection = mock.MagicMock(transport=transport, has_native_async=False)
    connection._shell.tmpdir = None
    return plugin.ActionModule(
        task(args, async_val), connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock()
    )


def test_run_prints_progress_before_the_module_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "POLL_SECONDS", 0.02)
    shown: list[str] = []
    monkeypatch.setattr(plugin.display, "display", lambda line, *a, **k: shown.append(line))
    seen_by_module: list[list[str]] = []
    progress_files: list[str] = []

    def fake_module(module_args: Optional[dict[str, Any]] = None, **_kwargs: Any) -> dict[str, Any]:
        assert module_args is not None
        assert threading.current_thread().name == "rollout-module"
        progress_files.append(module_args["progress_file"])
        write_snapshot(module_args["progress_file"], PULLING)
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:  # the wait goes on until a line was printed
            time.sleep(0.02)
        seen_by_module.append(list(shown))
        return {"changed": False, "nodes": [], "totals": {}}

    act = action({"name": "imgs", "namespace": "ns", "progress_interval": 1})
    monkeypatch.setattr(act, "_execute_module", fake_module)
    result = act.run(task_vars={"inventory_hostname": "prod-east"})
    assert result["changed"] is False and result["nodes"] == []
    assert seen_by_module[0] and seen_by_module[0][0].startswith("prod-east: 1/3 nodes done (1 succeeded), 2 pulling")
    assert not os.path.exists(os.path.dirname(progress_files[0]))  # the plugin's directory is removed


def test_on_another_host_the_snapshot_is_read_through_the_connection_once_an_interval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(plugin, "POLL_SECONDS", 0.02)
    shown: list[str] = []
    monkeypatch.setattr(plugin.display, "display", lambda line, *a, **k: shown.append(line))
    act = action({"name": "imgs", "namespace": "ns", "progress_interval": 1}, transport="ssh")
    remote_tmp = tmp_path / "remote-tmp"

    def make_tmp_path() -> str:
        remote_tmp.mkdir()
        act._connection._shell.tmpdir = str(remote_tmp)
        return str(remote_tmp)

    commands: list[tuple[str, bool]] = []

    def low_level(command: str, sudoable: bool = True, **_kwargs: Any) -> dict[str, Any]:
        commands.append((command, sudoable))
        path = command.split(" ", 1)[1].strip("'")
        if not os.path.exists(path):
            return {"rc": 1, "stdout": "", "stderr": "cat: no such file"}
        return {"rc": 0, "stdout": Path(path).read_text(), "stderr": ""}

    def fake_module(module_args: Optional[dict[str, Any]] = None, **_kwargs: Any) -> dict[str, Any]:
        assert module_args is not None
        assert module_args["progress_file"] == str(remote_tmp / "progress.json")
        time.sleep(0.3)  # a first read finds no file yet: no line, no error
        write_snapshot(module_args["progress_file"], PULLING)
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"changed": False, "nodes": [], "totals": {}}

    monkeypatch.setattr(act, "_make_tmp_path", make_tmp_path)
    monkeypatch.setattr(act._connection._shell, "join_path", os.path.join)
    monkeypatch.setattr(act, "_low_level_execute_command", low_level)
    monkeypatch.setattr(act, "_remove_tmp_path", lambda path: None)
    monkeypatch.setattr(act, "_execute_module", fake_module)
    started = time.monotonic()
    result = act.run(task_vars={"inventory_hostname": "prod-east"})
    elapsed = time.monotonic() - started
    assert result["changed"] is False
    assert shown and shown[0].startswith("prod-east: 1/3 nodes done (1 succeeded), 2 pulling")
    assert commands and all(c == (f"cat {remote_tmp / 'progress.json'}", False) for c in commands)
    assert len(commands) <= elapsed / 1 + 1  # one read per interval, not one per poll


def test_a_remote_read_that_fails_prints_nothing_and_the_wait_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugin.parse_remote_snapshot({"rc": 1, "stdout": ""}) is None
    assert plugin.parse_remote_snapshot({"rc": 0, "stdout": "{"}) is None
    assert plugin.parse_remote_snapshot({"rc": 0, "stdout": "[]"}) is None
    assert plugin.parse_remote_snapshot({"rc": 0, "stdout": json.dumps(DONE)}) == DONE


def test_a_module_error_in_the_thread_reaches_ansible(monkeypatch: pytest.MonkeyPatch) -> None:
    act = action({"name": "imgs", "namespace": "ns"})
    monkeypatch.setattr(act, "_execute_module", mock.Mock(side_effect=RuntimeError("connection lost")))
    with pytest.raises(RuntimeError, match="connection lost"):
        act.run(task_vars={})


@pytest.mark.parametrize(
    "args, transport, async_val",
    [
        ({"progress_interval": 0}, "local", 0),
        ({"progress_interval": "0"}, "local", 0),
        ({"progress_interval": "soon"}, "local", 0),  # the module refuses it, and says why
        ({"progress_interval": 0}, "ssh", 0),
        ({}, "local", 30),  # async: the module runs detached
    ],
)
def test_without_progress_the_module_runs_as_without_the_plugin(
    args: dict[str, Any], transport: str, async_val: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    act = action({"name": "imgs", "namespace": "ns", **args}, transport, async_val)
    execute = mock.Mock(return_value={"changed": False})
    monkeypatch.setattr(act, "_execute_module", execute)
    act.run(task_vars={})
    execute.assert_called_once_with(task_vars={}, wrap_async=bool(async_val))


def test_progress_interval_default_and_bad_values() -> None:
    assert plugin.progress_interval(None) == 10
    assert plugin.progress_interval("7") == 7
    assert plugin.progress_interval(-3) == 0
    assert json.dumps(plugin.progress_interval("x")) == "0"


def test_an_interrupted_worker_does_not_wait_for_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck_module(**_kwargs: Any) -> dict[str, Any]:
        release.wait(10)
        return {}

    def interrupted(*_args: Any, **_kwargs: Any) -> int:
        raise KeyboardInterrupt

    act = action({"name": "imgs", "namespace": "ns"})
    monkeypatch.setattr(act, "_execute_module", stuck_module)
    monkeypatch.setattr(plugin, "follow", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        act.run(task_vars={})
    assert time.monotonic() - started < 5
    release.set()
