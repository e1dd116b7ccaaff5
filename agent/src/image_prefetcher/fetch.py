"""`fetch`: pull the image list onto this node through CRI, report, and exit.

Order: read the list and the pull secret (bad input fails before CRI is contacted) -> wait for the CRI socket
(bounded by --cri-connect-timeout) -> [debug: list images] -> pull everything (PullEngine, hard --overall-timeout)
-> write the termination summary -> post-run steps (metrics flush, node labels, [debug: list images]), each with
its own short deadline so they also run after the overall timeout -> when a step failed, write the summary again
with its `warnings` (the first write stays for a SIGTERM during the steps) -> exit.

Exit codes: 0 after a complete run even if pulls failed (the DaemonSet must not crash-loop; failures are in the
logs, the summary and the node label); 1 on bad input or a CRI runtime that does not answer; 143 / 130 when
SIGTERM / SIGINT interrupted the run (pulls are cancelled and a partial summary, `complete:false`, is written).

Seams for issue 5 (node labels, metrics, credential provider plugins): `build_extensions` returns extra credential
sources (tried before the pull secret), attempt observers and post-run steps.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc.aio
from google.protobuf import text_format

from image_prefetcher.classify import ErrorClass, PullError, final_failure, shorten_detail
from image_prefetcher.cli import FetchOptions
from image_prefetcher.credentials import ChainedCredentials, CredentialSource, load_docker_config
from image_prefetcher.cri import CriClient, rpc_error, wait_for_runtime
from image_prefetcher.durations import to_seconds
from image_prefetcher.engine import AttemptObserver, Deadline, ImageResult, PullEngine, PullSettings
from image_prefetcher.errors import CommandError
from image_prefetcher.imagelist import load_images, unique_in_order
from image_prefetcher.logs import LogFormat, Logger, Seconds, configure_logging
from image_prefetcher.summary import RunReport, build_summary, one_line, write_termination_log

if TYPE_CHECKING:
    from image_prefetcher.incluster import InClusterConfig
    from image_prefetcher.leases import NodeSlot
    from image_prefetcher.progress import ProgressPublisher

# After the overall deadline the post-run steps share this much extra time, so the process always ends within
# overall timeout + 10 s (the remaining seconds cover start-up and shutdown).
POST_RUN_GRACE_SECONDS = 7.0
INTERRUPTED_POST_RUN_SECONDS = 5.0
MIN_STEP_SECONDS = 0.5
STEP_MARGIN_SECONDS = 0.2  # a step ends its own work this long before its budget's hard timeout
EXIT_CODES = {"terminated": 128 + signal.SIGTERM, "interrupt": 128 + signal.SIGINT}
_SIGNAL_NAMES = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}


@dataclass(frozen=True)
class PostRunStep:
    """Runs after the pulls with the run's report and its time budget in seconds (already enforced by the caller
    with a timeout; the step may use it to size its own retries). Returns None when done (or skipped on purpose),
    else why it failed in one line without secrets, which the summary's `warnings` carry. Failures are logged,
    never fatal."""

    name: str
    run: Callable[[RunReport, float], Awaitable[str | None]]


@dataclass
class Extensions:
    credential_sources: list[CredentialSource] = field(default_factory=list)  # tried before the pull secret
    observers: list[AttemptObserver] = field(default_factory=list)  # one call per PullImage attempt
    post_run_steps: list[PostRunStep] = field(default_factory=list)  # run in order after the pulls


def build_extensions(options: FetchOptions, log: Logger) -> Extensions:
    """Issue 5: credential provider plugins (tried before the pull secret), pull metrics, node labels.

    Each module is imported only when its feature is used (node labels: after the pulls): together they load ~30
    modules (http.client, ssl contexts, email parsing...), about 20 ms of start-up and 1.7 MiB that a run without
    them would otherwise carry through all of its pulls.
    """
    extensions = Extensions()
    config, bin_dir = options.image_credential_provider_config, options.image_credential_provider_bin_dir
    if config or bin_dir:  # plugin_source itself warns when only one of the two is set
        from image_prefetcher.credprovider import plugin_source

        # The run's Deadline starts a moment later, so this bound for plugin execs errs on the safe side
        # (asyncio's loop clock is time.monotonic).
        overall_end = time.monotonic() + to_seconds(options.overall_timeout)
        plugins = plugin_source(config, bin_dir, overall_end)
        if plugins is not None:
            extensions.credential_sources.append(plugins)
    if options.metrics_endpoint:
        from image_prefetcher.metrics import MetricsRecorder, submit_metrics

        recorder = MetricsRecorder()
        extensions.observers.append(recorder.observe)

        async def submit(_report: RunReport, budget: float) -> str | None:
            deadline = time.monotonic() + budget - STEP_MARGIN_SECONDS
            return await submit_metrics(options.metrics_endpoint, recorder, deadline)

        extensions.post_run_steps.append(PostRunStep("metrics submission", submit))

    async def label(report: RunReport, budget: float) -> str | None:
        from image_prefetcher.nodelabels import LABEL_DEADLINE_S, update_node_labels

        present = {image: r.outcome in ("ok", "skipped") for image, r in report.results.items()}
        deadline_s = min(LABEL_DEADLINE_S, budget - STEP_MARGIN_SECONDS)
        return (await update_node_labels(present, report.complete, deadline_s=deadline_s)).problem

    extensions.post_run_steps.append(PostRunStep("node labels", label))
    return extensions


def node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


def node_slot_for(
    options: FetchOptions,
    log: Logger,
    images: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    load_config: Callable[[Mapping[str, str]], InClusterConfig] | None = None,
) -> NodeSlot | str:
    """The node-slot semaphore of `--parallel-nodes` (DESIGN.md), or why there is none (the node then pulls
    without a slot and the summary warns: a missing setting must not stop the prefetch). Imported only when used."""
    from image_prefetcher.incluster import InClusterError, load_incluster_config
    from image_prefetcher.leases import HttpLeaseApi, NodeSlot, SlotConfig, list_fingerprint

    env = os.environ if environ is None else environ
    unenforced = f"--parallel-nodes {options.parallel_nodes} not enforced"
    instance = options.instance_name or env.get("INSTANCE_NAME", "")
    if not instance:
        return f"no instance name (--instance-name or INSTANCE_NAME), pulled without a node slot ({unenforced})"
    try:
        config = (load_config or load_incluster_config)(env)
    except InClusterError as err:
        return f"no Kubernetes client ({err}), pulled without a node slot ({unenforced})"
    namespace = options.lease_namespace or env.get("POD_NAMESPACE", "") or config.namespace or ""
    if not namespace:
        return f"no namespace for the node-slot Leases (--lease-namespace), pulled without a node slot ({unenforced})"
    slot_config = SlotConfig(
        namespace=namespace,
        instance=instance,
        holder=node_name(),
        slots=options.parallel_nodes,
        lease_duration_s=max(1, math.ceil(to_seconds(options.lease_duration))),
        unreachable_bound_s=to_seconds(options.lease_unreachable_timeout),
        canary=options.canary,
        list_hash=list_fingerprint(images, options.not_found == "fail"),
    )
    return NodeSlot(slot_config, HttpLeaseApi(config, namespace), log)


def progress_publisher_for(
    interval: float, snapshot: Callable[[], list[ImageResult]], log: Logger, deadline: Deadline
) -> ProgressPublisher | None:
    """--progress-interval: the publisher of this pod's progress annotation (imported only when used)."""
    from image_prefetcher.progress import publisher_for

    return publisher_for(interval, snapshot, log, deadline)


