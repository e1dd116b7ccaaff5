# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for an instance's DaemonSet and reading what every node's agent reported.

Pure parts: the DaemonSet completion predicate, the parsing of the agent's termination summary (DESIGN.md),
the per-node report, and the messages. I/O part: ``RolloutWaiter``, which follows the DaemonSet and its pods
with list + watch (resuming from the last resourceVersion, also after a broken stream, re-listing on 410 Gone)
instead of polling.
"""

from __future__ import annotations

import json
import math
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import (
    Cluster,
    ResourceInfo,
    WatchExpiredError,
    WatchInterruptedError,
    object_target,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ForbiddenError,
    InterruptedRunError,
    NotFoundError,
    PrefetchError,
    RolloutError,
)

PREFETCH_CONTAINER = "prefetch"
CONFIG_HASH_ANNOTATION = "prefetch.stackrox.io/config-hash"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
RAW_SUMMARY_LIMIT = 200
# The agent's own bounds on `warnings` (summary.py: MAX_WARNINGS, WARNING_LIMIT); kept here for a summary not
# written by this agent.
WARNINGS_LIMIT = 8
WARNING_LENGTH_LIMIT = 400
_MESSAGE_GROUP_LIMIT = 8
_STATUS_COUNTERS = (
    "desiredNumberScheduled",
    "currentNumberScheduled",
    "updatedNumberScheduled",
    "numberReady",
    "numberAvailable",
    "numberUnavailable",
    "numberMisscheduled",
    "observedGeneration",
)
_TAINT_EFFECTS_THAT_REPEL = ("NoSchedule", "NoExecute")


def _shorten(text: str, limit: int = RAW_SUMMARY_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _meta(obj: Optional[dict[str, Any]]) -> dict[str, Any]:
    return dict((obj or {}).get("metadata") or {})


def _status(obj: Optional[dict[str, Any]]) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


# --- DaemonSet completion (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """``done``: the rollout finished; ``no_nodes``: it can never start (desiredNumberScheduled 0)."""

    done: bool
    reason: str
    no_nodes: bool = False


def daemonset_counters(daemonset: dict[str, Any]) -> dict[str, Any]:
    status = _status(daemonset)
    counters = {key: int(status.get(key) or 0) for key in _STATUS_COUNTERS}
    counters["generation"] = int(_meta(daemonset).get("generation") or 0)
    return counters


def daemonset_progress(daemonset: dict[str, Any]) -> Progress:
    """DaemonSet part of completion: generation observed, updated == desired == available, none unavailable."""
    status = _status(daemonset)
    generation = _meta(daemonset).get("generation")
    observed = status.get("observedGeneration")
    if observed is None or (generation is not None and int(observed) < int(generation)):
        return Progress(False, f"the controller has not yet observed generation {generation}")
    desired = int(status.get("desiredNumberScheduled") or 0)
    if desired == 0:
        return Progress(False, "no node matches the DaemonSet's nodeSelector and tolerations", no_nodes=True)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    unavailable = int(status.get("numberUnavailable") or 0)
    if updated != desired or available != desired or unavailable:
        return Progress(False, f"{updated}/{desired} nodes updated, {available}/{desired} available")
    return Progress(True, f"{desired}/{desired} nodes updated and available")


def _owned_by(pod: dict[str, Any], daemonset: dict[str, Any]) -> bool:
    uid = _meta(daemonset).get("uid")
    references = _meta(pod).get("ownerReferences") or []
    if not uid or not references:
        return True  # nothing to compare: the label selector already chose the pod
    return any(reference.get("uid") == uid for reference in references)


def is_current_pod(pod: dict[str, Any], daemonset: dict[str, Any]) -> bool:
    """A live pod of the DaemonSet built from its current template."""
    if _meta(pod).get("deletionTimestamp") or not _owned_by(pod, daemonset):
        return False
    template_generation = (_meta(daemonset).get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION)
    pod_generation = (_meta(pod).get("labels") or {}).get(TEMPLATE_GENERATION_LABEL)
    if template_generation and pod_generation:
        return str(template_generation) == str(pod_generation)
    template_meta = (((daemonset.get("spec") or {}).get("template") or {}).get("metadata")) or {}
    template_hash = (template_meta.get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)
    if template_hash:
        return (_meta(pod).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION) == template_hash
    return True


def pod_node(pod: dict[str, Any]) -> str:
    """The node a DaemonSet pod runs on or is meant for (its node affinity names it before scheduling)."""
    node = ((pod.get("spec") or {}).get("nodeName")) or ""
    if node:
        return str(node)
    affinity = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        for match in term.get("matchFields") or []:
            if match.get("key") == "metadata.name" and match.get("values"):
                return str(match["values"][0])
    return ""


def prefetch_status(pod: dict[str, Any]) -> Optional[dict[str, Any]]:
    for status in _status(pod).get("initContainerStatuses") or []:
        if status.get("name") == PREFETCH_CONTAINER:
            return dict(status)
    return None


def prefetch_terminated(pod: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The terminated state that holds the summary: state.terminated, else lastState.terminated when idle."""
    status = prefetch_status(pod) or {}
    state = status.get("state") or {}
    if state.get("terminated"):
        return dict(state["terminated"])
    last = (status.get("lastState") or {}).get("terminated")
    if last and state.get("running") is None and state.get("waiting") is None:
        return dict(last)
    return None


def rollout_complete(
    daemonset: dict[str, Any], pods: list[dict[str, Any]], nodes: Optional[dict[str, dict[str, Any]]] = None
) -> Progress:
    """DaemonSet predicate plus: every current pod's prefetch init container has terminated (summary readable).

    ``nodes`` (name -> Node, None when Nodes cannot be read): a pod whose node was deleted is not waited for; its
    kubelet is gone, so its status never changes again (the pod garbage collector removes it later).
    """
    progress = daemonset_progress(daemonset)
    if not progress.done:
        return progress
    current = [pod for pod in pods if is_current_pod(pod, daemonset)]
    if nodes is not None:
        current = [pod for pod in current if not pod_node(pod) or pod_node(pod) in nodes]
    desired = int(_status(daemonset).get("desiredNumberScheduled") or 0)
    if len(current) < desired:
        return Progress(False, f"{len(current)}/{desired} current pods seen")
    waiting = [pod for pod in current if prefetch_terminated(pod) is None and start_failure(pod) is None]
    if waiting:
        return Progress(False, f"{len(waiting)} pod(s) have not finished the prefetch init container")
    return progress


