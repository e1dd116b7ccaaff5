"""Shared data for the agent unit tests (a plain module: `conftest` names clash between test directories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
# A copy of /work/shared/reference/upstream/TESTCASES.jsonl, kept in the repo so a fresh clone can run the tests.
CASES = Path(__file__).resolve().parent / "data" / "TESTCASES.jsonl"


def upstream_cases(section: str) -> list[dict[str, Any]]:
    """Rows of TESTCASES.jsonl for one section."""
    rows = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["section"] == section]
