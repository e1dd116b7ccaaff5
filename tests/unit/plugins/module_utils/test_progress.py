# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress: the snapshot of a watch state, the line, the rate limit and the file between module and plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._progress import (
    PROGRESS_ANNOTATION,
    SnapshotWriter,
    Throttle,
    agent_progress,
    change_key,
    duration,
    parse_agent_progress,
    parse_time,
    progress_line,
    pulling_since,
    read_snapshot,
    snapshot,
    write_snapshot,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import WatchState, build_report

T0 = parse_time("2026-12-04T06:00:00Z") or 0.0


def report(node: str, status: str, message: str = "") -> dict[str, Any]:
    return {"node": node, "status": status, "message": message}


def twenty_nodes() -> list[dict[str, Any]]:
    nodes = [report(f"node-{i}", "succeeded") for i in range(1, 7)] + [report("node-7", "failed")]
    nodes += [report(f"node-{i}", "pulling") for i in range(8, 19)]
    nodes += [
        report("node-19", "pending", "ImagePullBackOff: Back-off pulling image agent:1"),
        report("node-20", "not_started"),
    ]
    return nodes


def test_the_line_counts_nodes_by_status_and_names_the_slowest() -> None:
    since = {f"node-{i}": T0 + i for i in range(8, 19)}
    since["node-4"] = T0 - 60  # not pulling: never the slowest
    since["node-9"] = T0 - 5
    line = progress_line("prod-east", snapshot(twenty_nodes(), since), T0 + 120)
    assert line == (
        "prod-east: 7/20 nodes done (6 succeeded, 1 failed), 11 pulling, 2 not started; slowest: node-9 pulling for "
        "2m05s; node-19 not started: ImagePullBackOff: Back-off pulling image agent:1"
    )


def test_nodes_the_daemonset_wants_without_a_pod_yet_are_not_started() -> None:
    snap = snapshot([report("n1", "pulling")], {}, desired=3)
    assert snap["nodes"] == 3 and snap["counts"] == {"not_started": 2, "pulling": 1}


def test_the_line_of_a_start_and_of_the_other_end_states() -> None:
    assert progress_line("c", snapshot([report("n1", "not_started")], {}), T0) == (
        "c: 0/1 nodes done, 1 not started; n1 not started"
    )
    done = [report("n1", "succeeded"), report("n2", "error"), report("n3", "gone"), report("n4", "pulling")]
    assert progress_line("c", snapshot(done, {}), T0) == (
        "c: 3/4 nodes done (1 succeeded, 1 error, 1 gone), 1 pulling; slowest: n4 pulling"
    )


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (125, "2m05s"), (3720, "1h02m")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_waiting_reason_is_cut_short() -> None:
    snap = snapshot([report("n1", "pending", "x" * 300)], {})
    assert len(snap["waiting"]["message"]) == 80


def test_the_change_key_ignores_the_passing_time_only() -> None:
    first = snapshot(twenty_nodes(), {"node-8": T0})
    assert change_key(first) == change_key(json.loads(json.dumps(first)))
    later = snapshot([*twenty_nodes()[:-1], report("node-20", "pulling")], {"node-8": T0})
    assert change_key(later) != change_key(first)


def test_throttle_waits_a_whole_interval_then_prints_changes_at_most_once_per_interval() -> None:
    throttle = Throttle(10, started=100.0)
    assert not throttle.offer("a", 105.0)  # a quick rollout prints nothing
    assert throttle.offer("a", 110.0)
    assert not throttle.offer("a", 125.0)  # nothing changed
    assert throttle.offer("b", 125.5)
    assert not throttle.offer("c", 130.0)  # changed, but too soon: held back ...
    assert throttle.offer("c", 135.5)  # ... and printed once the interval has passed
    assert not Throttle(0, started=0.0).offer("a", 1000.0)


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert parse_time("yesterday") is None and parse_time(None) is None


DS = {
    "metadata": {"name": "imgs", "uid": "u1", "generation": 1, "annotations": {}},
    "spec": {"template": {"metadata": {"annotations": {}}}},
    "status": {"observedGeneration": 1, "desiredNumberScheduled": 2},
}