# --- the agent's summary and the per-node report (pure) -----------------------------------------------------------


def _as_int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def parse_summary(message: Optional[str]) -> tuple[Optional[dict[str, Any]], str]:
    """(summary, "") for a readable agent summary, else (None, why) with the raw text cut short."""
    if not message or not message.strip():
        return None, "no summary in the termination message"
    try:
        parsed = json.loads(message)
    except ValueError:
        return None, f"unreadable summary: {_shorten(message)}"
    fatal = parsed.get("fatal") if isinstance(parsed, dict) else None
    if not isinstance(parsed, dict) or not (fatal or all(key in parsed for key in ("ok", "failed"))):
        return None, f"unexpected summary: {_shorten(message)}"
    errors: dict[str, Any] = parsed["errors"] if isinstance(parsed.get("errors"), dict) else {}
    retries: dict[str, Any] = parsed["retries"] if isinstance(parsed.get("retries"), dict) else {}
    # `warnings` came later (an additive key of format 1): a summary without it has none.
    warnings: list[Any] = parsed["warnings"] if isinstance(parsed.get("warnings"), list) else []
    summary = {
        "complete": parsed.get("complete", True) is not False,
        "ok": _as_int(parsed.get("ok")),
        "failed": _as_int(parsed.get("failed")),
        "skipped": _as_int(parsed.get("skipped")),
        "attempts": _as_int(parsed.get("attempts")),
        "bytes": _as_int(parsed.get("bytes")),
        "seconds": float(parsed.get("seconds") or 0) if isinstance(parsed.get("seconds"), (int, float)) else 0.0,
        "errors": {str(image): str(reason) for image, reason in errors.items()},
        "retries": {str(image): _as_int(count) for image, count in retries.items()},
        "truncated": bool(parsed.get("truncated")),
        "fatal": _first_line(str(fatal)) if fatal else "",
        "warnings": [
            _shorten(str(text), WARNING_LENGTH_LIMIT) for text in warnings[:WARNINGS_LIMIT] if str(text).strip()
        ],
        # Only with --parallel-nodes (`waited`) and on the canary node (`canary`); None/False otherwise.
        "waited": _seconds_or_none(parsed.get("waited")),
        "canary": parsed.get("canary") is True,
    }
    return summary, ""


