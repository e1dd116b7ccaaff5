"""`build_extensions`: which seams a `fetch` gets for its flags, and that unused features stay unloaded."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import image_prefetcher
from image_prefetcher.cli import FETCH_FLAGS, fetch_options
from image_prefetcher.engine import ImageResult
from image_prefetcher.fetch import build_extensions
from image_prefetcher.flags import parse_flags
from image_prefetcher.logs import LOGGER_NAME, configure_logging
from image_prefetcher.summary import RunReport

FEATURE_MODULES = ("image_prefetcher.credprovider", "image_prefetcher.metrics", "image_prefetcher.nodelabels")

PROBE = f"""
import json, sys
FEATURE_MODULES = {FEATURE_MODULES!r}
from image_prefetcher.cli import FETCH_FLAGS, fetch_options
from image_prefetcher.fetch import build_extensions
from image_prefetcher.flags import parse_flags
from image_prefetcher.logs import configure_logging
ext = build_extensions(fetch_options(parse_flags(FETCH_FLAGS, sys.argv[1:])), configure_logging(False))
print(json.dumps({{
    "loaded": sorted(m for m in sys.modules if m in FEATURE_MODULES),
    "sources": len(ext.credential_sources),
    "observers": len(ext.observers),
    "steps": [step.name for step in ext.post_run_steps],
}}))
"""


def probe(*flags: str) -> tuple[dict[str, Any], str]:
    """build_extensions in a fresh interpreter (a clean sys.modules), for the given fetch flags."""
    package_root = str(Path(image_prefetcher.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *flags], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return json.loads(done.stdout), done.stderr


def test_a_plain_fetch_loads_no_feature_module_before_its_pulls() -> None:
    result, _ = probe()
    assert result == {"loaded": [], "sources": 0, "observers": 0, "steps": ["node labels"]}


def test_metrics_endpoint_adds_an_observer_and_the_submission_step() -> None:
    result, _ = probe("--metrics-endpoint=127.0.0.1:1")
    assert result == {
        "loaded": ["image_prefetcher.metrics"],
        "sources": 0,
        "observers": 1,
        "steps": ["metrics submission", "node labels"],
    }


@pytest.mark.parametrize(
    "flag", ["--image-credential-provider-config=/nonexistent.yaml", "--image-credential-provider-bin-dir=/nonexistent"]
)
def test_one_plugin_flag_alone_still_warns_and_adds_no_source(flag: str) -> None:
    result, stderr = probe(flag)
    assert (result["sources"], result["loaded"]) == (0, ["image_prefetcher.credprovider"])
    assert "credential provider plugins are disabled" in stderr


def test_the_node_label_step_runs_its_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    stream = io.StringIO()
    log = configure_logging(False, "text", stream)
    options = fetch_options(parse_flags(FETCH_FLAGS, ["--termination-log=/nonexistent/x"]))
    (step,) = build_extensions(options, log).post_run_steps
    results = {"r/x:v1": ImageResult("r/x:v1", "ok")}
    report = RunReport(node="n", results=results, attempts=1, seconds=1.0, complete=True)
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)

    async def run_step() -> str | None:
        return await step.run(report, 5.0)

    assert asyncio.run(run_step()) is None, "a deliberate skip is no failure"
    assert "NODE_NAME environment variable not set, skipping node labeling" in stream.getvalue()


def test_the_node_label_step_returns_why_the_node_was_not_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_NAME", "node-7")
    monkeypatch.setenv("INSTANCE_NAME", "imgs")
    log = configure_logging(False, "text", io.StringIO())
    options = fetch_options(parse_flags(FETCH_FLAGS, ["--termination-log=/nonexistent/x"]))
    (step,) = build_extensions(options, log).post_run_steps
    report = RunReport(node="node-7", results={}, attempts=0, seconds=0.0, complete=True)

    async def run_step() -> str | None:
        return await step.run(report, 5.0)

    problem = asyncio.run(run_step())
    assert problem is not None
    assert problem.startswith("failed to create Kubernetes client, node node-7 not labelled: unable to load")