def pod(name: str, node: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": "u1"}], "creationTimestamp": "2026-12-04T05:59:00Z"},
        "spec": {"nodeName": node},
        "status": {"phase": "Pending", "initContainerStatuses": [{"name": "prefetch", "state": state}]},
    }


def test_pulling_since_reads_the_running_init_containers_start() -> None:
    pods = [
        pod("p1", "n1", {"running": {"startedAt": "2026-12-04T06:00:00Z"}}),
        pod("p2", "n2", {"waiting": {"reason": "PodInitializing"}}),
    ]
    assert pulling_since(DS, pods) == {"n1": T0}


def test_the_writer_writes_a_snapshot_only_when_it_changed(tmp_path: Path) -> None:
    path = str(tmp_path / "progress.json")
    state = WatchState("imgs", DS, {"p1": pod("p1", "n1", {"running": {"startedAt": "2026-12-04T06:00:00Z"}})})
    writes: list[dict[str, Any]] = []

    def report_of(current: WatchState) -> dict[str, Any]:
        return build_report(current.daemonset or {}, list(current.pods.values()))

    writer = SnapshotWriter(path, report_of)
    writer(state)
    writes.append(read_snapshot(path) or {})
    (tmp_path / "progress.json").unlink()
    writer(state)  # the same state: not written again
    assert read_snapshot(path) is None
    state.pods["p2"] = pod("p2", "n2", {"waiting": {"reason": "PodInitializing"}})
    writer(state)
    writes.append(read_snapshot(path) or {})
    assert writes[0] == {"counts": {"not_started": 1, "pulling": 1}, "nodes": 2, "slowest": {"node": "n1", "since": T0}}
    assert writes[1]["counts"] == {"pending": 1, "pulling": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]  # no temporary file left


def test_write_snapshot_never_raises_and_read_snapshot_ignores_a_bad_file(tmp_path: Path) -> None:
    write_snapshot(str(tmp_path / "missing-dir" / "p.json"), {"nodes": 1})
    (tmp_path / "p.json").write_text("{not json")
    assert read_snapshot(str(tmp_path / "p.json")) is None
    (tmp_path / "p.json").write_text("[1]")
    assert read_snapshot(str(tmp_path / "p.json")) is None


def test_a_writer_that_cannot_make_a_snapshot_stops_quietly(tmp_path: Path) -> None:
    def broken_report(_state: WatchState) -> dict[str, Any]:
        raise KeyError("status")

    writer = SnapshotWriter(str(tmp_path / "p.json"), broken_report)
    writer(WatchState("imgs", DS))
    writer(WatchState("imgs", DS))
    assert writer.broken and not (tmp_path / "p.json").exists()


def test_the_waiter_hands_every_new_state_to_the_progress_hook_while_it_waits(tmp_path: Path) -> None:
    from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import RolloutWaiter
    from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.test_rollout import (
        ScriptedCluster,
        as_cluster,
        daemonset,
        done_pod,
        with_version,
    )
    from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.test_rollout import (
        pod as scripted_pod,
    )

    start = daemonset(available=0, updated=0)
    running = {"running": {"startedAt": "2026-12-04T06:00:00Z"}}
    cluster = ScriptedCluster(
        lists={"daemonsets": [start], "pods": [scripted_pod("a", "n1", running), scripted_pod("b", "n2", running)]},
        watches={
            "pods": [
                [with_version("MODIFIED", done_pod("a", "n1"), "11")],
                [with_version("MODIFIED", done_pod("b", "n2"), "12")],
            ],
            "daemonsets": [[], [with_version("MODIFIED", daemonset(), "13")]],
        },
    )
    waiter = RolloutWaiter(as_cluster(cluster), "imgs", "prefetch", timeout=30)
    seen: list[dict[str, Any]] = []
    writer = SnapshotWriter(str(tmp_path / "p.json"), waiter.report)

    def hook(state: WatchState) -> None:
        writer(state)
        snap = read_snapshot(str(tmp_path / "p.json"))
        if snap and (not seen or snap != seen[-1]):
            seen.append(snap)

    waiter.on_progress = hook
    waiter.wait(start)
    assert seen[0] == {"counts": {"not_started": 2}, "nodes": 2}  # the DaemonSet is known before its pods
    # Then the pods as their list and events arrive (batched as the threads' timing has it) until the DaemonSet's
    # own update ends the wait: a pod that finished shows before the end.
    assert all(snap["nodes"] == 2 for snap in seen)
    assert any(snap["counts"].get("succeeded") for snap in seen)


