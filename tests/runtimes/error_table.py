"""Renders docs/runtimes.md's error table from what the agent integration suite recorded.

    PREFETCH_ERROR_LOG=/tmp/errors.jsonl .venv/bin/python -m pytest tests/agent/integration
    .venv/bin/python tests/runtimes/error_table.py /tmp/errors.jsonl

One row per fault (test), one column per runtime: the gRPC code, the error text the runtime gave (ports and
digests normalised, cut in the middle like the agent's summary) and the class the agent puts it in.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent" / "src"))
from image_prefetcher.classify import _GO_CODE_NAMES, classify

COLUMNS = {"containerd": "containerd 1.6 (Debian)", "containerd2": "containerd 2.4.2", "crio": "CRI-O 1.34.0"}
# The tests whose errors are the point of the table, in the order of faults, with a short name.
FAULTS = {
    "test_stall_at_accept_costs_one_attempt": "stall at accept (attempt deadline)",
    "test_stall_mid_body_recovers_on_retry": "stall mid-body (attempt deadline)",
    "test_http_500_then_success": "HTTP 500 on the manifest",
    "test_unauthorized_registry-none": "401, no credentials",
    "test_unauthorized_registry-wrong": "401, wrong credentials",
    "test_not_found_fails_at_once_with_flag": "image not found",
    "test_invalid_reference_fails_at_once": "invalid reference",
    "test_refused_connection_is_retried_until_the_overall_timeout": "connection refused",
    "test_slow_bandwidth_escalates_the_attempt_timeout": "slow link (attempt deadline)",
    "test_containerd_restarted_mid_run": "runtime restarted mid-pull",
}
_NORMALISE = [
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"sha256:[0-9a-f]{64}"), "sha256:…"),
    (re.compile(r"/tmp/\S+?/"), "/tmp/…/"),
]
LIMIT = 220
# The log says Go's code names (NotFound); classify takes grpc.StatusCode names (NOT_FOUND).
_STATUS_NAMES = {go: name for name, go in _GO_CODE_NAMES.items()}


def fault_key(test: str) -> str:
    """``test_unauthorized_registry[crio-none]`` -> ``test_unauthorized_registry-none``."""
    name, _sep, params = test.partition("[")
    kept = [p for p in params.rstrip("]").split("-") if p and p not in COLUMNS]
    return "-".join([name, *kept])


def normalise(text: str) -> str:
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    if len(text) > LIMIT:
        text = text[: LIMIT // 3] + " … " + text[-(LIMIT - LIMIT // 3):]
    return text.replace("|", "\\|")


def cells(records: list[dict[str, str]]) -> dict[tuple[str, str], str]:
    """(fault, runtime) -> the first distinct error of that fault on that runtime, as a table cell."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        key = (fault_key(record["test"]), record["runtime"])
        if key[0] not in FAULTS:
            continue
        klass = classify(_STATUS_NAMES.get(record["code"], record["code"]), record["text"]).value
        cell = f"`{record['code'] or '?'}` → **{klass}**<br>{normalise(record['text'])}"
        if cell not in seen[key]:
            seen[key].append(cell)
    return {key: "<br>".join(found[:1]) for key, found in seen.items()}


def render(records: list[dict[str, str]]) -> str:
    found = cells(records)
    lines = ["| fault | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for fault, title in FAULTS.items():
        row = [found.get((fault, runtime), "(no error logged)") for runtime in COLUMNS]
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    records = [json.loads(line) for line in Path(argv[1]).read_text().splitlines() if line.strip()]
    sys.stdout.write(render(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