def _seconds_or_none(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return _shorten(lines[0].strip()) if lines else ""


def fatal_reason(terminated: dict[str, Any]) -> Optional[str]:
    """The ``fatal`` reason of an agent summary written when ``fetch`` could not run at all, else None."""
    message = terminated.get("message")
    if not isinstance(message, str) or not message.strip():
        return None
    summary, _problem = parse_summary(message)
    return summary["fatal"] if summary and summary["fatal"] else None


def _non_json_message(terminated: dict[str, Any]) -> Optional[str]:
    message = terminated.get("message")
    if not isinstance(message, str) or not message.strip():
        return None
    try:
        json.loads(message)
    except ValueError:
        return _first_line(message)
    return None


def start_failure(pod: dict[str, Any]) -> Optional[str]:
    """Why the agent cannot start on this pod's node, when it will not by waiting longer; else None.

    A summary with ``fatal`` (from ``state.terminated``, else ``lastState.terminated`` while the init container
    waits in CrashLoopBackOff or runs again), or a non-zero exit with a message that is not JSON once the container
    is crash-looping (it was restarted). A successful current run wins over an older failure.
    """
    status = prefetch_status(pod) or {}
    state = status.get("state") or {}
    current = state.get("terminated") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    restarted = _as_int(status.get("restartCount")) > 0
    if current:
        record, crash_looping = current, restarted
    elif last and (state.get("waiting") is not None or state.get("running") is not None or not state):
        record, crash_looping = last, True
    else:
        return None
    exit_code = record.get("exitCode")
    reason = fatal_reason(record)
    if reason:
        return f"{reason} (exit code {exit_code if exit_code is not None else '?'})"
    text = _non_json_message(record)
    if text and crash_looping and exit_code not in (0, None):
        return f"agent exited {exit_code}: {text}"
    return None


def _empty_report(node: str, pod: Optional[dict[str, Any]], status: str, message: str) -> dict[str, Any]:
    return {
        "node": node,
        "pod": _meta(pod).get("name") if pod else None,
        "status": status,
        "ok": 0,
        "failed": 0,
        "skipped": 0,
        "attempts": 0,
        "bytes": 0,
        "seconds": 0.0,
        "errors": {},
        "retries": {},
        "warnings": [],
        "message": message,
    }


def _report_from_terminated(node: str, pod: dict[str, Any], terminated: dict[str, Any]) -> dict[str, Any]:
    summary, problem = parse_summary(terminated.get("message"))
    if summary is None:
        detail = f"exit code {terminated.get('exitCode', '?')}, {terminated.get('reason') or 'no reason'}"
        return _empty_report(node, pod, "unknown", f"{problem} ({detail})")
    if summary["fatal"]:
        return _empty_report(node, pod, "error", summary["fatal"])
    report = _empty_report(node, pod, "succeeded", "")
    for key in ("ok", "failed", "skipped", "attempts", "bytes", "seconds", "errors", "retries", "warnings"):
        report[key] = summary[key]
    if summary["waited"] is not None:
        report["waited"] = summary["waited"]
    if summary["canary"]:
        report["canary"] = True
    notes = []
    if not summary["complete"]:
        notes.append("interrupted before every image ended")
    if summary["truncated"]:
        notes.append("some error/retry entries were left out of the summary")
    if summary["failed"] or not summary["complete"]:
        report["status"] = "failed"
    report["message"] = "; ".join(notes)
    return report


def _waiting_message(status: dict[str, Any]) -> str:
    waiting = (status.get("state") or {}).get("waiting") or {}
    text = str(waiting.get("reason") or "Waiting")
    if waiting.get("message"):
        text += f": {_shorten(waiting['message'])}"
    last = (status.get("lastState") or {}).get("terminated") or {}
    if last:
        text += f" (last run exited {last.get('exitCode', '?')}: {last.get('reason') or 'no reason'}"
        detail = fatal_reason(last) or _non_json_message(last)
        text += f": {detail})" if detail else ")"
    return text


def _pending_message(pod: dict[str, Any]) -> str:
    status = _status(pod)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {_shorten(condition.get('message') or '')}"
    reason = status.get("reason") or status.get("phase") or "Pending"
    return f"pod {reason}: {_shorten(status.get('message') or 'waiting for the kubelet to start it')}"


def node_report(node: str, pod: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What one node's pod says: the agent's summary once the init container ended, else why not yet."""
    if pod is None:
        return _empty_report(node, None, "not_started", "no pod on this node yet")
    failure = start_failure(pod)
    if failure is not None:
        return _empty_report(node, pod, "error", failure)
    terminated = prefetch_terminated(pod)
    if terminated is not None:
        return _report_from_terminated(node, pod, terminated)
    status = prefetch_status(pod)
    state = (status or {}).get("state") or {}
    if state.get("running") is not None:
        started = state["running"].get("startedAt")
        return _empty_report(node, pod, "pulling", f"pulling since {started}" if started else "pulling")
    if state.get("waiting") is not None:
        return _empty_report(node, pod, "pending", _waiting_message(status or {}))
    phase = _status(pod).get("phase") or "Pending"
    if phase == "Pending":
        return _empty_report(node, pod, "not_started", _pending_message(pod))
    return _empty_report(node, pod, "unknown", f"pod {phase}: {_shorten(_status(pod).get('message') or '')}")


def _newest_per_node(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    chosen: dict[str, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: str(_meta(p).get("creationTimestamp") or "")):
        chosen[pod_node(pod) or f"(unscheduled {_meta(pod).get('name')})"] = pod
    return chosen


def node_not_ready(node: dict[str, Any]) -> Optional[str]:
    """Why a node is not Ready (its Ready condition), or None when it is (or has not reported yet)."""
    for condition in _status(node).get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return None
            reason = condition.get("reason") or f"Ready={condition.get('status')}"
            return f"node not Ready since {condition.get('lastTransitionTime') or '?'} ({reason}: " \
                   f"{_shorten(condition.get('message') or '', 200)})"
    return None


_STILL_WAITING = ("pulling", "waiting", "pending", "not_started", "unknown")


def annotate_nodes(
    reports: list[dict[str, Any]], nodes: Optional[dict[str, dict[str, Any]]], seen: set[str]
) -> list[dict[str, Any]]:
    """Adds ``node_state`` (ready, not_ready, cordoned, deleted) from the Node objects, and a ``gone`` entry for
    every node that had a pod of this rollout and was deleted since. Without Nodes (None), reports stay as they are.
    """
    if nodes is None:
        return reports
    names = {report["node"] for report in reports}
    reports = reports + [_empty_report(name, None, "gone", "") for name in sorted(seen - names - set(nodes))]
    for report in reports:
        node = nodes.get(report["node"])
        if node is None and report["node"].startswith("(unscheduled "):
            continue
        if node is None:
            report["node_state"] = "deleted"
            if report["status"] in _STILL_WAITING or report["status"] == "gone":
                before = f" (it was {report['status']}: {report['message']})" if report["message"] else ""
                report["status"] = "gone"
                report["message"] = f"the node was deleted during the rollout{before}"
            continue
        problem = node_not_ready(node)
        if problem is not None:
            report["node_state"] = "not_ready"
            if report["status"] in _STILL_WAITING:
                report["message"] = f"{problem}; {report['message']}" if report["message"] else problem
        elif (node.get("spec") or {}).get("unschedulable"):
            report["node_state"] = "cordoned"
        else:
            report["node_state"] = "ready"
    return sorted(reports, key=lambda report: report["node"])


# --- node slots: the agents' --parallel-nodes cap seen through their Leases (pure) -------------------------------

RELEASED_BY_ANNOTATION = "prefetch.stackrox.io/released-by"  # the agent's leases.RELEASED_BY
INSTANCE_LABEL = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class NodeSlots:
    """The cap the DaemonSet's agents run with: ``--parallel-nodes N`` (0: none) and ``--canary`` of the prefetch
    container; ``instance`` names their Leases (``<instance>-slot-<i>``, ``<instance>-canary``)."""

    parallel_nodes: int = 0
    canary: bool = False
    instance: str = ""

    @property
    def enabled(self) -> bool:
        return self.parallel_nodes > 0

    def lease_names(self) -> set[str]:
        names = {f"{self.instance}-slot-{index}" for index in range(self.parallel_nodes)}
        return names | {f"{self.instance}-canary"} if self.canary else names


def _flag_value(args: list[str], index: int, flag: str) -> Optional[str]:
    """The value of ``--flag=V``/``-flag=V`` at ``args[index]``, of ``--flag V`` (the next argument), or None."""
    argument = args[index]
    for spelling in (f"--{flag}", f"-{flag}"):
        if argument.startswith(spelling + "="):
            return argument[len(spelling) + 1:]
        if argument == spelling:
            return args[index + 1] if index + 1 < len(args) else ""
    return None


def parse_slot_flags(args: list[str]) -> tuple[int, bool]:
    """(parallel_nodes, canary) from the agent's command line; the last occurrence wins, as for Go's flag package.

    ``--canary`` is a boolean flag: bare, or ``--canary=true|false`` (never ``--canary true``, which Go reads as a
    positional argument); an unreadable ``--parallel-nodes`` counts as 0 (the agent would refuse it anyway).
    """
    parallel_nodes, canary = 0, False
    for index, argument in enumerate(args):
        count = _flag_value(args, index, "parallel-nodes")
        if count is not None:
            parallel_nodes = int(count) if count.strip().isdigit() else 0
        elif argument in ("--canary", "-canary"):
            canary = True
        elif argument.startswith(("--canary=", "-canary=")):
            canary = argument.split("=", 1)[1].strip().lower() in ("1", "t", "true")
    return parallel_nodes, canary


def _prefetch_container(daemonset: dict[str, Any]) -> dict[str, Any]:
    spec = (((daemonset.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for container in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        if container.get("name") == PREFETCH_CONTAINER:
            return dict(container)
    return {}


def node_slots(daemonset: dict[str, Any]) -> NodeSlots:
    """The cap of the DaemonSet's current template; the instance from the agent's INSTANCE_NAME, else its name."""
    container = _prefetch_container(daemonset)
    parallel_nodes, canary = parse_slot_flags([str(arg) for arg in container.get("args") or []])
    env = {str(item.get("name")): item.get("value") for item in container.get("env") or [] if "value" in item}
    instance = str(env.get("INSTANCE_NAME") or _meta(daemonset).get("name") or "")
    return NodeSlots(parallel_nodes, canary and parallel_nodes > 0, instance)


def parse_time(value: Any) -> Optional[float]:
    """Unix seconds of a Kubernetes Time (``2026-12-04T06:00:00Z``) or MicroTime (``...06:00:00.123456Z``), None
    when there is none or it is odd."""
    if not isinstance(value, str) or not value:
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def agent_started(pod: dict[str, Any]) -> Optional[float]:
    """When the prefetch init container started (running, else terminated), Unix seconds of the node's clock."""
    state = (prefetch_status(pod) or {}).get("state") or {}
    record = state.get("running") or state.get("terminated") or {}
    return parse_time(record.get("startedAt"))


@dataclass(frozen=True)
class SlotLeases:
    """What the instance's Leases say per node: the Lease it holds (and since when, its acquireTime), and when it
    last released one (``released-by``, its renewTime; both times of that node's own clock)."""

    holders: dict[str, str] = field(default_factory=dict)
    acquired: dict[str, float] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)


def lease_release(lease: dict[str, Any]) -> Optional[tuple[str, float]]:
    """(node, release time) of a Lease its last holder released, else None."""
    spec = dict(lease.get("spec") or {})
    node = (_meta(lease).get("annotations") or {}).get(RELEASED_BY_ANNOTATION)
    released = parse_time(spec.get("renewTime"))
    if spec.get("holderIdentity") or not node or released is None:
        return None
    return str(node), released


def slot_leases(slots: NodeSlots, leases: list[dict[str, Any]], releases: dict[str, float]) -> SlotLeases:
    """The holders of this cap's slot and canary Leases; ``releases`` adds the releases seen earlier in the wait
    (a released slot is soon taken by a waiting node, which clears ``released-by``)."""
    names = slots.lease_names()
    holders, acquired, released = {}, {}, dict(releases)
    for lease in leases:
        if _meta(lease).get("name") not in names:
            continue
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        if holder:
            holders[holder] = str(_meta(lease).get("name"))
            since = parse_time((lease.get("spec") or {}).get("acquireTime"))
            if since is not None:
                acquired[holder] = since
        release = lease_release(lease)
        if release is not None:
            released[release[0]] = max(release[1], released.get(release[0], release[1]))
    return SlotLeases(holders, acquired, released)


def mark_slot_waiting(
    reports: list[dict[str, Any]], pods: dict[str, dict[str, Any]], slots: NodeSlots, leases: Optional[SlotLeases]
) -> list[dict[str, Any]]:
    """With the cap on, splits the running agents (``pulling``) into those holding a slot or the canary Lease
    (``pulling``) and those without one (``waiting`` for a slot). A node that released its slot after its agent
    started is done pulling and only finishing (node label, metrics): it stays ``pulling``, never ``waiting``.
    Without the cap, or without the Leases (not listed yet, or denied), reports stay as they are."""
    if not slots.enabled or leases is None:
        return reports
    for report in reports:
        if report["status"] != "pulling":
            continue
        node = str(report["node"])
        started = agent_started(pods[node]) if node in pods else None
        if node in leases.holders:
            held = leases.holders[node]
            report["message"] += " as the canary" if held.endswith("-canary") else f" in node slot {held}"
        elif node in leases.released and (started is None or leases.released[node] >= started):
            report["message"] = "done pulling, released its node slot; finishing (node label, metrics)"
        else:
            report["status"] = "waiting"
            report["message"] = _waiting_for_slot_message(slots, leases)
    return reports


def _waiting_for_slot_message(slots: NodeSlots, leases: SlotLeases) -> str:
    text = f"waiting for a node slot (parallel_nodes={slots.parallel_nodes}"
    holders = sorted(leases.holders)
    return text + (f"; held by {_join_names(holders)})" if holders else ")")


def _join_names(names: list[str], limit: int = _MESSAGE_GROUP_LIMIT) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- the waves estimate (pure) -------------------------------------------------------------------------------------


def wave_seconds(reports: list[dict[str, Any]]) -> Optional[float]:
    """One wave: the median time a finished node pulled, its summary's ``seconds`` minus ``waited`` (the run time
    includes the wait for a slot, which is exactly what the waves add up; pod timestamps cannot separate the two).
    The median, because nodes that had every image already (a few seconds) or hit a retry must not set the pace."""
    runs = [
        max(0.0, float(report["seconds"]) - float(report.get("waited") or 0.0))
        for report in reports
        if report["status"] in ("succeeded", "failed")
    ]
    return statistics.median(runs) if runs else None


def waves_needed(nodes: int, slots: NodeSlots) -> int:
    """ceil(nodes / parallel_nodes); with the canary, its run alone comes first."""
    if not slots.enabled or nodes <= 0:
        return 0
    if slots.canary:
        return 1 + math.ceil((nodes - 1) / slots.parallel_nodes)
    return math.ceil(nodes / slots.parallel_nodes)


def waves_warning(
    timeout: float, nodes: int, slots: NodeSlots, wave: Optional[float], started: float, deadline: float
) -> Optional[str]:
    """The warning when the waves likely end after the deadline: ``started`` (the first agent's start) plus
    waves * ``wave``, against ``deadline`` (same clock), else None."""
    waves = waves_needed(nodes, slots)
    if wave is None or waves == 0 or started + waves * wave <= deadline:
        return None
    canary = " and canary" if slots.canary else ""
    return (
        f"timeout {int(timeout)}s is likely too short for {nodes} nodes at parallel_nodes={slots.parallel_nodes}"
        f"{canary}: {waves} waves of ~{round(wave)}s each need ~{round(waves * wave)}s; raise timeout or "
        "parallel_nodes"
    )


def build_report(
    daemonset: dict[str, Any],
    pods: list[dict[str, Any]],
    expected_nodes: Optional[list[str]] = None,
    nodes_by_name: Optional[dict[str, dict[str, Any]]] = None,
    seen_nodes: Optional[set[str]] = None,
    leases: Optional[SlotLeases] = None,
) -> dict[str, Any]:
    """``nodes`` (sorted by node), ``totals`` and ``daemonset`` counters from the current pods; with the Node
    objects, each entry also says the node's state, and nodes deleted during the rollout are reported ``gone``;
    with the cap on and its Leases, running agents without a slot are ``waiting``."""
    by_node = _newest_per_node([pod for pod in pods if is_current_pod(pod, daemonset)])
    names = set(by_node) | set(expected_nodes or [])
    nodes = [node_report(name, by_node.get(name)) for name in sorted(names)]
    nodes = mark_slot_waiting(nodes, by_node, node_slots(daemonset), leases)
    nodes = annotate_nodes(nodes, nodes_by_name, seen_nodes or set())
    totals = {
        "nodes": len(nodes),
        "nodes_succeeded": sum(1 for report in nodes if report["status"] == "succeeded"),
        "nodes_failed": sum(1 for report in nodes if report["status"] == "failed"),
        "nodes_error": sum(1 for report in nodes if report["status"] == "error"),
        "nodes_gone": sum(1 for report in nodes if report["status"] == "gone"),
        "nodes_with_warnings": sum(1 for report in nodes if report["warnings"]),
        "images_ok": sum(report["ok"] for report in nodes),
        "images_failed": sum(report["failed"] for report in nodes),
        "images_skipped": sum(report["skipped"] for report in nodes),
        "bytes": sum(report["bytes"] for report in nodes),
    }
    return {"nodes": nodes, "totals": totals, "daemonset": daemonset_counters(daemonset)}


# --- messages (pure) -----------------------------------------------------------------------------------------------


def _join_limited(parts: list[str], limit: int = _MESSAGE_GROUP_LIMIT) -> str:
    shown = "; ".join(parts[:limit])
    return shown + (f"; and {len(parts) - limit} more" if len(parts) > limit else "")


def pull_failure_message(nodes: list[dict[str, Any]]) -> str:
    """Failed images grouped by (image, reason) with the nodes that hit them, deduplicated."""
    failed = [report for report in nodes if report["status"] == "failed"]
    groups: dict[tuple[str, str], list[str]] = {}
    unexplained = []
    for report in failed:
        for image, reason in sorted(report["errors"].items()):
            groups.setdefault((image, reason), []).append(report["node"])
        if not report["errors"]:
            unexplained.append(
                f"{report['node']}: {report['failed']} image(s) failed ({report['message'] or 'no details'})"
            )
    parts = [f"{image}: {reason} [{', '.join(names)}]" for (image, reason), names in sorted(groups.items())]
    return f"image pulls failed on {len(failed)} of {len(nodes)} node(s): {_join_limited(parts + unexplained)}"


def node_warnings(nodes: list[dict[str, Any]]) -> list[str]:
    """One line per node whose agent reported warnings (a post-run step failed, e.g. its node label was denied)."""
    return [f"node {report['node']}: {'; '.join(report['warnings'])}" for report in nodes if report["warnings"]]


def _nodes_with(nodes: list[dict[str, Any]], statuses: tuple[str, ...], with_message: bool) -> list[str]:
    """Node names; with_message, nodes that share a message are listed once: ``n1, n2 (ErrImagePull: ...)``."""
    picked = [report for report in nodes if report["status"] in statuses]
    if not with_message:
        return [str(report["node"]) for report in picked]
    by_message: dict[str, list[str]] = {}
    for report in picked:
        by_message.setdefault(str(report["message"]), []).append(str(report["node"]))
    return [f"{', '.join(names)} ({message})" for message, names in by_message.items()]


def start_failure_message(target: str, nodes: list[dict[str, Any]]) -> str:
    """The nodes where the agent cannot start, grouped by reason."""
    failed = _nodes_with(nodes, ("error",), with_message=True)
    count = sum(1 for report in nodes if report["status"] == "error")
    return f"{target}: the prefetch agent cannot start on {count} of {len(nodes)} node(s): {_join_limited(failed)}"


def timeout_message(
    target: str,
    timeout: float,
    progress: Progress,
    nodes: list[dict[str, Any]],
    events: list[str],
    parallel_nodes: int = 0,
) -> str:
    """Which nodes are still pulling, which wait for a node slot, which never started and why, plus the
    DaemonSet's warning events."""
    parts = [f"timed out after {int(timeout)}s waiting for {target} ({progress.reason})"]
    not_ready = [n for n in nodes if n.get("node_state") == "not_ready" and n["status"] in _STILL_WAITING]
    if not_ready:
        described = ["{} ({})".format(n["node"], n["message"]) for n in not_ready]
        parts.append(f"node not Ready: {_join_limited(described)}")
    nodes = [n for n in nodes if n not in not_ready]
    gone = _nodes_with(nodes, ("gone",), with_message=False)
    if gone:
        parts.append(f"deleted during the rollout: {', '.join(gone)}")
    pulling = _nodes_with(nodes, ("pulling",), with_message=False)
    waiting_for_slot = _nodes_with(nodes, ("waiting",), with_message=False)
    waiting = _nodes_with(nodes, ("pending", "not_started"), with_message=True)
    if pulling:
        parts.append(f"still pulling: {', '.join(pulling)}")
    if waiting_for_slot:
        # The cap is then (part of) the reason: name it, so the user raises parallel_nodes or the timeout.
        cap = f" (parallel_nodes={parallel_nodes})" if parallel_nodes else ""
        parts.append(
            f"{len(waiting_for_slot)} node(s) still waiting for a node slot{cap}: {_join_names(waiting_for_slot)}"
        )
    if waiting:
        parts.append(f"not started: {_join_limited(waiting)}")
    if events:
        parts.append(f"events: {_join_limited(events, 5)}")
    return "; ".join(parts)


def no_nodes_message(target: str, daemonset: dict[str, Any], events: list[str]) -> str:
    spec = (((daemonset.get("spec") or {}).get("template") or {}).get("spec")) or {}
    selector = spec.get("nodeSelector") or {}
    text = (
        f"{target} schedules no pods (desiredNumberScheduled is 0): no node matches its "
        f"nodeSelector {json.dumps(selector, sort_keys=True)} and tolerations"
    )
    return text + (f"; events: {_join_limited(events, 5)}" if events else "")


def warning_events(events: list[dict[str, Any]], names: set[str]) -> list[str]:
    """Warning events about the DaemonSet or its pods, newest first, one line per distinct reason/message."""
    relevant = [
        event
        for event in events
        if event.get("type") == "Warning" and (event.get("involvedObject") or {}).get("name") in names
    ]

    def when(event: dict[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or _meta(event).get("creationTimestamp") or "")

    grouped: dict[tuple[str, str, str], list[str]] = {}
    for event in sorted(relevant, key=when, reverse=True):
        involved = event.get("involvedObject") or {}
        key = (str(involved.get("kind")), str(event.get("reason")), _shorten(event.get("message") or ""))
        objects = grouped.setdefault(key, [])
        if involved.get("name") not in objects:
            objects.append(str(involved.get("name")))
    lines = []
    for (kind, reason, message), objects in grouped.items():
        more = f" (+{len(objects) - 1} more)" if len(objects) > 1 else ""
        lines.append(f"{kind} {objects[0]}{more}: {reason}: {message}")
    return lines


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            return True
        if toleration.get("key") != taint.get("key"):
            continue
        if toleration.get("operator") == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def eligible_nodes(nodes: list[dict[str, Any]], pod_spec: dict[str, Any]) -> list[str]:
    """Nodes the DaemonSet should run on by nodeSelector and taints/tolerations (node affinity is not evaluated)."""
    selector = pod_spec.get("nodeSelector") or {}
    tolerations = list(pod_spec.get("tolerations") or [])
    names = []
    for node in nodes:
        labels = _meta(node).get("labels") or {}
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        taints = [
            t for t in ((node.get("spec") or {}).get("taints") or []) if t.get("effect") in _TAINT_EFFECTS_THAT_REPEL
        ]
        if all(_tolerated(taint, tolerations) for taint in taints):
            names.append(str(_meta(node).get("name")))
    return sorted(names)


# --- metrics (pure) ------------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The aggregator's /metrics body: a JSON list of pull attempts."""
    try:
        parsed = json.loads(text)
    except ValueError:
        raise ClusterError(
            f"the metrics aggregator answered something other than JSON: {_shorten(text, 120)}"
        ) from None
    if not isinstance(parsed, list):
        raise ClusterError(f"the metrics aggregator answered a {type(parsed).__name__}, expected a list")
    return [item for item in parsed if isinstance(item, dict)]


def metrics_summary(metrics: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per node: pull attempts, failed attempts and bytes pulled."""
    summary: dict[str, dict[str, int]] = {}
    for item in metrics:
        entry = summary.setdefault(
            str(item.get("node") or "unknown"), {"attempts": 0, "failed_attempts": 0, "bytes": 0}
        )
        entry["attempts"] += 1
        entry["failed_attempts"] += 1 if item.get("error") else 0
        entry["bytes"] += _as_int(item.get("size_bytes"))
    return dict(sorted(summary.items()))


def metrics_path(namespace: str, name: str, port: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}-metrics:{port}/proxy/metrics"


# --- following the rollout through the API server -----------------------------------------------------------------


@dataclass
class WatchState:
    """The latest DaemonSet and pods as seen through list + watch."""

    name: str
    daemonset: Optional[dict[str, Any]] = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: Optional[dict[str, dict[str, Any]]] = None  # None: the Nodes are not (or cannot be) watched
    seen_nodes: set[str] = field(default_factory=set)  # nodes that had a current pod of this rollout
    # The Nodes' first list arrived, or they cannot be watched: until then a rollout that is already complete (the
    # pods' list came first) would be reported without node states.
    nodes_settled: bool = False
    leases: Optional[dict[str, dict[str, Any]]] = None  # None: not listed yet, not watched, or denied
    # Node -> its latest slot release seen in this wait: kept after a waiting node took the slot over (which clears
    # the release annotation), so a node that is only finishing is not taken for one waiting.
    releases: dict[str, float] = field(default_factory=dict)

    @property
    def slots(self) -> NodeSlots:
        """The cap of the DaemonSet as last seen (its Leases are watched when the wait started with one)."""
        return node_slots(self.daemonset) if self.daemonset is not None else NodeSlots()

    def slot_leases(self) -> Optional[SlotLeases]:
        if not self.slots.enabled or self.leases is None:
            return None
        return slot_leases(self.slots, list(self.leases.values()), self.releases)

    def _saw_lease(self, lease: dict[str, Any]) -> None:
        release = lease_release(lease)
        if release is not None:
            node, when = release
            self.releases[node] = max(when, self.releases.get(node, when))

    def _saw(self, pod: dict[str, Any]) -> None:
        if self.daemonset is not None and is_current_pod(pod, self.daemonset) and pod_node(pod):
            self.seen_nodes.add(pod_node(pod))

    def sync(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A fresh list replaces everything known of that kind."""
        if kind == "nodes":
            self.nodes = {str(_meta(item).get("name")): item for item in items}
            self.nodes_settled = True
        elif kind == "leases":
            self.leases = {str(_meta(item).get("name")): item for item in items}
            for lease in items:
                self._saw_lease(lease)
        elif kind == "pods":
            self.pods = {str(_meta(item).get("name")): item for item in items}
            for pod in items:
                self._saw(pod)
        else:
            self.daemonset = next((item for item in items if _meta(item).get("name") == self.name), None)

    def apply(self, kind: str, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        kind_of_event = event.get("type")
        if kind_of_event not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK only moves the resourceVersion
        name = str(_meta(obj).get("name"))
        if kind == "nodes":
            _apply_event(self.nodes, kind_of_event, name, obj)
        elif kind == "leases":
            _apply_event(self.leases, kind_of_event, name, obj)
            if self.leases is not None:
                self._saw_lease(obj)
        elif kind == "pods":
            if kind_of_event == "DELETED":
                self.pods.pop(name, None)
            else:
                self.pods[name] = obj
                self._saw(obj)
        elif name == self.name:
            self.daemonset = None if kind_of_event == "DELETED" else obj


def _apply_event(
    known: Optional[dict[str, dict[str, Any]]], kind_of_event: str, name: str, obj: dict[str, Any]
) -> None:
    """An ADDED/MODIFIED/DELETED event on a kind that may be unwatched (None: nothing to keep up to date)."""
    if known is None:
        return
    if kind_of_event == "DELETED":
        known.pop(name, None)
    else:
        known[name] = obj


class _ListWatch(threading.Thread):
    """Lists once, then watches from the list's resourceVersion, and after a watch ends or breaks watches again from
    the last event's; lists again on 410 Gone; reports into a queue.

    The requests themselves are retried by the Cluster's policy (429, 5xx, a restarting API server) within the
    module's deadline; a request that still fails ends the wait, naming the request and the cause.
    """

    def __init__(
        self,
        cluster: Cluster,
        info: ResourceInfo,
        namespace: str,
        selector: Optional[str],
        kind: str,
        events: queue.Queue[tuple[str, str, Any]],
        watch_slice: int,
        optional: bool = False,
    ) -> None:
        super().__init__(daemon=True, name=f"watch-{kind}")
        self.cluster, self.info, self.namespace, self.selector = cluster, info, namespace, selector
        self.kind, self.events, self.watch_slice = kind, events, watch_slice
        self.optional = optional  # a denied list/watch ends this watcher quietly instead of failing the wait
        self.stopped = threading.Event()
        self.version: Optional[str] = None  # where the next watch starts; None: list first

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.version is None:
                    items, version = self.cluster.list_objects(self.info, self.namespace, self.selector)
                    self.events.put(("sync", self.kind, items))
                    self.version = version
                self._follow(self.version)
            except WatchExpiredError:
                self.version = None
            except WatchInterruptedError:
                self.stopped.wait(0.5)  # the stream broke: watch again from the last event (the cluster retries)
            except (ForbiddenError, NotFoundError) as error:
                self.events.put(("unwatched", self.kind, None) if self.optional else ("error", self.kind, error))
                return
            except PrefetchError as error:
                self.events.put(("error", self.kind, error))
                return
            except Exception as error:  # never let a thread die silently: the waiter would wait for nothing
                self.events.put(("error", self.kind, ClusterError(f"watch of {self.kind} failed: {error}")))
                return

    def _follow(self, version: str) -> None:
        started = time.monotonic()
        for event in self.cluster.watch(self.info, self.namespace, version, self.watch_slice, self.selector):
            if self.stopped.is_set():
                return
            self.version = version = str(_meta(event.get("object")).get("resourceVersion") or version)
            if event.get("type") != "BOOKMARK":
                self.events.put(("event", self.kind, event))
        if time.monotonic() - started < 1.0:
            self.stopped.wait(0.5)  # a watch that ends at once (proxy, odd server) must not turn into a busy loop


@dataclass
class RolloutWaiter:
    """Waits until ``rollout_complete`` holds, the DaemonSet can never start, or ``timeout`` passes."""

    cluster: Cluster
    name: str
    namespace: str
    timeout: float
    clock: Callable[[], float] = time.monotonic
    watch_slice: int = 30
    # Called with the state after every batch of watch events while waiting (live progress, _progress.py).
    on_progress: Optional[Callable[[WatchState], None]] = None
    wall: Callable[[], float] = time.time  # Unix time, to set the deadline against the agents' start times
    # Warnings of this wait for the task's result (at most one: the waves estimate); the progress lines show them.
    warnings: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return object_target("DaemonSet", self.name, self.namespace)

    def existing_daemonset(self) -> Optional[dict[str, Any]]:
        return self.cluster.get(self.cluster.resource_for("apps/v1", "DaemonSet"), self.name, self.namespace)

    def wait(self, daemonset: dict[str, Any]) -> WatchState:
        """Follow the DaemonSet and its pods; RolloutError (with the partial report) on timeout or no nodes."""
        deadline = self.clock() + self.timeout
        wall_deadline = self.wall() + self.timeout
        state = WatchState(self.name, daemonset)
        events: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        watchers = self._start_watchers(daemonset, node_slots(daemonset), events, state)
        if not watchers:
            return state  # complete already: nothing to watch (a no-op re-run)
        try:
            while True:
                progress = self._evaluate(state)
                if progress.done and state.nodes_settled:
                    return state
                self._check_waves(state, wall_deadline)
                if self.on_progress is not None:
                    self.on_progress(state)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    if progress.done:
                        return state  # complete; only the node states are missing
                    self._fail_timeout(state, progress)
                self._drain(state, events, remaining)
        except InterruptedRunError as error:
            raise RolloutError(str(error), self.report(state), interrupted=True) from None
        finally:
            for watcher in watchers:
                watcher.stopped.set()

    def _start_watchers(
        self,
        daemonset: dict[str, Any],
        slots: NodeSlots,
        events: queue.Queue[tuple[str, str, Any]],
        state: WatchState,
    ) -> list[_ListWatch]:
        """The list + watch threads; none when the DaemonSet is complete already (its pods and Nodes are then listed
        here, into ``state``, and the watches would only cost their set-up)."""
        versions: dict[str, Optional[str]] = {"pods": None, "nodes": None}
        if daemonset_progress(daemonset).done:
            try:
                pods, versions["pods"] = self.cluster.list_objects(
                    self.cluster.resource_for("v1", "Pod"), self.namespace, pod_selector(daemonset)
                )
                state.sync("pods", pods)
                try:
                    nodes, versions["nodes"] = self.cluster.list_objects(self.cluster.resource_for("v1", "Node"))
                    state.sync("nodes", nodes)
                except (ForbiddenError, NotFoundError):  # as the optional Nodes watcher: a report without them
                    state.nodes, state.nodes_settled = None, True
            except PrefetchError as error:
                raise RolloutError(f"while waiting for {self.target}: {error}", self.report(state)) from None
            if self._evaluate(state).done:
                return []
        slice_seconds = max(1, min(self.watch_slice, int(self.timeout) + 1))
        watchers = [
            # No field selector: list/watch the namespace's DaemonSets and pick ours by name.
            _ListWatch(
                self.cluster,
                self.cluster.resource_for("apps/v1", "DaemonSet"),
                self.namespace,
                None,
                "daemonsets",
                events,
                slice_seconds,
            ),
            _ListWatch(
                self.cluster,
                self.cluster.resource_for("v1", "Pod"),
                self.namespace,
                pod_selector(daemonset),
                "pods",
                events,
                slice_seconds,
            ),
            # Nodes: to tell a node that was deleted, or stopped reporting, from one that is still pulling.
            # Optional: a user who may not list Nodes gets the report without node states.
            _ListWatch(
                self.cluster,
                self.cluster.resource_for("v1", "Node"),
                "",
                None,
                "nodes",
                events,
                slice_seconds,
                optional=True,
            ),
        ]
        leases = self._lease_info() if slots.enabled else None
        if leases is not None:
            # The agents' node-slot Leases, to tell a node waiting for a slot from one pulling. Optional as the
            # Nodes: a user who may not list Leases gets the report without `waiting`.
            selector = f"{INSTANCE_LABEL}={slots.instance}"
            watchers.append(
                _ListWatch(self.cluster, leases, self.namespace, selector, "leases", events, slice_seconds, True)
            )
        for watcher in watchers:
            # What was listed above is in ``state``: its watch goes on from that list (the Nodes' only when they
            # could be listed; denied, their watcher finds that out again).
            watcher.version = versions.get(watcher.kind) or None
            watcher.start()
        return watchers

    def _lease_info(self) -> Optional[ResourceInfo]:
        try:
            return self.cluster.resource_for("coordination.k8s.io/v1", "Lease")
        except (ForbiddenError, NotFoundError):  # discovery denied or the API not served: no waiting state
            return None

    def _check_waves(self, state: WatchState, wall_deadline: float) -> None:
        """Once a node finished, warn (once) when the waves of the cap likely need longer than the timeout."""
        if self.warnings or not state.slots.enabled or state.daemonset is None:
            return
        reports = self.report(state)["nodes"]
        wave = wave_seconds(reports)
        if wave is None:
            return
        current = [pod for pod in state.pods.values() if is_current_pod(pod, state.daemonset)]
        starts = [when for when in (agent_started(pod) for pod in current) if when is not None]
        desired = int(_status(state.daemonset).get("desiredNumberScheduled") or 0)
        started = min(starts) if starts else wall_deadline - self.timeout
        warning = waves_warning(self.timeout, max(desired, len(reports)), state.slots, wave, started, wall_deadline)
        if warning is not None:
            self.warnings.append(warning)

    def _drain(self, state: WatchState, events: queue.Queue[tuple[str, str, Any]], remaining: float) -> None:
        """Block for the next report (at most ``remaining`` seconds), then take every report already queued."""
        try:
            item = events.get(timeout=max(0.01, remaining))
        except queue.Empty:
            return
        while True:
            self._consume(state, item)
            try:
                item = events.get_nowait()
            except queue.Empty:
                return

    def _consume(self, state: WatchState, item: tuple[str, str, Any]) -> None:
        what, kind, payload = item
        if what == "error":
            raise RolloutError(f"while waiting for {self.target}: {payload}", self.report(state))
        if what == "unwatched" and kind == "leases":
            state.leases = None
        elif what == "unwatched":
            state.nodes = None
            state.nodes_settled = True
        elif what == "sync":
            state.sync(kind, payload)
        else:
            state.apply(kind, payload)

    def _evaluate(self, state: WatchState) -> Progress:
        if state.daemonset is None:
            raise RolloutError(f"{self.target} was deleted while waiting for it", {})
        progress = rollout_complete(state.daemonset, list(state.pods.values()), state.nodes)
        if progress.no_nodes:
            events = self._warning_events(state, {self.name, *state.pods.keys()})
            raise RolloutError(no_nodes_message(self.target, state.daemonset, events), self.report(state))
        current = [pod for pod in state.pods.values() if is_current_pod(pod, state.daemonset)]
        if any(start_failure(pod) is not None for pod in current):
            report = self.report(state)
            raise RolloutError(start_failure_message(self.target, report["nodes"]), report)
        return progress

    def _fail_timeout(self, state: WatchState, progress: Progress) -> None:
        report = self.report(state, with_expected_nodes=True)
        # Pulling and pending pods already say why; events explain the DaemonSet and pods that never started.
        unexplained = {node["pod"] for node in report.get("nodes", []) if node["status"] in ("not_started", "unknown")}
        events = self._warning_events(state, {self.name} | {pod for pod in unexplained if pod})
        message = timeout_message(
            self.target, self.timeout, progress, report["nodes"], events, state.slots.parallel_nodes
        )
        trouble = getattr(self.cluster, "trouble", "")
        if trouble:
            message += f"; the API server was failing: {trouble}"
        raise RolloutError(message, report)

    def report(self, state: WatchState, with_expected_nodes: bool = False) -> dict[str, Any]:
        if state.daemonset is None:
            return {}
        expected = self._expected_nodes(state.daemonset) if with_expected_nodes else None
        pods = list(state.pods.values())
        return build_report(state.daemonset, pods, expected, state.nodes, state.seen_nodes, state.slot_leases())

    def _expected_nodes(self, daemonset: dict[str, Any]) -> Optional[list[str]]:
        """Nodes that should run a pod, to name those that never got one (None when nodes may not be listed)."""
        spec = (((daemonset.get("spec") or {}).get("template") or {}).get("spec")) or {}
        if spec.get("affinity"):
            return None  # node affinity is not evaluated here; better no names than wrong ones
        try:
            nodes, _version = self.cluster.list_objects(self.cluster.resource_for("v1", "Node"))
        except PrefetchError:  # denied, or the API server failing: the report goes without them
            return None
        return eligible_nodes(nodes, spec)

    def _warning_events(self, state: WatchState, names: set[str]) -> list[str]:
        try:
            items, _version = self.cluster.list_objects(self.cluster.resource_for("v1", "Event"), self.namespace)
        except PrefetchError:  # denied, or the API server failing: the message goes without them
            return []
        return warning_events(items, names)

    def fetch_metrics(self, port: str) -> list[dict[str, Any]]:
        path = metrics_path(self.namespace, self.name, port)
        target = f"Service {self.namespace}/{self.name}-metrics port {port} (service proxy)"
        return parse_metrics(self.cluster.get_text(path, "get", target))


def pod_selector(daemonset: dict[str, Any]) -> Optional[str]:
    """``key=value,...`` from the DaemonSet's spec.selector.matchLabels (pods are filtered by owner as well)."""
    labels = (((daemonset.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or None
