# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deterministic results of a whole run (the role's ``images_result`` with metrics), for the report tests and for
``scripts/timeline_example.py``, which renders docs/timeline-example.svg/.png from ``example_result()``.

Standard library only: the script loads this file by path, outside the collection's import layout.
"""

from __future__ import annotations

import random
from typing import Any

EPOCH = 1764800000  # started_at is Unix time in whole seconds, as the agent records it


def _simulate_node(
    rng: random.Random, node: str, images: list[str], parallel: int, failing: set[str]
) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, int], float]:
    """Pull attempts of one node: ``parallel`` slots, each image retried after a failed attempt (3 at most)."""
    slots = [rng.uniform(0.0, 1.5) for _slot in range(parallel)]
    metrics: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    retries: dict[str, int] = {}
    for image in images:
        slot = min(range(parallel), key=slots.__getitem__)
        now = slots[slot]
        flaky = rng.random() < 0.2
        attempts = 3 if image in failing else (2 if flaky else 1)
        for number in range(1, attempts + 1):
            failed = image in failing or (flaky and number == 1)
            duration = rng.uniform(0.5, 3.0) if failed else rng.uniform(2.0, 14.0)
            metrics.append(
                {
                    "attempt_id": f"{node}-{image}-{number}",
                    "started_at": EPOCH + int(now),
                    "image": image,
                    "error": "rpc error: code = NotFound desc = manifest unknown" if failed else "",
                    "duration_ms": int(duration * 1000),
                    "node": node,
                    "size_bytes": 0 if failed else int(duration * (40 << 20)),
                }
            )
            now += duration + (rng.uniform(1.0, 3.0) if number < attempts else 0.0)
        if attempts > 1:
            retries[image] = attempts
        if image in failing:
            errors[image] = "not_found: manifest unknown"
        slots[slot] = now
    return metrics, errors, retries, round(max(slots), 2)


def example_result(nodes: int = 3, images: int = 5, seed: int = 13, parallel: int = 3) -> dict[str, Any]:
    """A run on ``nodes`` nodes with ``images`` images: a few flaky pulls retried once, one image missing on the
    last node (3 failed attempts)."""
    rng = random.Random(seed)
    names = [f"prod-east-node-{index + 1}" for index in range(nodes)]
    refs = [f"registry.example.com/team/app-{index + 1}:2.0" for index in range(images)]
    metrics: list[dict[str, Any]] = []
    reports = []
    for index, node in enumerate(names):
        failing = {refs[-1]} if index == nodes - 1 else set()
        found, errors, retries, seconds = _simulate_node(rng, node, refs, parallel, failing)
        metrics += found
        pulled = [m for m in found if not m["error"]]
        reports.append(
            {
                "node": node,
                "pod": f"image-prefetcher-{index:05x}",
                "status": "failed" if errors else "succeeded",
                "node_state": "ready",
                "ok": len(refs) - len(errors),
                "failed": len(errors),
                "skipped": 0,
                "attempts": len(found),
                "bytes": sum(m["size_bytes"] for m in pulled),
                "seconds": seconds,
                "errors": errors,
                "retries": retries,
                "warnings": [],
                "message": "",
            }
        )
    failed_nodes = sum(1 for report in reports if report["status"] == "failed")
    return {
        "cluster": "prod-east",
        "state": "present",
        "name": "image-prefetcher",
        "namespace": "prefetch",
        "changed": True,
        "failed": bool(failed_nodes),
        "msg": "image pulls failed on 1 of 3 node(s)" if failed_nodes else "",
        "images": refs,
        "nodes": reports,
        "totals": {
            "nodes": nodes,
            "nodes_succeeded": nodes - failed_nodes,
            "nodes_failed": failed_nodes,
            "nodes_error": 0,
            "nodes_gone": 0,
            "nodes_with_warnings": 0,
            "images_ok": sum(report["ok"] for report in reports),
            "images_failed": sum(report["failed"] for report in reports),
            "images_skipped": 0,
            "bytes": sum(report["bytes"] for report in reports),
        },
        "daemonset": {},
        "metrics": metrics,
        "metrics_summary": None,
    }
