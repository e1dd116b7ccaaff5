"""--progress-interval: the progress annotation's value, the publisher's rate limit and error handling (on a virtual
clock, with a fake PATCH), the engine's per-image fields it reads, and its wiring into the `fetch` run."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakecri import HANG, Action, FakeCri, FakeImageService, fail, main_beside
from virtualclock import run_virtual

from image_prefetcher import progress
from image_prefetcher.cli import FETCH_FLAGS, fetch_options
from image_prefetcher.credentials import ChainedCredentials
from image_prefetcher.durations import SECOND
from image_prefetcher.engine import Deadline, ImageResult, PullEngine, PullSettings
from image_prefetcher.fetch import Extensions, FetchRun
from image_prefetcher.flags import FlagError, parse_flags
from image_prefetcher.incluster import ApiResponse, InClusterError
from image_prefetcher.logs import Logger, configure_logging
from image_prefetcher.progress import ProgressPublisher, change_key, patch_body, progress_value

NOW = 1_700_000_100.0
OK_ANSWER = ApiResponse(200, b"{}")


def result(image: str, outcome: Any = "pending", since: float | None = None, in_flight: int = 0) -> ImageResult:
    return ImageResult(image, outcome=outcome, first_attempt_at=since, in_flight=in_flight)


def messages(records: list[logging.LogRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r.levelname, r.getMessage(), getattr(r, "attrs", {})) for r in records]


def quiet_log() -> Logger:
    return configure_logging(True, "text", io.StringIO())


# --- the value --------------------------------------------------------------------------------------------------------


def test_the_value_for_a_mix_of_states() -> None:
    results = [
        result("r/ok:1", "ok", since=NOW - 50),
        result("r/failed:1", "failed", since=NOW - 40),
        result("r/skipped:1", "skipped"),
        result("r/waiting:1"),  # waiting for a pull slot: not started
        result("r/sleeping:1", since=NOW - 30.04),  # between retries: no attempt in flight
        result("r/second:1", since=NOW - 65.06, in_flight=2),
        result("r/first:1", since=NOW - 10.0, in_flight=1),
    ]
    assert progress_value(results, NOW + 0.7) == {
        "v": 1,
        "total": 7,
        "done": 3,
        "ok": 1,
        "failed": 1,
        "skipped": 1,
        "pulling": [
            {"image": "r/second:1", "since": round(NOW - 65.06, 1), "attempt": 2},
            {"image": "r/first:1", "since": NOW - 10.0, "attempt": 1},
        ],
        "t": int(NOW),
    }


def test_at_most_three_pulling_entries_longest_running_first() -> None:
    results = [result(f"r/i{n}:1", since=NOW - n, in_flight=1) for n in (5, 50, 1, 20, 30)]
    pulling = progress_value(results, NOW)["pulling"]
    assert [p["image"] for p in pulling] == ["r/i50:1", "r/i30:1", "r/i20:1"]


def test_the_annotation_is_a_compact_sorted_json_string_in_a_merge_patch() -> None:
    value = progress_value([result("r/a:1", since=1_700_000_000.04, in_flight=3), result("r/b:1", "ok")], NOW)
    body = patch_body(value)
    expected = (
        '{"done":1,"failed":0,"ok":1,"pulling":[{"attempt":3,"image":"r/a:1","since":1700000000.0}],'
        '"skipped":0,"t":1700000100,"total":2,"v":1}'
    )
    assert json.loads(body) == {"metadata": {"annotations": {"prefetch.stackrox.io/progress": expected}}}
    assert body == json.dumps({"metadata": {"annotations": {progress.ANNOTATION: expected}}}).replace(" ", "").encode()
    assert progress.ANNOTATION == "prefetch.stackrox.io/progress"


def test_what_counts_as_a_change() -> None:
    base = [result("r/a:1", since=NOW - 5, in_flight=1), result("r/b:1", since=NOW - 1, in_flight=1)]
    key = change_key(progress_value(base, NOW))
    # Time passing alone, or a change behind the first pulling entry, is no change.
    later = [result("r/a:1", since=NOW - 5, in_flight=1), result("r/b:1", since=NOW - 1, in_flight=2)]
    assert change_key(progress_value(later, NOW + 60)) == key
    retried = [result("r/a:1", since=NOW - 5, in_flight=2), result("r/b:1", since=NOW - 1, in_flight=1)]
    assert change_key(progress_value(retried, NOW)) != key
    one_done = [result("r/a:1", "ok"), result("r/b:1", since=NOW - 1, in_flight=1)]
    assert change_key(progress_value(one_done, NOW)) != key


# --- the publisher on a virtual clock ---------------------------------------------------------------------------------


class FakePatch:
    """The injected PATCH: answers from a script (the last answer repeats); records (loop time, body, timeout)."""

    def __init__(self, *answers: ApiResponse | BaseException | Action) -> None:
        self.answers = list(answers) or [OK_ANSWER]
        self.calls: list[tuple[float, dict[str, Any], float]] = []

    async def __call__(self, body: bytes, timeout: float) -> ApiResponse:
        loop = asyncio.get_running_loop()
        annotation = json.loads(body)["metadata"]["annotations"][progress.ANNOTATION]
        self.calls.append((loop.time(), json.loads(annotation), timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Action):  # HANG
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, ApiResponse)
        return answer

    def times(self, start: float) -> list[float]:
        return [round(at - start, 3) for at, _, _ in self.calls]


Script = Callable[[list[ImageResult]], Awaitable[None]]


def publish(
    patch: FakePatch,
    script: Script,
    interval: float = 10.0,
    images: int = 3,
    overall: float | None = None,
    log: Logger | None = None,
) -> tuple[ProgressPublisher, float]:
    """Runs the publisher beside `script` (which changes the results over virtual time) until the script returns,
    then cancels it as the fetch run does; returns the publisher and the loop time it started at."""
    results = [result(f"r/i{n}:1") for n in range(images)]

    async def scenario() -> tuple[ProgressPublisher, float]:
        loop = asyncio.get_running_loop()
        deadline = Deadline(overall) if overall is not None else None
        publisher = ProgressPublisher(interval, lambda: results, patch, log or quiet_log(), deadline, wall=loop.time)
        start = loop.time()
        task = asyncio.ensure_future(publisher.run())
        await script(results)
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled() or (publisher.stopped and task.exception() is None)  # a final answer ends it
        return publisher, start

    return run_virtual(scenario())


def start(results: list[ImageResult], index: int, attempt: int = 1) -> None:
    results[index].first_attempt_at = results[index].first_attempt_at or asyncio.get_running_loop().time()
    results[index].in_flight = attempt


def test_nothing_is_written_during_the_first_interval() -> None:
    async def quick_run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(9.9)
        for r in results:
            r.outcome, r.in_flight = "ok", 0

    patch = FakePatch()
    publisher, _ = publish(patch, quick_run)
    assert patch.calls == [] and publisher.writes == 0


def test_a_write_at_each_tick_only_when_something_changed() -> None:
    async def run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(25)  # ticks at 10 (write) and 20 (unchanged)
        results[0].outcome, results[0].in_flight = "ok", 0
        start(results, 1)
        await asyncio.sleep(20)  # tick at 30 (write), 40 (unchanged)
        results[1].in_flight = 2  # the second attempt of the first pulling entry
        await asyncio.sleep(10)  # tick at 50 (write)

    patch = FakePatch()
    publisher, begin = publish(patch, run)
    assert patch.times(begin) == [10.0, 30.0, 50.0]
    assert publisher.writes == 3
    values = [value for _, value, _ in patch.calls]
    assert [(v["done"], v["ok"], v["pulling"][0]["image"], v["pulling"][0]["attempt"]) for v in values] == [
        (0, 0, "r/i0:1", 1),
        (1, 1, "r/i1:1", 1),
        (1, 1, "r/i1:1", 2),
    ]
    assert values[0]["total"] == 3 and values[0]["t"] == int(begin + 10)
    assert values[0]["pulling"][0]["since"] == round(begin, 1)


def test_each_patch_gets_min_5s_and_the_interval_never_past_the_deadline() -> None:
    async def run(results: list[ImageResult]) -> None:
        for index in range(3):
            start(results, index)
            await asyncio.sleep(2)
            results[index].outcome, results[index].in_flight = "ok", 0

    patch = FakePatch()
    publish(patch, run, interval=1.5)
    assert len(patch.calls) >= 2 and {timeout for _, _, timeout in patch.calls} == {1.5}

    async def long_run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(100)
        results[0].outcome, results[0].in_flight = "ok", 0
        start(results, 1)
        await asyncio.sleep(50)
        results[1].outcome, results[1].in_flight = "ok", 0
        await asyncio.sleep(50)

    patch = FakePatch()
    _, begin = publish(patch, long_run, interval=60.0, overall=123.0)
    # Ticks at 60 (the 5 s cap), 120 (3 s left), 180 (past the deadline: no write although something changed).
    assert [(round(at - begin, 3), timeout) for at, _, timeout in patch.calls] == [(60.0, 5.0), (120.0, 3.0)]


def test_a_denial_is_one_warning_and_no_more_writes(records: list[logging.LogRecord]) -> None:
    denial = {"message": 'pods "agent-x" is forbidden: User "sa" cannot patch'}
    forbidden = ApiResponse(403, json.dumps(denial).encode())

    async def run(results: list[ImageResult]) -> None:
        for index in range(3):
            start(results, index)
            await asyncio.sleep(10)
            results[index].outcome, results[index].in_flight = "ok", 0

    patch = FakePatch(forbidden)
    publisher, _ = publish(patch, run, interval=5.0, log=Logger(logging.getLogger("image_prefetcher")))
    assert len(patch.calls) == 1 and publisher.writes == 0 and publisher.stopped
    warnings = [m for m in messages(records) if m[0] == "WARNING"]
    assert warnings == [
        (
            "WARNING",
            "progress not published, not trying again in this run",
            {"error": '403 Forbidden: pods "agent-x" is forbidden: User "sa" cannot patch'},
        )
    ]


@pytest.mark.parametrize("status", [401, 404])
def test_401_and_404_are_final_too(status: int) -> None:
    async def run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(10)
        start(results, 0, attempt=2)
        await asyncio.sleep(10)

    patch = FakePatch(ApiResponse(status, b""))
    publisher, _ = publish(patch, run, interval=4.0)
    assert len(patch.calls) == 1 and publisher.stopped


@pytest.mark.parametrize(
    "failure",
    [
        ApiResponse(500, b'{"message":"etcdserver: request timed out"}'),
        ConnectionRefusedError(111, "Connection refused"),
        InClusterError("open /var/run/secrets/kubernetes.io/serviceaccount/token: no such file or directory"),
        HANG,
    ],
    ids=["500", "refused", "no-token", "timeout"],
)
def test_other_failures_are_retried_at_the_next_tick(failure: Any, records: list[logging.LogRecord]) -> None:
    async def run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(25)  # ticks at 10 (fails) and 20 (retried, unchanged since the last successful write)

    patch = FakePatch(failure, OK_ANSWER)
    publisher, begin = publish(patch, run, interval=10.0, log=Logger(logging.getLogger("image_prefetcher")))
    assert patch.times(begin) == [10.0, 20.0]
    assert publisher.writes == 1 and not publisher.stopped
    (warning,) = [m for m in messages(records) if m[0] == "WARNING"]
    assert warning[1] == "progress not published, trying again at the next tick"
    if failure is HANG:
        assert warning[2] == {"error": "timed out after 5s"}


def test_a_hanging_api_server_keeps_the_ticks_on_their_grid() -> None:
    async def run(results: list[ImageResult]) -> None:
        start(results, 0)
        await asyncio.sleep(30)

    patch = FakePatch(HANG)
    publisher, begin = publish(patch, run, interval=3.0)
    # Each PATCH times out after min(5 s, 3 s), the next tick follows at once: at most one write per interval.
    assert patch.times(begin) == [3.0 * n for n in range(1, 10)]
    assert publisher.writes == 0


def test_cancellation_stops_it() -> None:
    patch = FakePatch()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        results = [result("r/a:1", since=loop.time(), in_flight=1)]
        publisher = ProgressPublisher(1.0, lambda: results, patch, quiet_log(), wall=loop.time)
        task = asyncio.ensure_future(publisher.run())
        await asyncio.sleep(1.5)
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        results[0].outcome = "ok"
        await asyncio.sleep(10)

    run_virtual(scenario())
    assert len(patch.calls) == 1


def test_a_snapshot_that_raises_is_a_warning_not_a_crash(records: list[logging.LogRecord]) -> None:
    patch = FakePatch()

    def broken() -> Iterable[ImageResult]:
        raise RuntimeError("boom")

    async def scenario() -> None:
        publisher = ProgressPublisher(1.0, broken, patch, Logger(logging.getLogger("image_prefetcher")))
        await publisher.tick()

    run_virtual(scenario())
    assert ("WARNING", "progress not published", {"error": "boom"}) in messages(records)


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProgressPublisher(0.0, list, FakePatch(), quiet_log())


# --- the engine's fields ----------------------------------------------------------------------------------------------


def test_the_engine_says_when_the_first_attempt_started_and_which_attempt_is_in_flight() -> None:
    image = "r/flaky:1"
    fake = FakeImageService(scripts={image: [fail(grpc.StatusCode.UNAVAILABLE, "EOF"), Action(delay=5.0)]})
    settings = PullSettings(initial_attempt_timeout=30, max_attempt_timeout=30, initial_delay=2, max_delay=2)
    samples: list[tuple[float, int, float | None]] = []

    async def scenario() -> PullEngine:
        loop = asyncio.get_running_loop()
        engine = PullEngine(fake, settings, ChainedCredentials([]), quiet_log())
        begin = loop.time()
        task = asyncio.ensure_future(engine.run([image], Deadline(60)))
        await asyncio.sleep(0.5)
        for _ in range(10):
            r = engine.results[image]
            samples.append((round(loop.time() - begin, 1), r.in_flight, r.first_attempt_at))
            await asyncio.sleep(1.0)
        await task
        return engine

    before = time.time()
    engine = run_virtual(scenario())
    # Attempt 1 fails at once, a 2 s sleep (nothing in flight), attempt 2 runs from 2 s to 7 s, then done.
    in_flight = [(t, n) for t, n, _ in samples]
    assert in_flight == [(0.5, 0), (1.5, 0)] + [(t + 0.5, 2) for t in range(2, 7)] + [(7.5, 0), (8.5, 0), (9.5, 0)]
    firsts = {at for _, _, at in samples}
    assert len(firsts) == 1
    (first,) = firsts
    assert first is not None and before <= first <= time.time()
    assert engine.results[image].outcome == "ok" and engine.results[image].in_flight == 0


# --- flags ------------------------------------------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return fetch_options(parse_flags(FETCH_FLAGS, argv))


def test_the_flag_is_off_by_default_and_takes_a_duration() -> None:
    assert parse().progress_interval == 0
    assert parse("--progress-interval=15s").progress_interval == 15 * SECOND
    assert parse("--progress-interval", "1m").progress_interval == 60 * SECOND
    assert parse("--progress-interval=0s").progress_interval == 0


def test_a_negative_interval_is_rejected() -> None:
    with pytest.raises(FlagError, match=r"^--progress-interval must be 0s \(off\) or more, got -5s$"):
        parse("--progress-interval=-5s")


# --- where it writes to -----------------------------------------------------------------------------------------------


class PodConfig:
    """Stands in for InClusterConfig: request() answers from a script instead of the network."""

    server = "https://10.0.0.1:443"

    def __init__(self, answer: ApiResponse, namespace: str | None = "sa-ns") -> None:
        self.answer = answer
        self.namespace = namespace
        self.calls: list[tuple[str, str, bytes | None, dict[str, str], float]] = []

    def request(self, method: str, path: str, body: bytes | None, headers: Any, timeout: float) -> ApiResponse:
        self.calls.append((method, path, body, dict(headers), timeout))
        return self.answer


def test_no_in_cluster_config_logs_once_and_publishes_nothing(records: list[logging.LogRecord]) -> None:
    log = Logger(logging.getLogger("image_prefetcher"))
    assert progress.publisher_for(5.0, list, log, environ={}) is None
    ((level, message, _),) = messages(records)
    assert (level, message) == ("INFO", "no Kubernetes client, not publishing the progress")


def test_the_patch_goes_to_this_pod_with_a_merge_patch() -> None:
    config = PodConfig(OK_ANSWER)
    env = {"POD_NAME": "agent-abc12", "POD_NAMESPACE": "prefetch"}
    publisher = progress.publisher_for(5.0, lambda: [result("r/a:1", "ok")], quiet_log(), None, env, lambda _e: config)
    assert publisher is not None
    asyncio.run(publisher.tick())
    ((method, path, body, headers, timeout),) = config.calls
    assert (method, path, timeout) == ("PATCH", "/api/v1/namespaces/prefetch/pods/agent-abc12", 5.0)
    assert headers == {"Content-Type": "application/merge-patch+json"}
    assert body is not None and json.loads(json.loads(body)["metadata"]["annotations"][progress.ANNOTATION])["ok"] == 1
    assert publisher.writes == 1


def test_the_pod_defaults_to_the_hostname_and_the_namespace_to_the_service_accounts() -> None:
    config = PodConfig(OK_ANSWER)
    found = progress.pod_identity(quiet_log(), {}, lambda _e: config)
    assert found == (config, "sa-ns", socket.gethostname())
    config.namespace = None
    assert progress.pod_identity(quiet_log(), {}, lambda _e: config) is None


# --- the fetch run ----------------------------------------------------------------------------------------------------

IMAGE = "registry.test:5000/team/app:v1"
SLOW = "registry.test:5000/team/slow:v1"


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NODE_NAME", "INSTANCE_NAME", "POD_NAMESPACE", "POD_NAME", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


class Recording(ProgressPublisher):
    """A publisher that records whether its task was cancelled."""

    cancelled = False

    async def run(self) -> None:
        try:
            await super().run()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def fetch(
    tmp_path: Path,
    *flags: str,
    script: dict[str, list[Action]] | None = None,
    patch: FakePatch | None = None,
    during: Callable[[FetchRun, FakeCri], Awaitable[None]] | None = None,
) -> tuple[int, FetchRun, list[Recording], str]:
    termination_log = tmp_path / "termination-log"
    fake = FakeCri(tmp_path / "cri.sock", scripts=script or {})
    argv = [f"--termination-log={termination_log}", f"--cri-socket={fake.socket_path}", *flags]
    stream = io.StringIO()
    log = configure_logging(True, "text", stream)
    options = fetch_options(parse_flags(FETCH_FLAGS, argv))
    run = FetchRun(options, [IMAGE, SLOW], ChainedCredentials([]), Extensions(), log)
    built: list[Recording] = []
    if patch is not None:
        assert run.progress is not None
        interval = run.options.progress_interval / SECOND

        def make(engine: PullEngine, deadline: Deadline) -> Recording:
            snapshot = lambda: [engine.results.get(i) or ImageResult(i) for i in run.images]  # noqa: E731
            built.append(Recording(interval, snapshot, patch, log, deadline))
            return built[-1]

        run.progress = make

    return asyncio.run(main_beside(fake, run, during)), run, built, stream.getvalue()


def test_interval_0_never_publishes(tmp_path: Path) -> None:
    code, run, _, log = fetch(tmp_path)
    assert code == 0 and run.progress is None
    assert "progress" not in log


def test_interval_without_a_cluster_pulls_and_counts_no_writes(tmp_path: Path) -> None:
    code, _, _, log = fetch(tmp_path, "--progress-interval=1s")
    assert code == 0
    assert 'msg="no Kubernetes client, not publishing the progress"' in log
    assert 'msg="progress published" writes=0' in log


def test_the_fetch_run_publishes_while_pulling_and_logs_the_count(tmp_path: Path) -> None:
    patch = FakePatch()
    code, run, (publisher,), log = fetch(
        tmp_path, "--progress-interval=100ms", script={SLOW: [Action(delay=0.45)]}, patch=patch
    )
    assert code == 0 and publisher.cancelled
    assert 1 <= publisher.writes == len(patch.calls) <= 5  # about 0.45 s of pulling at 0.1 s
    first = patch.calls[0][1]
    assert (first["total"], first["ok"], first["pulling"][0]["image"]) == (2, 1, SLOW)
    assert first["pulling"][0]["attempt"] == 1
    assert all(timeout == pytest.approx(0.1) for _, _, timeout in patch.calls)
    (line,) = [ln for ln in log.splitlines() if 'msg="progress published"' in ln]
    assert line.endswith(f"writes={publisher.writes}")
    assert run.progress_writes == publisher.writes


def test_sigterm_cancels_the_publisher(tmp_path: Path) -> None:
    async def terminate(run: FetchRun, fake: FakeCri) -> None:
        while len(fake.calls) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.25)
        run._on_signal(signal.SIGTERM)

    patch = FakePatch()
    code, _, (publisher,), log = fetch(
        tmp_path, "--progress-interval=100ms", script={SLOW: [HANG]}, patch=patch, during=terminate
    )
    assert code == 128 + signal.SIGTERM
    assert publisher.cancelled and publisher.writes >= 1
    assert f'msg="progress published" writes={publisher.writes}' in log
