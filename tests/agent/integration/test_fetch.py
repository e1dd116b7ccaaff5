"""`image-prefetcher fetch` against a real containerd and Debian's registry, with the fault proxy in between.

Each test asserts the outcome (exit code, termination summary, images present), the attempts (summary and/or the
proxy's request records) and that the run ends within its bound. Timeouts are short so the suite stays quick.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from infra._util import free_port, wait_until
from infra.agentrun import TEST_REGISTRY_NAME as REGISTRY_NAME
from infra.agentrun import AgentRun
from infra.agentrun import image_ref as ref
from infra.containerd import ContainerdNode
from infra.faultproxy import FaultProxy, Rule
from infra.images import TestImage
from infra.registry import Registry

pytestmark = pytest.mark.timeout(120)

OVERALL_S = 30
# Short schedule: attempts 2s, 4s, 8s...; delays 0.2s, 0.4s, ... capped at 1s.
FAST = (
    "--initial-pull-attempt-timeout=2s",
    "--initial-pull-attempt-delay=200ms",
    "--max-pull-attempt-delay=1s",
    "--cri-connect-timeout=10s",
)
SLACK_S = 10  # the agent promises to exit within overall timeout + 10 s


def overall(seconds: int) -> str:
    return f"--overall-timeout={seconds}s"


def error_class(run: AgentRun, image: str) -> str:
    assert run.summary is not None, run.describe()
    reason: str = run.summary["errors"][image]
    klass, _, detail = reason.partition(": ")
    assert len(detail) <= 160, "the summary's error detail is cut to 160 characters"
    return klass


def attempts_of(run: AgentRun, image: str) -> int:
    assert run.summary is not None
    retries: dict[str, int] = run.summary.get("retries", {})
    return retries.get(image, 1)


def requests_to(proxy: FaultProxy, repo: str) -> list[Any]:
    return [r for r in proxy.requests if r.path.startswith(f"/v2/{repo}/")]


def assert_ended_in_time(run: AgentRun, bound_s: float) -> None:
    assert run.elapsed <= bound_s, f"run took {run.elapsed:.1f}s, bound {bound_s}s\n{run.describe()}"


def assert_no_secret(run: AgentRun, *secrets: str) -> None:
    text = run.output + json.dumps(run.summary)
    for secret in secrets:
        assert secret not in text, "a credential leaked into the output or the summary"
        assert base64.b64encode(secret.encode()).decode()[:12] not in text


def write_docker_config(path: Path, registry: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return path


# ---- success --------------------------------------------------------------------------------------------
def test_pulls_several_images_once_each(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage], run_agent: Callable[..., AgentRun],
        testdir: Path) -> None:
    listed = testdir / "images.txt"
    listed.write_text(f"# images\n{ref('it/alpha')}\n\n{ref('it/beta')}\n")
    run = run_agent(node.socket, [ref("it/gamma"), ref("it/alpha")], *FAST, overall(OVERALL_S),
                    f"--image-list-file={listed}", timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0, run.describe()
    summary = run.summary
    assert summary is not None, run.describe()
    assert (summary["v"], summary["complete"], summary["ok"], summary["failed"], summary["skipped"]) == (
        1, True, 3, 0, 0), run.describe()
    assert summary["attempts"] == 3, "duplicate entries are one image, pulled once"
    assert summary["node"] == "it-node"
    assert summary["bytes"] == sum(image.size for image in images.values())
    for name in images:
        assert node.image_present(ref(f"it/{name}"))
        blob_gets = [r for r in requests_to(proxy, f"it/{name}") if r.method == "GET" and "/blobs/" in r.path]
        assert len(blob_gets) == 4, "three layers and the config, each fetched once"
    assert_ended_in_time(run, OVERALL_S + SLACK_S)


# ---- stalls -----------------------------------------------------------------------------------------------
def test_stall_at_accept_costs_one_attempt(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    proxy.add_rule(Rule(action="stall_accept", times=1))
    image = ref("it/alpha")
    run = run_agent(node.socket, [image], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert (run.summary["ok"], run.summary["failed"]) == (1, 0), run.describe()
    assert run.summary["attempts"] == 2 and attempts_of(run, image) == 2, run.describe()
    assert run.elapsed >= 2, "the first attempt can only end at its 2s deadline"
    assert proxy.requests[0].action == "stall_accept"
    assert node.image_present(image)
    assert_ended_in_time(run, OVERALL_S + SLACK_S)


def test_stall_mid_body_recovers_on_retry(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    layer = images["beta"].layers[1]
    proxy.add_rule(Rule(path=f"/blobs/{layer.digest}$", action="stall_mid_body", after_bytes=100_000, times=1))
    image = ref("it/beta")
    run = run_agent(node.socket, [image], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["ok"] == 1 and attempts_of(run, image) == 2, run.describe()
    assert run.elapsed >= 2, "the first attempt can only end at its 2s deadline"
    layer_requests = [r for r in proxy.requests if r.path.endswith(layer.digest)]
    assert layer_requests[0].action == "stall_mid_body" and layer_requests[0].bytes == 100_000
    # containerd 1.6 drops the partial blob with the cancelled pull's lease, so the retry usually fetches it
    # whole; when it still finds the partial ingest it resumes with a Range request (206).
    last = layer_requests[-1]
    assert (last.status, last.bytes) in ((200, len(layer.data)), (206, len(layer.data) - 100_000)), layer_requests
    assert node.image_present(image)
    assert_ended_in_time(run, OVERALL_S + SLACK_S)


def test_connection_closed_mid_body_is_resumed_inside_one_attempt(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    layer = images["gamma"].layers[2]
    proxy.add_rule(Rule(path=f"/blobs/{layer.digest}$", action="close_mid_body", after_bytes=50_000, times=1))
    image = ref("it/gamma")
    run = run_agent(node.socket, [image], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert (run.summary["ok"], run.summary["attempts"]) == (1, 1), run.describe()
    layer_requests = [r for r in proxy.requests if r.path.endswith(layer.digest)]
    assert [(r.action, r.range) for r in layer_requests] == [("close_mid_body", None), ("pass", "bytes=50000-")]
    assert node.image_present(image)


# ---- HTTP errors ------------------------------------------------------------------------------------------
def test_http_500_then_success(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    # times=2: containerd tries an HTTP error status on both of its host entries (see infra.containerd.hosts_toml)
    proxy.add_rule(Rule(path="/manifests/", action="status", status=500, times=2))
    image = ref("it/gamma")
    run = run_agent(node.socket, [image], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert (run.summary["ok"], run.summary["attempts"]) == (1, 2), run.describe()
    manifest_statuses = [r.status for r in proxy.requests if "/manifests/" in r.path]
    assert manifest_statuses[:2] == [500, 500] and 200 in manifest_statuses[2:]
    assert_ended_in_time(run, OVERALL_S + SLACK_S)


@pytest.mark.parametrize("credential", ["none", "wrong", "right"])
def test_unauthorized_registry(
        testdir: Path, auth_registry: Registry, run_agent: Callable[..., AgentRun], credential: str,
        credentials: tuple[str, str]) -> None:
    image = ref("private/app")
    flags = [*FAST, "--debug"]
    wrong_password = "wr0ng-Pa55word-never-logged"
    if credential != "none":
        password = credentials[1] if credential == "right" else wrong_password
        config = write_docker_config(testdir / "config.json", REGISTRY_NAME, credentials[0], password)
        flags.append(f"--docker-config={config}")
    overall_s = OVERALL_S if credential == "right" else 8
    with FaultProxy(upstream=auth_registry.host) as px, \
            ContainerdNode(testdir, registries={REGISTRY_NAME: px.host}) as node:
        run = run_agent(node.socket, [image], *flags, overall(overall_s), timeout_s=overall_s + SLACK_S + 5)
        assert run.rc == 0 and run.summary is not None, run.describe()
        if credential == "right":
            assert (run.summary["ok"], run.summary["failed"], run.summary["attempts"]) == (1, 0, 1), run.describe()
            assert node.image_present(image)
        else:
            assert (run.summary["ok"], run.summary["failed"]) == (0, 1), run.describe()
            assert error_class(run, image) == "unauthorized", run.describe()
            assert any(r.status == 401 for r in px.requests)
            assert not node.image_present(image)
    assert_no_secret(run, credentials[1], wrong_password)
    assert_ended_in_time(run, overall_s + SLACK_S)


# ---- not found / invalid reference / refused ----------------------------------------------------------------
def test_not_found_is_retried_until_the_overall_timeout(
        node: ContainerdNode, proxy: FaultProxy, registry: Registry, run_agent: Callable[..., AgentRun]) -> None:
    image = ref("it/missing")
    run = run_agent(node.socket, [image], *FAST, overall(6), timeout_s=6 + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["failed"] == 1 and error_class(run, image) == "not_found", run.describe()
    assert run.summary["attempts"] >= 3, run.describe()
    assert len(requests_to(proxy, "it/missing")) >= 3
    assert run.elapsed >= 5, "NOT_FOUND is retried until the overall deadline by default"
    assert_ended_in_time(run, 6 + SLACK_S)


def test_not_found_fails_at_once_with_flag(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    missing = ref("it/missing")
    run = run_agent(node.socket, [missing, ref("it/alpha")], *FAST, overall(OVERALL_S), "--not-found=fail",
                    timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert (run.summary["ok"], run.summary["failed"], run.summary["attempts"]) == (1, 1, 2), run.describe()
    assert error_class(run, missing) == "not_found" and missing not in run.summary.get("retries", {})
    assert run.summary["complete"] is True
    assert run.elapsed < OVERALL_S, "a final NOT_FOUND must not wait for the overall timeout"


def test_invalid_reference_fails_at_once(
        node: ContainerdNode, proxy: FaultProxy, run_agent: Callable[..., AgentRun]) -> None:
    bad = f"{REGISTRY_NAME}/Upper/Case:v1"
    run = run_agent(node.socket, [bad], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["failed"] == 1 and error_class(run, bad) == "invalid_reference", run.describe()
    assert run.summary["attempts"] <= 1 and bad not in run.summary.get("retries", {}), run.describe()
    assert proxy.requests == [], "an invalid reference never reaches the registry"
    assert run.elapsed < OVERALL_S / 2


def test_refused_connection_is_retried_until_the_overall_timeout(
        node: ContainerdNode, run_agent: Callable[..., AgentRun]) -> None:
    node.set_registry(REGISTRY_NAME, f"127.0.0.1:{free_port()}")  # nothing listens there
    image = ref("it/alpha")
    run = run_agent(node.socket, [image], *FAST, overall(5), timeout_s=5 + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["failed"] == 1 and run.summary["attempts"] >= 3, run.describe()
    assert error_class(run, image) in ("unavailable", "error"), run.describe()
    assert_ended_in_time(run, 5 + SLACK_S)


# ---- slow links ----------------------------------------------------------------------------------------------
def test_slow_bandwidth_escalates_the_attempt_timeout(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    # 256 KiB/s per connection: each ~0.7 MiB layer needs ~2.7 s, more than the first 2 s attempt; the second
    # attempt gets 4 s and finishes (even when it has to start the blobs over).
    proxy.add_rule(Rule(path="/blobs/", action="slow", bandwidth_bps=256 << 10))
    image = ref("it/alpha")
    run = run_agent(node.socket, [image], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["ok"] == 1 and attempts_of(run, image) >= 2, run.describe()
    assert run.elapsed >= 2 + 2.5, "a first attempt cut at 2 s, then a full slow pull"
    assert all(r.action == "slow" for r in proxy.requests if "/blobs/" in r.path)
    assert node.image_present(image)
    assert_ended_in_time(run, OVERALL_S + SLACK_S)


# ---- concurrency ------------------------------------------------------------------------------------------------
def test_max_parallel_pulls_one_pulls_images_one_after_another(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    proxy.configure(latency_s=0.05)  # stretch each pull so overlaps would show
    refs = [ref(f"it/{name}") for name in images]
    run = run_agent(node.socket, refs, *FAST, overall(OVERALL_S), "--max-parallel-pulls=1",
                    timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None and run.summary["ok"] == 3, run.describe()
    spans = []
    for name in images:
        records = requests_to(proxy, f"it/{name}")
        spans.append((min(r.started for r in records), max(r.ended or r.started for r in records)))
    spans.sort()
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, f"pulls overlapped with --max-parallel-pulls=1: {spans}"


def test_unlimited_parallel_pulls_overlap(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    proxy.configure(latency_s=0.05)
    run = run_agent(node.socket, [ref(f"it/{name}") for name in images], *FAST, overall(OVERALL_S),
                    timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None and run.summary["ok"] == 3, run.describe()
    first_requests = sorted(min(r.started for r in requests_to(proxy, f"it/{name}")) for name in images)
    last_ends = [max(r.ended or r.started for r in requests_to(proxy, f"it/{name}")) for name in images]
    assert first_requests[-1] < min(last_ends), "all images are pulled at the same time by default"


# ---- containerd restart, pull policy ---------------------------------------------------------------------------
def test_containerd_restarted_mid_run(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        start_agent: Callable[..., Any]) -> None:
    proxy.add_rule(Rule(path="/blobs/", action="stall_mid_body", times=1))
    image = ref("it/gamma")
    agent = start_agent(node.socket, [image], "--initial-pull-attempt-timeout=20s",
                        "--initial-pull-attempt-delay=500ms", "--cri-connect-timeout=10s", overall(OVERALL_S))
    assert wait_until(lambda: any(r.action == "stall_mid_body" for r in proxy.requests), 20), "pull never started"
    node.restart()
    run = agent.finish(OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert run.summary["ok"] == 1 and attempts_of(run, image) >= 2, run.describe()
    assert run.elapsed < 20, "the restart must end the stalled attempt, not its 20s deadline"
    assert node.image_present(image)


def test_if_not_present_makes_no_registry_request_for_present_images(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        run_agent: Callable[..., AgentRun]) -> None:
    present, absent = ref("it/alpha"), ref("it/beta")
    with node.cri() as cri:
        cri.pull_image(present, timeout_s=60)
    proxy.clear_requests()
    run = run_agent(node.socket, [present, absent], *FAST, overall(OVERALL_S), "--pull-policy=IfNotPresent",
                    timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.rc == 0 and run.summary is not None, run.describe()
    assert (run.summary["ok"], run.summary["skipped"], run.summary["failed"]) == (1, 1, 0), run.describe()
    assert run.summary["attempts"] == 1, run.describe()
    assert requests_to(proxy, "it/alpha") == [], "a present image is not asked for"
    assert requests_to(proxy, "it/beta"), "an absent image is pulled"
    proxy.clear_requests()
    run = run_agent(node.socket, [present], *FAST, overall(OVERALL_S), timeout_s=OVERALL_S + SLACK_S + 5)
    assert run.summary is not None and run.summary["ok"] == 1, run.describe()
    assert requests_to(proxy, "it/alpha"), "Always (the default) asks the registry again"


# ---- start-up and shutdown -------------------------------------------------------------------------------------------
def test_missing_cri_socket_ends_with_one_line(testdir: Path, run_agent: Callable[..., AgentRun]) -> None:
    missing = testdir / "no-such-dir" / "containerd.sock"
    run = run_agent(missing, [ref("it/alpha")], "--cri-connect-timeout=2s", overall(OVERALL_S), timeout_s=30)
    assert run.rc != 0, run.describe()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    mentioning = [line for line in lines if str(missing) in line]
    assert len(mentioning) == 1 and lines[-1] == mentioning[0], run.describe()
    assert_ended_in_time(run, 2 + SLACK_S)


def test_sigterm_mid_run_ends_promptly_with_partial_summary(
        node: ContainerdNode, proxy: FaultProxy, images: dict[str, TestImage],
        start_agent: Callable[..., Any]) -> None:
    with node.cri() as cri:
        cri.pull_image(ref("it/alpha"), timeout_s=60)
    proxy.add_rule(Rule(path=f"/v2/it/beta/blobs/{images['beta'].layers[0].digest}$", action="stall_mid_body"))
    agent = start_agent(node.socket, [ref("it/alpha"), ref("it/beta")], "--initial-pull-attempt-timeout=60s",
                        "--cri-connect-timeout=10s", overall(120))
    assert wait_until(lambda: any(r.action == "stall_mid_body" for r in proxy.requests), 20), "pull never started"
    # let the quick (present) image finish first, so the partial summary has something in it
    assert wait_until(lambda: "image pulled successfully" in agent.err_path.read_text(errors="replace"), 20)
    assert agent.proc.poll() is None, "the stalled image keeps the run going"
    signalled = time.monotonic()
    agent.signal(signal.SIGTERM)
    run = agent.finish(30)
    assert run.rc != 0, run.describe()
    assert time.monotonic() - signalled < SLACK_S, "SIGTERM must end the run promptly"
    assert run.summary is not None and run.summary["complete"] is False, run.describe()
    assert run.summary["ok"] == 1 and run.summary["failed"] == 1, run.describe()
