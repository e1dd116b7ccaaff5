# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress of a rollout: what the module publishes while it waits and the line the controller prints.

Pure, except ``write_snapshot``/``read_snapshot`` (a small JSON file, replaced atomically). The ``rollout`` module
turns each new watch state into a snapshot (``snapshot``) and writes it when it changed; the ``rollout`` action
plugin reads it while the module runs and prints ``progress_line`` through a ``Throttle``: nothing during the first
``interval`` seconds (a quick run stays quiet), then a line whenever the counts or the slowest node changed, at most
one every ``interval`` seconds.

The slowest node is the one pulling the longest. Its agent's progress annotation (``PROGRESS_ANNOTATION``, written
on its own pod at most every ``agent_progress_interval``, see agent/README.md) adds how many of its images are done
and which image it is pulling; without one (a node done within the interval, the agent's writes denied, an older
agent) the line names the node and how long it has been pulling.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._rollout import (
    is_current_pod,
    parse_time,
    pod_node,
    prefetch_status,
)

PROGRESS_ANNOTATION = "prefetch.stackrox.io/progress"
DONE = ("succeeded", "failed", "error", "gone", "unknown")
NOT_STARTED = ("pending", "not_started")
_MESSAGE_LIMIT = 80


def _shorten(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pulling_since(
    daemonset: dict[str, Any], pods: list[dict[str, Any]], acquired: Optional[dict[str, float]] = None
) -> dict[str, float]:
    """Node -> when its agent started (the running prefetch init container's startedAt), for the current pods;
    with ``acquired`` (node -> when it took its node slot), the later of the two: the wait is not pulling."""
    since = {}
    for pod in pods:
        if not is_current_pod(pod, daemonset) or not pod_node(pod):
            continue
        running = (((prefetch_status(pod) or {}).get("state")) or {}).get("running") or {}
        started = parse_time(running.get("startedAt"))
        if started is not None:
            since[pod_node(pod)] = max(started, (acquired or {}).get(pod_node(pod), started))
    return since


def _count(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_agent_progress(text: Any) -> Optional[dict[str, Any]]:
    """The agent's annotation value (JSON, ``v`` 1) as ``{"done", "total"[, "image", "attempt"]}``; None when it is
    missing or not understood (a newer agent's format, a hand edit): progress lines must never fail the wait."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("v") != 1:
        return None
    done, total = _count(value.get("done")), _count(value.get("total"))
    if done is None or total is None:
        return None
    result: dict[str, Any] = {"done": done, "total": total}
    pulling = value.get("pulling")
    first = pulling[0] if isinstance(pulling, list) and pulling and isinstance(pulling[0], dict) else {}
    if isinstance(first.get("image"), str) and first["image"]:
        result["image"] = _shorten(first["image"])
        attempt = _count(first.get("attempt"))
        if attempt:
            result["attempt"] = attempt
    return result


def agent_progress(daemonset: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Node -> its current pod's published progress (``parse_agent_progress``), for the pods that have one."""
    found = {}
    for pod in pods:
        if not is_current_pod(pod, daemonset) or not pod_node(pod):
            continue
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        parsed = parse_agent_progress(annotations.get(PROGRESS_ANNOTATION))
        if parsed is not None:
            found[pod_node(pod)] = parsed
    return found


def snapshot(
    nodes: list[dict[str, Any]],
    since: dict[str, float],
    desired: int = 0,
    warnings: Optional[list[str]] = None,
    progress: Optional[dict[str, dict[str, Any]]] = None,
) -> dict[str, Any]:
    """Counts by status (``waiting``: for a node slot), the node pulling the longest, the first node that has not
    started and the wait's warnings (JSON-ready).

    ``desired``: the DaemonSet's desiredNumberScheduled; nodes it counts that have no pod yet are not started.
    ``progress``: node -> what its agent published (``agent_progress``), added to the slowest node.
    """
    counts: dict[str, int] = {}
    for report in nodes:
        counts[str(report.get("status"))] = counts.get(str(report.get("status")), 0) + 1
    if desired > len(nodes):
        counts["not_started"] = counts.get("not_started", 0) + desired - len(nodes)
    pulling = sorted(
        (since.get(str(report["node"]), float("inf")), str(report["node"]))
        for report in nodes
        if report.get("status") == "pulling"
    )
    waiting = [report for report in nodes if report.get("status") in NOT_STARTED]
    result: dict[str, Any] = {"nodes": max(len(nodes), desired), "counts": dict(sorted(counts.items()))}
    if pulling:
        started, name = pulling[0]
        result["slowest"] = {"node": name, "since": None if started == float("inf") else started}
        result["slowest"].update((progress or {}).get(name) or {})
    if waiting:
        result["waiting"] = {"node": str(waiting[0]["node"]), "message": _shorten(waiting[0].get("message") or "")}
    if warnings:
        result["warnings"] = list(warnings)
    return result


def duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(host: str, snap: dict[str, Any], now: float) -> str:
    """``prod-east: 7/20 nodes done (6 succeeded, 1 failed), 2 pulling, 9 waiting for a slot, 2 not started;
    slowest: node-4 pulling for 2m05s (7/20 images; now registry.example.com/app:2.0, attempt 2)``; ``now`` in Unix
    seconds (the slowest node's start is the kubelet's clock, or the node's own when it took its slot)."""
    counts: dict[str, int] = dict(snap.get("counts") or {})
    done = sum(counts.get(status, 0) for status in DONE)
    parts = [f"{count} {status}" for status in DONE if (count := counts.get(status, 0))]
    line = f"{host}: {done}/{snap.get('nodes', 0)} nodes done"
    if parts:
        line += f" ({', '.join(parts)})"
    if counts.get("pulling"):
        line += f", {counts['pulling']} pulling"
    if counts.get("waiting"):
        line += f", {counts['waiting']} waiting for a slot"
    not_started = sum(counts.get(status, 0) for status in NOT_STARTED)
    if not_started:
        line += f", {not_started} not started"
    slowest = snap.get("slowest")
    if slowest:
        line += f"; slowest: {slowest['node']} pulling"
        if slowest.get("since") is not None:
            line += f" for {duration(now - float(slowest['since']))}"
        if slowest.get("total") is not None:
            line += f" ({slowest['done']}/{slowest['total']} images"
            if slowest.get("image"):
                line += f"; now {slowest['image']}"
                if slowest.get("attempt", 1) > 1:
                    line += f", attempt {slowest['attempt']}"
            line += ")"
    waiting = snap.get("waiting")
    if waiting:
        line += f"; {waiting['node']} not started"
        if waiting.get("message"):
            line += f": {waiting['message']}"
    return line


def change_key(snap: dict[str, Any]) -> str:
    """What makes a new line worth printing: the counts (``waiting`` for a slot among them), the slowest node and
    the first not-started node's reason (not the time, which changes every second)."""
    slowest = {key: value for key, value in (snap.get("slowest") or {}).items() if key != "since"}
    return json.dumps([snap.get("nodes"), snap.get("counts"), slowest, snap.get("waiting")], sort_keys=True)


class Throttle:
    """Says when to print: not before ``interval`` seconds from ``started``, then on a change, at most one line every
    ``interval`` seconds (a change held back is printed once the interval has passed)."""

    def __init__(self, interval: float, started: float) -> None:
        self.interval = interval
        self.last_printed = started  # the first line waits a whole interval: a quick rollout prints none
        self.last_key: Optional[str] = None

    def offer(self, key: str, now: float) -> bool:
        if self.interval <= 0 or key == self.last_key or now - self.last_printed < self.interval:
            return False
        self.last_key, self.last_printed = key, now
        return True


# --- the file between the module and the action plugin (I/O) -------------------------------------------------------


def write_snapshot(path: str, snap: dict[str, Any]) -> None:
    """Replace the file atomically (the reader polls it); best effort: progress must never fail the wait."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=".progress-", dir=os.path.dirname(path) or ".")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(snap, stream, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass


def read_snapshot(path: str) -> Optional[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as stream:
            parsed = json.load(stream)
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def new_warnings(snap: dict[str, Any], shown: set[str]) -> list[str]:
    """The snapshot's warnings not shown yet (each is printed once, at once: not held back by the throttle)."""
    fresh = [str(text) for text in snap.get("warnings") or [] if str(text) not in shown]
    shown.update(fresh)
    return fresh


class SnapshotWriter:
    """The module's side: called with every new watch state; writes the snapshot when it changed. ``warnings``:
    the wait's warnings (the waiter's list, read at every call)."""

    def __init__(
        self, path: str, report: Callable[[Any], dict[str, Any]], warnings: Optional[list[str]] = None
    ) -> None:
        self.path, self.report = path, report
        self.warnings = warnings if warnings is not None else []
        self.last: Optional[str] = None
        self.broken = False

    def __call__(self, state: Any) -> None:
        if state.daemonset is None or self.broken:
            return
        try:
            nodes = self.report(state).get("nodes") or []
            desired = int(((state.daemonset.get("status") or {}).get("desiredNumberScheduled")) or 0)
            leases = state.slot_leases()
            pods = list(state.pods.values())
            since = pulling_since(state.daemonset, pods, leases.acquired if leases else None)
            snap = snapshot(nodes, since, desired, self.warnings, agent_progress(state.daemonset, pods))
        except Exception:  # a state this code did not foresee: no more progress lines, the wait goes on
            self.broken = True
            return
        text = json.dumps(snap, sort_keys=True)
        if text != self.last:
            write_snapshot(self.path, snap)
            self.last = text
