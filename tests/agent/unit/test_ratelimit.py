"""Registry rate limits: the `rate_limited` class over real runtime texts, Retry-After, the per-host gate as pure
logic, and the engine's retry loops sharing it (in-process, virtual clock: exact times)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import pytest
from fakecri import OK, Action, ScriptedImages, fail
from test_engine import fast_settings, run_engine
from virtualclock import run_virtual

from image_prefetcher.classify import ErrorClass, classify
from image_prefetcher.engine import Deadline
from image_prefetcher.ratelimit import (
    GateState,
    RegistryGates,
    abandon,
    admit,
    host_of,
    rate_limit_pause,
    report,
    retry_after,
)

HUB_LIMIT = (
    "toomanyrequests: You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"
)
RUNTIME_TEXTS = [
    # containerd 1.6, HEAD of the manifest
    (
        'failed to pull and unpack image "docker.io/library/nginx:1.25": failed to resolve reference '
        '"docker.io/library/nginx:1.25": unexpected status from HEAD request to '
        "https://registry-1.docker.io/v2/library/nginx/manifests/1.25: 429 Too Many Requests"
    ),
    # containerd 1.6 through a plain-HTTP mirror
    (
        'failed to pull and unpack image "registry.test:5000/team/app:v1": failed to resolve reference '
        '"registry.test:5000/team/app:v1": unexpected status from HEAD request to '
        "http://127.0.0.1:41234/v2/team/app/manifests/v1: 429 Too Many Requests"
    ),
    # containerd 1.6/1.7, a blob GET with the registry's message
    (
        'failed to pull and unpack image "docker.io/library/redis:7": failed to copy: httpReadSeeker: failed open: '
        "unexpected status code https://registry-1.docker.io/v2/library/redis/blobs/sha256:4293c1d1e5: "
        f"429 Too Many Requests - Server message: {HUB_LIMIT}"
    ),
    # containerd 2.x
    (
        'failed to pull and unpack image "docker.io/library/busybox:1.36": failed to resolve image: '
        "docker.io/library/busybox:1.36: unexpected status from HEAD request to "
        f"https://registry-1.docker.io/v2/library/busybox/manifests/1.36: 429 Too Many Requests: {HUB_LIMIT}"
    ),
    # containerd, 503 from Quay
    (
        'failed to pull and unpack image "quay.io/team/app:v1": failed to resolve reference "quay.io/team/app:v1": '
        "unexpected status from HEAD request to https://quay.io/v2/team/app/manifests/v1: 503 Service Unavailable"
    ),
    # CRI-O (containers/image)
    f"reading manifest 1.25 in docker.io/library/nginx: {HUB_LIMIT}",
    (
        "initializing source docker://quay.io/team/app:v1: reading manifest v1 in quay.io/team/app: "
        "TOOMANYREQUESTS: slow down"
    ),
    (
        "initializing source docker://quay.io/team/app:v1: pinging container registry quay.io: "
        "received unexpected HTTP status: 503 Service Unavailable"
    ),
]


@pytest.mark.parametrize("details", RUNTIME_TEXTS)
def test_429_and_503_from_a_registry_are_rate_limited(details: str) -> None:
    assert classify("UNKNOWN", details) is ErrorClass.RATE_LIMITED


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        ("UNKNOWN", "failed commit on ref: unexpected status: 500 Internal Server Error", ErrorClass.ERROR),
        ("UNKNOWN", "layer sha256:429abc digest mismatch", ErrorClass.ERROR),  # 429 inside a digest
        ("UNKNOWN", "sha256:abc-503 digest mismatch", ErrorClass.ERROR),
        ("UNKNOWN", "dial tcp 10.0.0.1:503: connect: connection refused", ErrorClass.UNAVAILABLE),  # a port
        ("UNKNOWN", "GET https://r/v2/x/503/manifests/v1: 401 Unauthorized", ErrorClass.UNAUTHORIZED),  # a path
        ("UNAVAILABLE", "503 Service Unavailable", ErrorClass.UNAVAILABLE),  # the CRI socket's own gRPC status
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", ErrorClass.TIMEOUT),
        ("NOT_FOUND", "r/x:v1: not found", ErrorClass.NOT_FOUND),
    ],
)
def test_what_is_not_a_rate_limit(code: str, details: str, expected: ErrorClass) -> None:
    assert classify(code, details) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("429 Too Many Requests (Retry-After: 30)", 30.0),
        ('{"errors":[...]} retry-after="12"', 12.0),
        ("toomanyrequests: retry after 2m", 120.0),
        ("Retry-After=1.5s", 1.5),
        ("retry after 250ms", 0.25),
        ("Retry-After: 999999999", 24 * 3600.0),
        ("429 Too Many Requests", None),
        ("Retry-After: Wed, 21 Oct 2026 07:28:00 GMT", None),  # the HTTP-date form: the schedule decides
    ],
)
def test_retry_after(text: str, seconds: float | None) -> None:
    assert retry_after(text) == seconds
    assert rate_limit_pause(text, 4.0) == (seconds if seconds is not None else 4.0)


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("nginx", "docker.io"),
        ("library/nginx:1", "docker.io"),
        ("team/app:v1", "docker.io"),
        ("quay.io/team/app:v1", "quay.io"),
        ("Registry.Test:5000/team/app@sha256:abc", "registry.test:5000"),
        ("localhost/app", "localhost"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000"),
    ],
)
def test_host_of(image: str, host: str) -> None:
    assert host_of(image) == host


# --- the gate, pure ---------------------------------------------------------------------------------------------------


def test_a_rate_limit_closes_the_gate_for_the_pause_then_one_probe_goes_alone() -> None:
    gate = GateState()
    assert admit(gate, 0.0) == 0.0  # open
    report(gate, 1.0, rate_limited=True, pause=30.0, probe=False)
    assert admit(gate, 1.0) == 30.0 and admit(gate, 21.0) == 10.0
    assert admit(gate, 31.0) == 0.0  # reopened: this caller is the probe
    gate.probe_out = True
    assert admit(gate, 31.0) == math.inf  # the others wait for the probe's outcome
    report(gate, 40.0, rate_limited=False, pause=0.0, probe=True)
    assert admit(gate, 40.0) == 0.0 and not gate.limited and not gate.probe_out


def test_a_probe_limited_again_closes_the_gate_again() -> None:
    gate = GateState(limited=True, probe_out=True)
    report(gate, 50.0, rate_limited=True, pause=8.0, probe=True)
    assert admit(gate, 50.0) == 8.0 and not gate.probe_out


def test_pauses_never_shorten_the_gate() -> None:
    gate = GateState()
    report(gate, 0.0, rate_limited=True, pause=60.0, probe=False)
    report(gate, 1.0, rate_limited=True, pause=2.0, probe=False)
    assert gate.closed_until == 60.0


def test_an_abandoned_probe_hands_over_to_the_next_waiter() -> None:
    gate = GateState(limited=True, probe_out=True)
    abandon(gate, probe=False)
    assert admit(gate, 0.0) == math.inf
    abandon(gate, probe=True)
    assert admit(gate, 0.0) == 0.0 and gate.limited


# --- the engine: one back-off per host --------------------------------------------------------------------------------

LIMITED = "unexpected status from HEAD request to https://quay.io/v2/a/manifests/v1: 429 Too Many Requests"


def limited(retry_after_s: float | None = None) -> Action:
    suffix = f" (Retry-After: {retry_after_s:g})" if retry_after_s is not None else ""
    return fail(grpc.StatusCode.UNKNOWN, LIMITED + suffix)


def starts(fake: ScriptedImages, image: str) -> list[float]:
    return [round(c.started - 1000.0, 3) for c in fake.calls if c.image == image]


def test_a_429_with_retry_after_holds_back_every_image_of_that_host_and_no_other(tmp_path: Path) -> None:
    slow = Action(delay=1.0)

    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(30), OK]
        fake.scripts["quay.io/b:v1"] = [slow, slow]  # in flight when the limit came: runs on; its retry waits
        fake.scripts["docker.io/c:v1"] = [fail(grpc.StatusCode.UNKNOWN, "unexpected EOF"), OK]

    images = ["quay.io/a:v1", "quay.io/b:v1", "docker.io/c:v1"]
    engine, fake, _, log = run_engine(tmp_path, prepare, images, fast_settings(initial_delay=0.5), overall=600)
    assert all(r.outcome == "ok" for r in engine.results.values())
    assert starts(fake, "quay.io/a:v1") == [0.0, 30.0]  # Retry-After, not its 0.5 s delay
    assert starts(fake, "quay.io/b:v1") == [0.0]  # started before the limit, succeeded
    assert starts(fake, "docker.io/c:v1") == [0.0, 0.5]  # another host: its own schedule
    assert "registry rate limited, backing off for the whole host" in log


def test_without_retry_after_the_pause_is_the_images_retry_delay(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(), limited(), OK]

    settings = fast_settings(initial_delay=4.0, max_delay=8.0)
    engine, fake, _, _ = run_engine(tmp_path, prepare, ["quay.io/a:v1"], settings, overall=600)
    assert engine.results["quay.io/a:v1"].outcome == "ok"
    assert starts(fake, "quay.io/a:v1") == [0.0, 4.0, 12.0]  # the schedule's delays, doubling


def test_after_the_pause_one_probe_goes_alone_and_the_others_wait_for_its_outcome(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(10), Action(delay=3.0)]
        # b's first attempt answers 429 at 0.5 s (its own pause, 0.2 s, does not shorten the gate's 10 s).
        fake.scripts["quay.io/b:v1"] = [Action("fail", grpc.StatusCode.UNKNOWN, LIMITED, delay=0.5), Action(delay=3.0)]

    images = ["quay.io/a:v1", "quay.io/b:v1"]
    engine, fake, _, _ = run_engine(tmp_path, prepare, images, fast_settings(initial_delay=0.2), overall=600)
    assert all(r.outcome == "ok" for r in engine.results.values())
    second = sorted([starts(fake, "quay.io/a:v1")[1], starts(fake, "quay.io/b:v1")[1]])
    assert second == [10.0, 13.0]  # the probe at the end of the pause, the other once the probe succeeded


def test_a_probe_that_times_out_opens_the_gate(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(10), Action(delay=20.0), OK]  # a probe outlasting its 5 s attempt
        fake.scripts["quay.io/b:v1"] = [Action("fail", grpc.StatusCode.UNKNOWN, LIMITED, delay=0.5), OK]

    images = ["quay.io/a:v1", "quay.io/b:v1"]
    engine, fake, _, _ = run_engine(tmp_path, prepare, images, fast_settings(), overall=600)
    assert all(r.outcome == "ok" for r in engine.results.values())
    # A DeadlineExceeded is no rate limit: whichever image probed at 10 s, the other went by 15 s at the latest.
    assert 10.0 <= starts(fake, "quay.io/b:v1")[1] <= 15.0


def test_a_back_off_past_the_overall_deadline_gives_up_at_once_with_the_reason(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(3600)]
        fake.scripts["quay.io/b:v1"] = [Action(delay=1.0), OK]

    images = ["quay.io/a:v1", "quay.io/b:v1"]
    engine, fake, _, _ = run_engine(tmp_path, prepare, images, fast_settings(), overall=60)
    a, b = engine.results["quay.io/a:v1"], engine.results["quay.io/b:v1"]
    assert (a.outcome, a.attempts, a.ended_by_deadline) == ("failed", 1, True)
    assert a.reason().startswith("rate_limited: unexpected status from HEAD request")
    assert (b.outcome, b.attempts) == ("ok", 1)  # its first attempt was in flight already
    assert max(c.ended or 0 for c in fake.calls) - 1000.0 <= 1.0  # nobody slept towards the hour


def test_an_image_that_never_started_names_the_rate_limit(tmp_path: Path) -> None:
    def prepare(fake: ScriptedImages) -> None:
        fake.scripts["quay.io/a:v1"] = [limited(3600)]

    images = ["quay.io/a:v1", "quay.io/b:v1"]
    engine, _fake, _, _ = run_engine(tmp_path, prepare, images, fast_settings(max_parallel_pulls=1), overall=60)
    b = engine.results["quay.io/b:v1"]
    assert (b.outcome, b.attempts) == ("failed", 0)
    assert b.reason() == (
        "rate_limited: registry quay.io answered too many requests; its back-off lasts past the overall timeout"
    )


def test_registry_gates_an_abandoned_probe_wakes_the_next_waiter_at_once() -> None:
    async def scenario() -> tuple[bool, float]:
        gates = RegistryGates()
        gates.state("quay.io").limited = True
        deadline = Deadline(600)
        probe = await gates.enter("quay.io", deadline)
        assert probe is not None and probe.probe
        waiter = asyncio.ensure_future(gates.enter("quay.io", deadline))
        await asyncio.sleep(50)
        assert not waiter.done()  # waits for the probe's outcome, as long as the deadline allows
        gates.abandon(probe)  # e.g. the probe's image was cancelled
        started = asyncio.get_running_loop().time()
        ticket = await waiter
        return ticket is not None and ticket.probe, asyncio.get_running_loop().time() - started

    took_over, after = run_virtual(scenario())
    assert took_over and after == 0.0


def test_registry_gates_a_waiter_for_a_probe_gives_up_at_the_deadline() -> None:
    async def scenario() -> tuple[object, float]:
        gates = RegistryGates()
        gates.state("quay.io").limited = True
        deadline = Deadline(30)
        assert await gates.enter("quay.io", deadline) is not None
        ticket = await gates.enter("quay.io", deadline)
        return ticket, deadline.remaining()

    ticket, remaining = run_virtual(scenario())
    assert ticket is None and remaining <= 0
