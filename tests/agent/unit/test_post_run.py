"""The post-run steps and the termination summary: written before the steps, written again with their failures."""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from image_prefetcher import fetch
from image_prefetcher.cli import FETCH_FLAGS, fetch_options
from image_prefetcher.credentials import ChainedCredentials
from image_prefetcher.fetch import Extensions, FetchRun, PostRunStep
from image_prefetcher.flags import parse_flags
from image_prefetcher.logs import configure_logging
from image_prefetcher.summary import RunReport

StepFn = Callable[[RunReport, float], Awaitable[str | None]]


def summary_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def run_steps(tmp_path: Path, *steps: tuple[str, StepFn], flags: tuple[str, ...] = ()) -> tuple[int, Path, str]:
    """A `fetch` of an empty image list (CRI is never contacted), with these post-run steps, in-process."""
    termination_log = tmp_path / "termination-log"
    options = fetch_options(parse_flags(FETCH_FLAGS, [f"--termination-log={termination_log}", *flags]))
    stream = io.StringIO()
    log = configure_logging(False, "text", stream)
    extensions = Extensions(post_run_steps=[PostRunStep(name, run) for name, run in steps])
    code = asyncio.run(FetchRun(options, [], ChainedCredentials([]), extensions, log).main())
    return code, termination_log, stream.getvalue()


def test_a_failed_step_reaches_the_summary_and_the_first_write_came_before_the_steps(tmp_path: Path) -> None:
    seen_by_steps: list[dict[str, Any]] = []

    async def denied(report: RunReport, _budget: float) -> str | None:
        seen_by_steps.append(summary_of(tmp_path / "termination-log"))
        return f"failed to patch node {report.node}: 403 Forbidden: nodes is forbidden"

    async def fine(_report: RunReport, _budget: float) -> str | None:
        return None

    async def raises(_report: RunReport, _budget: float) -> str | None:
        raise RuntimeError("bad\nthing")

    code, termination_log, _ = run_steps(tmp_path, ("node labels", denied), ("fine", fine), ("raises", raises))
    assert code == 0
    assert seen_by_steps and "warnings" not in seen_by_steps[0], "the summary was written before the steps ran"
    assert seen_by_steps[0]["complete"] is True
    summary = summary_of(termination_log)
    node = summary["node"]
    assert summary["warnings"] == [
        f"node labels: failed to patch node {node}: 403 Forbidden: nodes is forbidden",
        "raises: bad thing",
    ]
    assert {k: v for k, v in summary.items() if k not in ("warnings", "seconds")} == {
        k: v for k, v in seen_by_steps[0].items() if k != "seconds"
    }


def test_without_failures_the_summary_is_written_once(tmp_path: Path) -> None:
    writes: list[str] = []

    async def fine(_report: RunReport, _budget: float) -> str | None:
        writes.append((tmp_path / "termination-log").read_text())
        (tmp_path / "termination-log").write_text("left by the step")  # a second write would replace this
        return None

    code, termination_log, _ = run_steps(tmp_path, ("fine", fine))
    assert code == 0 and "warnings" not in json.loads(writes[0])
    assert termination_log.read_text() == "left by the step"


def test_a_step_past_its_budget_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "POST_RUN_GRACE_SECONDS", 0.0)  # every step gets the minimum budget

    async def hangs(_report: RunReport, _budget: float) -> str | None:
        await asyncio.Event().wait()
        return None

    code, termination_log, log = run_steps(tmp_path, ("metrics submission", hangs), flags=("--overall-timeout=1ms",))
    assert code == 0
    assert summary_of(termination_log)["warnings"] == [
        f"metrics submission: did not finish within its {fetch.MIN_STEP_SECONDS:.1f}s budget"
    ]
    assert "post-run step did not finish in time" in log


def test_a_signal_during_the_steps_still_leaves_the_summary_with_the_cut_step(tmp_path: Path) -> None:
    ran: list[str] = []
    holder: dict[str, FetchRun] = {}

    async def signalled(_report: RunReport, _budget: float) -> str | None:
        ran.append("signalled")
        holder["run"]._on_signal(signal.SIGTERM)  # as the loop's handler does on SIGTERM
        await asyncio.Event().wait()
        return None

    async def later(_report: RunReport, _budget: float) -> str | None:
        ran.append("later")
        return None

    termination_log = tmp_path / "termination-log"
    options = fetch_options(parse_flags(FETCH_FLAGS, [f"--termination-log={termination_log}"]))
    log = configure_logging(False, "text", io.StringIO())
    extensions = Extensions(post_run_steps=[PostRunStep("node labels", signalled), PostRunStep("later", later)])
    run = FetchRun(options, [], ChainedCredentials([]), extensions, log)
    holder["run"] = run
    assert asyncio.run(run.main()) == 128 + signal.SIGTERM
    assert ran == ["signalled"]
    summary = summary_of(termination_log)
    assert summary["warnings"] == ["node labels: interrupted by signal (terminated)"]
    assert summary["complete"] is True, "the pulls had ended before the signal"