# --- what the agents publish on their pods (agent_progress_interval) ------------------------------------------------


def published(done: int, total: int, *pulling: tuple[str, int]) -> str:
    entries = [{"image": image, "since": T0, "attempt": attempt} for image, attempt in pulling]
    return json.dumps({"v": 1, "total": total, "done": done, "ok": done, "failed": 0, "skipped": 0,
                       "pulling": entries, "t": int(T0)})


def test_the_slowest_nodes_line_names_its_image_and_counts() -> None:
    since = {"node-8": T0 - 5, "node-9": T0}
    progress = {"node-8": {"done": 7, "total": 20, "image": "registry.example.com/app:2.0", "attempt": 2}}
    line = progress_line("prod-east", snapshot(twenty_nodes(), since, progress=progress), T0 + 120)
    assert "; slowest: node-8 pulling for 2m05s (7/20 images; now registry.example.com/app:2.0, attempt 2);" in line
    first = {"node-8": {"done": 3, "total": 20, "image": "registry.example.com/app:2.0", "attempt": 1}}
    line = progress_line("prod-east", snapshot(twenty_nodes(), since, progress=first), T0 + 120)
    assert "; slowest: node-8 pulling for 2m05s (3/20 images; now registry.example.com/app:2.0);" in line
    between = {"node-8": {"done": 3, "total": 20}}  # no attempt in flight (sleeping before a retry)
    line = progress_line("prod-east", snapshot(twenty_nodes(), since, progress=between), T0 + 120)
    assert "; slowest: node-8 pulling for 2m05s (3/20 images);" in line


def test_a_new_image_on_the_slowest_node_is_a_change_worth_a_line() -> None:
    since = {"node-8": T0}
    one = snapshot(twenty_nodes(), since, progress={"node-8": {"done": 1, "total": 5, "image": "a:1"}})
    other = snapshot(twenty_nodes(), since, progress={"node-8": {"done": 2, "total": 5, "image": "b:1"}})
    same = snapshot(twenty_nodes(), {"node-8": T0 + 3}, progress={"node-8": {"done": 1, "total": 5, "image": "a:1"}})
    assert change_key(one) != change_key(other)
    assert change_key(one) == change_key(same)


@pytest.mark.parametrize("text", [None, "", "{", "[]", '{"v": 2, "done": 1, "total": 2}', '{"v": 1, "done": -1, '
                                  '"total": 2}', '{"v": 1, "done": true, "total": 2}', '{"v": 1, "total": 2}'])
def test_a_progress_annotation_not_understood_is_ignored(text: Any) -> None:
    assert parse_agent_progress(text) is None


def test_parse_agent_progress_takes_the_longest_running_image() -> None:
    text = published(4, 9, ("registry.test:5000/a:" + "x" * 100, 3), ("b:1", 1))
    parsed = parse_agent_progress(text)
    assert parsed is not None
    assert (parsed["done"], parsed["total"], parsed["attempt"]) == (4, 9, 3)
    assert parsed["image"].startswith("registry.test:5000/a:") and parsed["image"].endswith("...")
    assert len(parsed["image"]) == 80
    assert parse_agent_progress(published(9, 9)) == {"done": 9, "total": 9}


def test_agent_progress_reads_the_current_pods_annotation_only() -> None:
    current = pod("p1", "n1", {"running": {"startedAt": "2026-12-04T06:00:00Z"}})
    current["metadata"]["annotations"] = {PROGRESS_ANNOTATION: published(1, 3, ("a:1", 1))}
    stale = pod("p0", "n2", {"running": {}})
    stale["metadata"]["ownerReferences"] = [{"uid": "old"}]
    stale["metadata"]["annotations"] = {PROGRESS_ANNOTATION: published(2, 3)}
    without = pod("p2", "n3", {"running": {}})
    expected = {"n1": {"done": 1, "total": 3, "image": "a:1", "attempt": 1}}
    assert agent_progress(DS, [current, stale, without]) == expected