def permanent_failures(results: Iterable[ImageResult], not_found_fails: bool) -> dict[str, tuple[str, str]]:
    """The canary's findings: images whose failure no other node can fix by trying again (an invalid reference;
    not found under --not-found=fail), as (gRPC code, details) with the details cut to the summary's length."""
    found: dict[str, tuple[str, str]] = {}
    for result in results:
        if result.outcome != "failed" or result.ended_by_deadline or result.error is not None:
            continue
        failure = final_failure(result.history)
        if failure is None or failure.note:
            continue
        kind = failure.error_class
        if kind is ErrorClass.INVALID_REFERENCE or (kind is ErrorClass.NOT_FOUND and not_found_fails):
            found[result.image] = (failure.error.code, shorten_detail(failure.error.details))
    return found


def pull_settings(options: FetchOptions) -> PullSettings:
    return PullSettings(
        initial_attempt_timeout=to_seconds(options.initial_pull_attempt_timeout),
        max_attempt_timeout=to_seconds(options.max_pull_attempt_timeout),
        initial_delay=to_seconds(options.initial_pull_attempt_delay),
        max_delay=to_seconds(options.max_pull_attempt_delay),
        max_parallel_pulls=options.max_parallel_pulls,
        if_not_present=options.pull_policy == "IfNotPresent",
        not_found_fails=options.not_found == "fail",
    )


