"""The termination summary (DESIGN.md "the termination summary"): one compact JSON object, at most 4096 bytes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from image_prefetcher.engine import ImageResult
from image_prefetcher.logs import Logger

SUMMARY_LIMIT = 4096  # the kubelet's cap on a termination message
FORMAT_VERSION = 1  # `warnings` was added later without a new version: readers ignore keys they do not know
# `warnings`: one line per post-run step that failed (labels, metrics, debug listing), so a few short entries.
MAX_WARNINGS = 8
WARNING_LIMIT = 400  # characters; an API server's denial with the node and service account names is ~250


@dataclass(frozen=True)
class RunReport:
    """What a `fetch` run did; handed to the summary builder and to the post-run steps (labels, metrics)."""

    node: str
    results: Mapping[str, ImageResult]  # unique image -> result, list order
    attempts: int
    seconds: float
    complete: bool
    interrupted_by: str | None = None  # "terminated" / "interrupt" when a signal stopped the run
    waited: float | None = None  # seconds waited for a node slot (--parallel-nodes); None without the cap
    canary: bool = False  # this node was the canary (--canary): it pulled alone first

    @property
    def all_succeeded(self) -> bool:
        """Every image present at the end (pulled or skipped); true for an empty list, as upstream's label."""
        return all(r.outcome in ("ok", "skipped") for r in self.results.values())

    def count(self, *outcomes: str) -> int:
        return sum(1 for r in self.results.values() if r.outcome in outcomes)


def _encode(summary: Mapping[str, Any]) -> bytes:
    return json.dumps(summary, ensure_ascii=False, separators=(",", ":")).encode()


def _largest_fitting(build: Any, count: int, limit: int) -> int:
    """Largest k in [0, count] with len(build(k)) <= limit (sizes grow with k); -1 if even k=0 is too big."""
    if len(build(0)) > limit:
        return -1
    low, high = 0, count
    while low < high:
        middle = (low + high + 1) // 2
        if len(build(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def build_summary(report: RunReport, limit: int = SUMMARY_LIMIT, warnings: Sequence[str] = ()) -> bytes:
    """Compact JSON; when too long, `retries` entries go first, then `errors` entries, then `warnings` (counts stay
    exact). `warnings` (post-run failures, one line each) is left out when there are none, as before it existed."""
    failed = [r for r in report.results.values() if r.outcome not in ("ok", "skipped")]
    errors = [(r.image, r.reason()) for r in failed]
    retries = [(r.image, r.attempts) for r in report.results.values() if r.attempts > 1]
    notes = [shorten(one_line(text), WARNING_LIMIT) for text in warnings[:MAX_WARNINGS]]
    base: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "node": report.node,
        "complete": report.complete,
        "ok": report.count("ok"),
        "failed": len(failed),
        "skipped": report.count("skipped"),
        "bytes": sum(r.size_bytes for r in report.results.values() if r.outcome == "ok"),
        "seconds": round(report.seconds, 2),
        "attempts": report.attempts,
    }
    if report.waited is not None:
        base["waited"] = round(report.waited, 2)
    if report.canary:
        base["canary"] = True

    def build(kept_errors: int, kept_retries: int, truncated: bool, kept_notes: int = len(notes)) -> bytes:
        summary = {
            **base,
            "errors": dict(errors[:kept_errors]),
            "retries": dict(retries[:kept_retries]),
            "truncated": truncated or len(warnings) > MAX_WARNINGS,
        }
        if notes[:kept_notes]:
            summary["warnings"] = notes[:kept_notes]
        return _encode(summary)

    full = build(len(errors), len(retries), False)
    if len(full) <= limit:
        return full
    kept_retries = _largest_fitting(lambda k: build(len(errors), k, True), len(retries), limit)
    if kept_retries >= 0:
        return build(len(errors), kept_retries, True)
    kept_errors = _largest_fitting(lambda k: build(k, 0, True), len(errors), limit)
    if kept_errors >= 0:
        return build(kept_errors, 0, True)
    kept_notes = _largest_fitting(lambda k: build(0, 0, True, k), len(notes), limit)
    return build(0, 0, True, max(kept_notes, 0))


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut said with an ellipsis (API messages put the cause first)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a reason stays on one line."""
    return " ".join(text.split())


def build_fatal_summary(node: str, reason: str, seconds: float = 0.0, limit: int = SUMMARY_LIMIT) -> bytes:
    """The summary of a run that could not start (DESIGN.md): `complete:false`, zero counts and `fatal`.

    `reason` is the one-line error `fetch` prints (its texts never carry secrets); it is shortened to fit `limit`.
    """
    base: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "node": node,
        "complete": False,
        "ok": 0,
        "failed": 0,
        "skipped": 0,
        "bytes": 0,
        "seconds": round(seconds, 2),
        "attempts": 0,
        "errors": {},
        "retries": {},
        "truncated": False,
    }
    text = one_line(reason)

    def build(length: int) -> bytes:
        shown = text if length >= len(text) else text[: max(length - 1, 0)] + "\u2026"
        return _encode({**base, "fatal": shown})

    kept = _largest_fitting(build, len(text), limit)
    return build(max(kept, 0))


def write_termination_log(path: str, content: bytes, log: Logger) -> bool:
    """Write the summary; skipped when the file's directory does not exist (not in a pod). Never fatal."""
    if not path or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        log.debug("termination log directory does not exist, not writing the summary", path=path)
        return False
    try:
        with open(path, "wb") as handle:
            handle.write(content)
    except OSError as err:
        log.warn("failed to write the termination log", path=path, error=str(err))
        return False
    return True