async def list_images_for_debug(cri: CriClient, stage: str, timeout: float, log: Logger) -> None:
    """BEHAVIOR.md §2.6: one DEBUG line per image the runtime has. Raises grpc.aio.AioRpcError."""
    log.debug("starting to list images", stage=stage)
    images = await cri.list_images(timeout=timeout)
    log.debug("finished listing images", stage=stage, count=len(images))
    for image in images:
        log.debug("image present in runtime", image=text_format.MessageToString(image, as_one_line=True), stage=stage)


def run_fetch(options: FetchOptions) -> int:
    log = configure_logging(options.debug, cast(LogFormat, options.log_format))
    images = load_images(options.image_list_file, options.positional_images)
    extensions = build_extensions(options, log)
    sources = list(extensions.credential_sources)
    if options.docker_config:
        sources.append(load_docker_config(options.docker_config, log))
    else:
        log.info("no image pull secret path provided, will pull without credentials")
    return asyncio.run(FetchRun(options, images, ChainedCredentials(sources), extensions, log).main())


class FetchRun:
    def __init__(
        self,
        options: FetchOptions,
        images: list[str],
        credentials: CredentialSource,
        extensions: Extensions,
        log: Logger,
    ) -> None:
        self.options = options
        self.images = unique_in_order(images)
        self.listed = len(images)
        self.credentials = credentials
        self.extensions = extensions
        self.log = log
        self.signal_name: str | None = None
        self.aborted = False  # the pulls could not run (CRI not answering, debug listing failed)
        # "<step>: <why it failed>": the node slot's (before the first write) and the post-run steps' (second write)
        self.warnings: list[str] = []
        self.waited: float | None = None  # seconds waited for a node slot, with --parallel-nodes
        # The node slot of --parallel-nodes: built by the caller's hook (tests pass a fake), None without the cap.
        self.node_slot: Callable[[], NodeSlot | str] | None = None
        if options.parallel_nodes > 0:
            self.node_slot = lambda: node_slot_for(options, log, self.images)
        self.canary = False  # this node was the canary
        self._phase: asyncio.Task[Any] | None = None
        # --progress-interval: builds the publisher of this pod's progress annotation when the pulls start (None
        # when it cannot write to its pod; tests pass a fake); None without the flag.
        self.progress: Callable[[PullEngine, Deadline], ProgressPublisher | None] | None = None
        self.progress_writes = 0
        interval = to_seconds(options.progress_interval)
        if interval > 0:
            self.progress = lambda engine, deadline: progress_publisher_for(
                interval, self._snapshot(engine), log, deadline
            )

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in _SIGNAL_NAMES:
            loop.add_signal_handler(signum, self._on_signal, signum)
        started = time.monotonic()
        deadline = Deadline(to_seconds(self.options.overall_timeout))
        needs_cri = bool(self.images) or self.options.debug
        # With nothing to pull and no debug listing, CRI is never contacted (as upstream).
        cri = CriClient(self.options.cri_socket) if needs_cri else None
        engine = PullEngine(cri, pull_settings(self.options), self.credentials, self.log, self.extensions.observers)
        fatal: CommandError | None = None
        try:
            try:
                await self._interruptible(self._pull_phase(cri, engine, deadline))
            except CommandError as err:
                fatal = err
                self._mark_unreached(engine, str(err))
            if self.progress is not None:
                self.log.info("progress published", writes=self.progress_writes)
            report = self._report(engine, started)
            self.log.info(
                "pulling images finished",
                ok=report.count("ok"),
                failed=report.count("failed", "pending"),
                skipped=report.count("skipped"),
                attempts=report.attempts,
                complete=report.complete,
            )
            if fatal is None:  # else the command line writes the `fatal` summary (DESIGN.md), as for bad input
                write_termination_log(
                    self.options.termination_log, build_summary(report, warnings=self.warnings), self.log
                )
            before_steps = len(self.warnings)
            await self._interruptible(self._post_run(report, cri, deadline))
            if fatal is None and len(self.warnings) > before_steps:  # a failed step must reach the rollout report
                write_termination_log(
                    self.options.termination_log, build_summary(report, warnings=self.warnings), self.log
                )
        finally:
            for signum in _SIGNAL_NAMES:
                loop.remove_signal_handler(signum)
            if cri is not None:
                await cri.close()
        if fatal is not None:
            raise fatal
        if self.signal_name is not None:
            self.log.warn("fetch interrupted", signal=self.signal_name)
            return EXIT_CODES[self.signal_name]
        return 0

    def _on_signal(self, signum: int) -> None:
        if self.signal_name is None:
            self.signal_name = _SIGNAL_NAMES[signal.Signals(signum)]
        if self._phase is not None and not self._phase.done():
            self._phase.cancel()  # cancels the pulls' RPCs (or, on a second signal, the post-run steps)

    async def _interruptible(self, coro: Coroutine[Any, Any, None]) -> None:
        self._phase = asyncio.ensure_future(coro)
        try:
            await self._phase
        except asyncio.CancelledError:
            if self.signal_name is None:
                raise
        finally:
            self._phase = None

    async def _pull_phase(self, cri: CriClient | None, engine: PullEngine, deadline: Deadline) -> None:
        self.log.info(
            "starting to pull images",
            images=len(self.images),
            listed=self.listed,
            maxParallelPulls=self.options.max_parallel_pulls,
        )
        if cri is None:
            return
        connect_timeout = min(to_seconds(self.options.cri_connect_timeout), max(deadline.remaining(), 0.001))
        version = await wait_for_runtime(cri, connect_timeout)
        self.log.info(
            "connected to CRI runtime",
            runtime=version.runtime_name,
            version=version.runtime_version,
            apiVersion=version.runtime_api_version,
        )
        if self.options.debug:
            await self._debug_listing(cri, "before", deadline, fatal=True)
        if self.node_slot is None:
            await self._run_engine(engine, self.images, deadline)
            return
        await self._pull_in_slot(self.node_slot(), engine, deadline)

    async def _pull_in_slot(self, slot: NodeSlot | str, engine: PullEngine, deadline: Deadline) -> None:
        """--parallel-nodes: wait for a node slot (within the overall deadline), pull, release (also when cancelled)."""
        if isinstance(slot, str):
            self.log.warn("pulling without a node slot", reason=slot)
            self.warnings.append(f"node slot: {slot}")
            self.waited = 0.0
            await self._run_engine(engine, self.images, deadline)
            return
        from image_prefetcher.leases import waiting_note

        if self.options.pull_policy == "IfNotPresent" and await engine.all_present(self.images, deadline):
            # Nothing to pull (a restarted pod, a node that already has the list): no wait, no Lease write.
            self.log.info("every image is present already, not waiting for a node slot")
            self.waited = 0.0
            await self._run_engine(engine, self.images, deadline)
            return
        async with slot.hold(deadline) as outcome:
            self.waited = outcome.waited_s
            if outcome.warning:
                self.warnings.append(f"node slot: {outcome.warning}")
            if outcome.timed_out:
                self._mark_waited_out(engine, waiting_note(outcome, slot.config.slots))
                return
            self.canary = slot.is_canary
            await self._run_engine(engine, self._skip_canary_findings(engine, slot), deadline)
            if slot.is_canary and self.signal_name is None:
                ended = [engine.results[image] for image in self.images]
                if not any(r.ended_by_deadline or r.outcome == "pending" for r in ended):
                    # Only a complete run speaks for the list; else the next node becomes the canary.
                    slot.publish(permanent_failures(ended, self.options.not_found == "fail"))
        if slot.lost:
            self.warnings.append(f"node slot: {slot.lost}; more than --parallel-nodes nodes may have pulled at once")

    async def _run_engine(self, engine: PullEngine, images: Sequence[str], deadline: Deadline) -> None:
        """The pulls, with the progress publisher (--progress-interval) running beside them; it is cancelled and
        awaited when they end, also when they are cancelled (SIGTERM)."""
        publisher = self.progress(engine, deadline) if self.progress is not None else None
        if publisher is None:
            await engine.run(images, deadline)
            return
        task = asyncio.ensure_future(publisher.run())
        try:
            await engine.run(images, deadline)
        finally:
            task.cancel()
            try:
                await asyncio.wait([task])  # a second cancellation of this task still propagates
            finally:
                self.progress_writes += publisher.writes
            if not task.cancelled() and task.exception() is not None:
                self.log.warn("progress publisher failed", error=str(task.exception()))

    def _snapshot(self, engine: PullEngine) -> Callable[[], list[ImageResult]]:
        """The results of the run's unique images as they are now (an image not started yet is pending)."""
        return lambda: [engine.results.get(image) or ImageResult(image) for image in self.images]

    def _skip_canary_findings(self, engine: PullEngine, slot: NodeSlot) -> list[str]:
        """The images to pull: those the canary found permanently failed are reported failed with its reason and
        name instead (not pulled again on every node)."""
        todo = []
        for image in self.images:
            found = slot.findings.get(image)
            if found is None:
                todo.append(image)
                continue
            code, details = found
            result = engine.results.setdefault(image, ImageResult(image))
            result.outcome = "failed"
            result.error = PullError(code, f"{details} (found by the canary node {slot.canary_node or 'unknown'})")
            self.log.error(
                "not pulling, the canary node found the image failing",
                image=image,
                error=details,
                canary=slot.canary_node,
            )
        return todo

    def _mark_waited_out(self, engine: PullEngine, reason: str) -> None:
        for image in self.images:
            result = engine.results.setdefault(image, ImageResult(image))
            result.outcome, result.ended_by_deadline = "failed", True
            result.error = PullError("DEADLINE_EXCEEDED", reason)

    async def _debug_listing(self, cri: CriClient, stage: str, deadline: Deadline, fatal: bool) -> str | None:
        """The debug listing; returns the failure (after the pulls, where it is not fatal), else None."""
        timeout = to_seconds(self.options.image_list_timeout)
        if fatal:
            timeout = min(timeout, max(deadline.remaining(), 0.001))
        try:
            await list_images_for_debug(cri, stage, timeout, self.log)
        except grpc.aio.AioRpcError as err:
            message = f"failed to list images for debugging {stage} pulling: failed to call ListImages: "
            message += rpc_error(err).go_string()
            if fatal:
                raise CommandError(message) from None
            self.log.error(message)
            return one_line(message)
        return None

    def _mark_unreached(self, engine: PullEngine, reason: str) -> None:
        self.aborted = True
        for image in self.images:
            result = engine.results.setdefault(image, ImageResult(image))
            if result.outcome == "pending":
                result.outcome, result.error = "failed", PullError("UNAVAILABLE", reason)

    def _report(self, engine: PullEngine, started: float) -> RunReport:
        for image in self.images:
            engine.results.setdefault(image, ImageResult(image))
        ended_early = any(r.ended_by_deadline or r.outcome == "pending" for r in engine.results.values())
        for result in engine.results.values():
            if result.outcome == "pending":
                result.outcome = "failed"
                if result.error is None and not result.history:  # else its attempts' errors explain it
                    result.error = PullError("CANCELLED", f"interrupted by signal ({self.signal_name})")
        return RunReport(
            node=node_name(),
            results={image: engine.results[image] for image in self.images},
            attempts=engine.attempts,
            seconds=time.monotonic() - started,
            complete=self.signal_name is None and not ended_early and not self.aborted,
            interrupted_by=self.signal_name,
            waited=self.waited,
            canary=self.canary,
        )

    async def _post_run(self, report: RunReport, cri: CriClient | None, deadline: Deadline) -> None:
        steps = list(self.extensions.post_run_steps)
        if self.options.debug and cri is not None:
            steps.append(
                PostRunStep("debug image listing", lambda _r, _b: self._debug_listing(cri, "after", deadline, False))
            )
        loop = asyncio.get_running_loop()
        if self.signal_name is not None:
            hard_end = loop.time() + INTERRUPTED_POST_RUN_SECONDS
        else:
            hard_end = max(deadline.when, loop.time()) + POST_RUN_GRACE_SECONDS
        for position, step in enumerate(steps):
            share = (hard_end - loop.time()) / (len(steps) - position)
            budget = max(MIN_STEP_SECONDS, share)
            try:
                problem = await asyncio.wait_for(step.run(report, budget), timeout=budget)
            except asyncio.TimeoutError:
                self.log.error("post-run step did not finish in time", step=step.name, budget=Seconds(budget))
                problem = f"did not finish within its {budget:.1f}s budget"
            except asyncio.CancelledError:
                if self.signal_name is not None:  # a (second) signal: the summary says which step it cut
                    self.warnings.append(f"{step.name}: interrupted by signal ({self.signal_name})")
                raise
            except Exception as err:  # a post-run step (labels, metrics) must never fail the run
                self.log.error("post-run step failed", step=step.name, error=str(err))
                problem = one_line(str(err)) or type(err).__name__
            if problem:
                self.warnings.append(f"{step.name}: {problem}")
