"""API faults on the cluster side: ``ansible-playbook stackrox.prefetch.prefetch`` with its kubeconfig pointing at an
API fault proxy (tests/infra/apiproxy.py) in front of the real API server.

For each fault: the task ends within its time limit plus the bound the modules document (docs/faults.md), the
message names the object, the operation and the cause, there is no traceback, a request is sent again only where
that is safe, and an apply that could not finish says which objects it wrote and which not, so that a rerun
repairs it. A field owned by another manager (409) is test_real_cluster.py's; the API server's restart runs on a
cluster of its own. Time is asserted only as bounds from each test's own settings (timeouts, Retry-After).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from e2e.faults import api_proxy, proxy_kubeconfig
from e2e.support import (
    VENV_BIN,
    Cluster,
    PlayResult,
    RunningPlaybook,
    push_all,
    ref,
    role_vars,
    run_playbook,
    start_playbook,
)
from infra.apiproxy import ApiProxy, ApiRequest, ApiRule
from infra.images import push_test_image
from kube.cluster import KubeCluster

HOST = "local"
# Limits the modules document (docs/faults.md, the api_retries doc fragment): a task ends at the latest this long
# after its own time limit (two 5 s attempt timeouts), rollout's failure report adding up to three such requests.
STATED_BOUND_S = 10
REPORT_REQUESTS_BOUND_S = 3 * STATED_BOUND_S
APPLY_WAIT_TIMEOUT_S = 120  # apply's wait_timeout: the role passes none with state=present
# ansible-playbook's own start, the render and the report around the task under test: not part of any bound above.
PLAY_ALLOWANCE_S = 90
ROLLOUT_TIMEOUT_S = 150  # role_vars' images_timeout
IMAGES = {what: ref(f"e2e/fault-{what}") for what in (
    "throttle", "error", "prune", "reset", "close", "gone", "storm", "endless", "revoked", "sigint", "restart")}
NO_DRY_RUN = r"^(?!.*dryRun=)"  # the real write, not the dry-run that plans it


@pytest.fixture(scope="module")
def images(cluster: Cluster) -> dict[str, str]:
    for image in IMAGES.values():
        repository = image.split("/", 1)[1].split(":", 1)[0]
        push_test_image(cluster.info["registry"]["upstream"], repository, "v1", size_mib=0.5, layers=1,
                        seed=repository)
    return IMAGES


@pytest.fixture(scope="module")
def kubeconfig(cluster: Cluster, apiproxy: ApiProxy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return proxy_kubeconfig(cluster, apiproxy, tmp_path_factory.mktemp("apiproxy-kubeconfig") / "kubeconfig")


def fresh(cluster: Cluster, name: str) -> str:
    """No instance ``name`` left from an earlier run on a reused cluster (its namespace and cluster RBAC)."""
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=120s")
    for kind in ("clusterrolebinding", "clusterrole"):
        cluster.kubectl("delete", kind, f"{name}-node-labeler", "--ignore-not-found")
    return name


def play(cluster: Cluster, collections_path: Path, workdir: Path, kubeconfig: Optional[Path], name: str,
         image: str, **extra: Any) -> tuple[PlayResult, float]:
    """The playbook, through the proxy when ``kubeconfig`` is given; returns its result and its wall time."""
    values = role_vars(cluster, name, [image], **extra)
    if kubeconfig is not None:
        values["images_kubeconfig"] = str(kubeconfig)
    started = time.monotonic()
    result = run_playbook(workdir, collections_path, {HOST: values})
    return result, time.monotonic() - started


def assert_clean(result: PlayResult) -> None:
    """One error path: no traceback, no 'unexpected error', no MODULE FAILURE."""
    for bad in ("Traceback", "unexpected error", "MODULE FAILURE"):
        assert bad not in result.stdout, result.stdout[-6000:]


def module_failure(result: PlayResult, task: str) -> dict[str, Any]:
    """The result JSON of the failed module task whose name contains ``task`` (the ``fatal: ... => {...}`` line)."""
    current = ""
    for line in result.stdout.splitlines():
        if line.startswith("TASK ["):
            current = line
        elif task in current and "FAILED! => " in line:
            failure: dict[str, Any] = json.loads(line.split("FAILED! => ", 1)[1])
            return failure
    raise AssertionError(f"no failed task {task!r} in the output:\n{result.stdout[-6000:]}")


def requests_to(px: ApiProxy, method: str, path: str, query: str = "") -> list[ApiRequest]:
    return [r for r in px.requests if r.method == method and re.search(path, r.path) and re.search(query, r.query)]


def assert_spaced(requests: list[ApiRequest], seconds: float) -> None:
    """Each request came at least ``seconds`` after the one before it (a Retry-After honoured)."""
    for before, after in zip(requests, requests[1:]):
        assert after.started - before.started >= seconds, [(r.started, r.status) for r in requests]


def succeeded_everywhere(result: PlayResult, cluster: Cluster) -> None:
    nodes = result.results[HOST]["nodes"]
    assert sorted(n["node"] for n in nodes) == sorted(cluster.node_names), nodes
    assert all(n["status"] == "succeeded" for n in nodes), nodes


@contextlib.contextmanager
def waiting_play(cluster: Cluster, collections_path: Path, workdir: Path, kubeconfig: Path, px: ApiProxy,
                 name: str, image: str, node: str, **start: Any) -> Iterator[RunningPlaybook]:
    """A play (through the proxy) whose rollout is waiting when the block starts: every blob request of ``image``
    on ``node`` waits at the node's registry fault proxy until the block ends, whatever the agent's timeouts, and
    the rollout's pods watch has reached the proxy. The image gets new content first: no node has its blobs yet
    (containerd keeps those of a removed image until its next GC)."""
    for each in cluster.node_names:
        cluster.remove_image(each, image)
    repository, tag = image.split("/", 1)[1].split(":", 1)
    push_test_image(cluster.info["registry"]["upstream"], repository, tag, size_mib=0.5, layers=1,
                    seed=f"{repository}-{uuid.uuid4()}")
    rule = cluster.proxy(node, "POST", "rules", {"path": f"/{repository}/blobs/", "action": "hold"})[0]
    try:
        values = role_vars(cluster, name, [image], images_kubeconfig=str(kubeconfig), images_overall_timeout="300s")
        running = start_playbook(workdir, collections_path, {HOST: values}, **start)
        wait_for(lambda: pull_held(cluster, node, image) and rollout_watching(px, name), "the rollout waiting")
        yield running
    finally:
        cluster.proxy(node, "DELETE", f"rules/{rule['id']}")
        cluster.proxy(node, "POST", "release")


def wait_for(check: Any, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.3)


def pull_held(cluster: Cluster, node: str, image: str) -> bool:
    repository = image.split("/", 1)[1].split(":", 1)[0]
    return any(r.get("action") == "hold" and f"/{repository}/blobs/" in str(r.get("path"))
               for r in cluster.proxy_requests(node))


def rollout_watching(px: ApiProxy, name: str) -> bool:
    return any(r.watch and r.path == f"/api/v1/namespaces/{name}/pods" for r in px.requests)


# ---- apply --------------------------------------------------------------------------------------------------
def test_apply_waits_out_429_with_retry_after(cluster: Cluster, collections_path: Path, workdir: Path,
                                              px: ApiProxy, kubeconfig: Path, images: dict[str, str]) -> None:
    name, retry_after = fresh(cluster, "e2e-fault-throttle"), 2
    px.add_rule(ApiRule(method="PATCH", path=rf"/namespaces/{name}/configmaps/{name}$", query=NO_DRY_RUN,
                        status=429, headers={"Retry-After": str(retry_after)}, times=2))
    seq = cluster.request_seq()
    result, seconds = play(cluster, collections_path, workdir, kubeconfig, name, images["throttle"])
    print(f"fault apply-429: play ended in {seconds:.1f}s, rc {result.rc}")
    assert result.rc == 0, result.stdout[-6000:]
    assert_clean(result)
    writes = requests_to(px, "PATCH", rf"/configmaps/{name}$", NO_DRY_RUN)
    assert [r.status for r in writes[:2]] == [429, 429] and len(writes) == 3 and writes[2].status in (200, 201)
    assert_spaced(writes, retry_after)
    # The throttled attempts never reached the server: one write of the ConfigMap.
    assert [w["verb"] for w in cluster.writes_since(seq) if w["resource"] == "configmaps"] == ["patch"]
    succeeded_everywhere(result, cluster)


def test_apply_500_reports_what_was_written_and_a_rerun_repairs(cluster: Cluster, collections_path: Path,
                                                                workdir: Path, px: ApiProxy, kubeconfig: Path,
                                                                images: dict[str, str]) -> None:
    name = fresh(cluster, "e2e-fault-error")
    target = f"DaemonSet {name}/{name}"
    px.add_rule(ApiRule(method="PATCH", path=rf"/namespaces/{name}/daemonsets/{name}$", query=NO_DRY_RUN,
                        status=500))
    failed, seconds = play(cluster, collections_path, workdir / "1", kubeconfig, name, images["error"])
    print(f"fault apply-500: play ended in {seconds:.1f}s, rc {failed.rc}")
    assert failed.rc != 0
    assert_clean(failed)
    failure = module_failure(failed, "Apply the objects")
    message = failure["msg"]
    assert message.startswith(f"cannot apply {target}: HTTP 500 Internal Server Error: the API fault proxy "
                              "answered 500 (gave up after 4 attempts in "), message
    assert f"written: Namespace {name} (created), ServiceAccount {name}/{name} (created), " in message
    assert f"; not written: {target} (to be created, maybe created all the same: the request may have reached " \
           "the server); run the task again to finish" in message
    assert [(o["kind"], o["action"]) for o in failure["objects"]] == [
        ("Namespace", "created"), ("ServiceAccount", "created"), ("ClusterRole", "created"),
        ("ClusterRoleBinding", "created"), ("Role", "created"), ("RoleBinding", "created"), ("ConfigMap", "created"),
        ("NetworkPolicy", "created")]
    assert [(o["kind"], o["action"], o["maybe_done"]) for o in failure["not_written"]] == [
        ("DaemonSet", "created", True)]
    writes = requests_to(px, "PATCH", rf"/daemonsets/{name}$", NO_DRY_RUN)
    assert [r.status for r in writes] == [500] * 4  # SERVER_ERROR_ATTEMPTS: apply is idempotent
    assert_spaced(writes, 0.5)
    assert seconds < APPLY_WAIT_TIMEOUT_S + STATED_BOUND_S + PLAY_ALLOWANCE_S
    assert cluster.get("DaemonSet", name, name) is None and cluster.get("ConfigMap", name, name) is not None

    px.clear_rules()
    seq = cluster.request_seq()
    again, _ = play(cluster, collections_path, workdir / "2", kubeconfig, name, images["error"])
    assert again.rc == 0, again.stdout[-6000:]
    assert {w["resource"] for w in cluster.writes_since(seq)} == {"daemonsets"}, cluster.writes_since(seq)
    succeeded_everywhere(again, cluster)


@pytest.mark.parametrize("fault", ["503", "503-retry-after", "reset-after"])
def test_a_prune_delete_is_sent_again_only_when_safe(cluster: Cluster, collections_path: Path, workdir: Path,
                                                    px: ApiProxy, kubeconfig: Path, images: dict[str, str],
                                                    fault: str) -> None:
    """Turning metrics off prunes the aggregator's Deployment, Service and NetworkPolicy; the Service's DELETE
    meets the fault. 503 with Retry-After: sent again after it. 503 without: not sent again (the server may have
    acted). A reset after the server answered: the delete was done, the client cannot know, not sent again."""
    name = fresh(cluster, f"e2e-fault-prune-{fault}")
    service = f"{name}-metrics"
    assert play(cluster, collections_path, workdir / "setup", None, name, images["prune"],
                images_collect_metrics=True)[0].rc == 0
    rule = ApiRule(method="DELETE", path=rf"/namespaces/{name}/services/{service}$", status=503,
                   times=2 if fault == "503-retry-after" else None,
                   headers={"Retry-After": "1"} if fault == "503-retry-after" else {},
                   action="reset_after" if fault == "reset-after" else "status")
    px.add_rule(rule)
    result, seconds = play(cluster, collections_path, workdir / "1", kubeconfig, name, images["prune"],
                           images_collect_metrics=False)
    print(f"fault prune-{fault}: play ended in {seconds:.1f}s, rc {result.rc}")
    assert_clean(result)
    deletes = requests_to(px, "DELETE", rf"/services/{service}$")
    if fault == "503-retry-after":
        assert result.rc == 0, result.stdout[-6000:]
        assert [r.status for r in deletes] == [503, 503, 200]
        assert_spaced(deletes, 1)
        assert cluster.get("Service", service, name) is None
        return
    assert result.rc != 0
    assert len(deletes) == 1, deletes
    failure = module_failure(result, "Apply the objects")
    message = failure["msg"]
    if fault == "503":
        assert message.startswith(f"cannot delete Service {name}/{service}: HTTP 503 Service Unavailable: the API "
                                  "fault proxy answered 503 (not retried: a delete is sent again only when the "
                                  "server says it did not act on it (429, or 503 with Retry-After))"), message
        assert cluster.get("Service", service, name) is not None
    else:
        assert message.startswith(f"cannot delete Service {name}/{service}: the connection to the Kubernetes API "
                                  f"server at {px.url} broke before the answer: the connection was closed without "
                                  "an answer (not retried: the connection broke after the delete was sent, so it "
                                  "may have been done)"), message
        assert deletes[0].upstream and cluster.get("Service", service, name) is None  # it was done
    assert f"written: DaemonSet {name}/{name} (updated), Deployment {name}/{service} (deleted); not written: " \
           f"Service {name}/{service} (to be deleted, maybe deleted all the same: the request may have reached the " \
           f"server), NetworkPolicy {name}/{service} (to be deleted); run the task again" in message
    assert [(o["kind"], o["maybe_done"]) for o in failure["not_written"]] == [("Service", True),
                                                                             ("NetworkPolicy", False)]
    px.clear_rules()
    seq = cluster.request_seq()
    again, _ = play(cluster, collections_path, workdir / "2", kubeconfig, name, images["prune"],
                    images_collect_metrics=False)
    assert again.rc == 0, again.stdout[-6000:]
    repaired = sorted((w["verb"], w["resource"]) for w in cluster.writes_since(seq))
    expected = [("delete", "networkpolicies")] + ([("delete", "services")] if fault == "503" else [])
    assert repaired == expected, repaired
    assert cluster.get("Service", service, name) is None and cluster.get("NetworkPolicy", service, name) is None


def test_apply_after_a_connection_reset_is_sent_again(cluster: Cluster, collections_path: Path, workdir: Path,
                                                     px: ApiProxy, kubeconfig: Path, images: dict[str, str]) -> None:
    """The DaemonSet's write reaches the server, its answer is lost (reset): server-side apply is idempotent, so it
    is sent again and the second answer comes back."""
    name = fresh(cluster, "e2e-fault-reset")
    px.add_rule(ApiRule(method="PATCH", path=rf"/namespaces/{name}/daemonsets/{name}$", query=NO_DRY_RUN,
                        action="reset_after", times=1))
    seq = cluster.request_seq()
    result, seconds = play(cluster, collections_path, workdir, kubeconfig, name, images["reset"])
    print(f"fault apply-reset: play ended in {seconds:.1f}s, rc {result.rc}")
    assert result.rc == 0, result.stdout[-6000:]
    assert_clean(result)
    writes = requests_to(px, "PATCH", rf"/daemonsets/{name}$", NO_DRY_RUN)
    assert [(r.action, r.upstream, r.status) for r in writes] == [("reset_after", True, None), ("pass", True, 200)]
    assert [w["verb"] for w in cluster.writes_since(seq) if w["resource"] == "daemonsets"] == ["patch", "patch"]
    succeeded_everywhere(result, cluster)


# ---- rollout ------------------------------------------------------------------------------------------------
def node_pod(cluster: Cluster, name: str, node: str) -> str:
    pods = [p for p in cluster.pods(name, f"app={name}") if p["spec"].get("nodeName") == node]
    assert len(pods) == 1, pods
    return str(pods[0]["metadata"]["name"])


def poke(cluster: Cluster, name: str, pod: str, count: int) -> None:
    """One MODIFIED event of ``pod`` on every watch of the instance's pods (an annotation changes)."""
    cluster.kubectl("-n", name, "annotate", "pod", pod, f"e2e-poke={count}", "--overwrite")


def pod_requests(px: ApiProxy, name: str) -> list[ApiRequest]:
    return requests_to(px, "GET", f"^/api/v1/namespaces/{name}/pods$")


def watch_version(request: ApiRequest) -> int:
    found = re.search(r"resourceVersion=(\d+)", request.query)
    assert found, request.query
    return int(found.group(1))


def test_watch_closed_mid_stream_is_resumed(cluster: Cluster, collections_path: Path, workdir: Path, px: ApiProxy,
                                            kubeconfig: Path, images: dict[str, str]) -> None:
    """Each pods watch is cut after one event, three times: each time the wait watches again from that event's
    resourceVersion, without listing again, and sees the events that follow."""
    name, image, node = fresh(cluster, "e2e-fault-close"), images["close"], cluster.node_names[-1]
    rule = px.add_rule(ApiRule(method="GET", path=f"^/api/v1/namespaces/{name}/pods$", action="close_watch",
                               after_events=1, times=3))
    with waiting_play(cluster, collections_path, workdir, kubeconfig, px, name, image, node) as running:
        pod = node_pod(cluster, name, node)
        for count in range(1, 4):
            poke(cluster, name, pod, count)
            wait_for(lambda count=count: len([r for r in pod_requests(px, name) if r.watch]) > count,
                     "a resumed watch", 60)
    result = running.finish(timeout_s=ROLLOUT_TIMEOUT_S + 60)
    assert result.rc == 0, result.stdout[-6000:]
    assert_clean(result)
    succeeded_everywhere(result, cluster)
    assert px.rule(rule.id).hits == 3
    requests = pod_requests(px, name)
    assert [r.watch for r in requests].count(False) == 1, "a cut watch was followed by a list"
    watches = [r for r in requests if r.watch]
    assert [r.action for r in watches[:4]] == ["close_watch"] * 3 + ["pass"]
    assert all(r.events == 1 for r in watches[:3])
    versions = [watch_version(r) for r in watches[:4]]
    assert versions == sorted(set(versions)), versions  # each from the cut one's event, later than the last


def test_410_on_resume_lists_again(cluster: Cluster, collections_path: Path, workdir: Path, px: ApiProxy,
                                   kubeconfig: Path, images: dict[str, str]) -> None:
    """A pods watch is cut; the watch that resumes it gets 410 Gone (an ERROR event, as the API server sends it
    for a resourceVersion it no longer has): the wait lists the pods again and watches from the new list."""
    name, image, node = fresh(cluster, "e2e-fault-gone"), images["gone"], cluster.node_names[-1]
    pods = f"^/api/v1/namespaces/{name}/pods$"
    px.add_rule(ApiRule(method="GET", path=pods, action="close_watch", after_events=1, times=1))
    gone = px.add_rule(ApiRule(method="GET", path=pods, action="watch_gone", after_events=0, times=1))
    with waiting_play(cluster, collections_path, workdir, kubeconfig, px, name, image, node) as running:
        poke(cluster, name, node_pod(cluster, name, node), 1)
        wait_for(lambda: px.rule(gone.id).hits == 1 and len(pod_requests(px, name)) >= 5, "the list after 410", 60)
    result = running.finish(timeout_s=ROLLOUT_TIMEOUT_S + 60)
    assert result.rc == 0, result.stdout[-6000:]
    assert_clean(result)
    succeeded_everywhere(result, cluster)
    sequence = [("watch" if r.watch else "list", r.action) for r in pod_requests(px, name)]
    assert sequence[:5] == [("list", "pass"), ("watch", "close_watch"), ("watch", "watch_gone"), ("list", "pass"),
                            ("watch", "pass")], sequence


@pytest.mark.parametrize("storm", ["passing", "endless"])
def test_429_storm_during_the_wait(cluster: Cluster, collections_path: Path, workdir: Path, px: ApiProxy,
                                   kubeconfig: Path, images: dict[str, str], storm: str) -> None:
    """Every list and watch of the rollout is throttled (Retry-After 1 s): twelve times, then it passes; or for
    good, until the rollout's timeout."""
    name = fresh(cluster, f"e2e-fault-storm-{storm}")
    retry_after, timeout = 1, 40
    # The rollout's lists and watches; not apply's lists, which look for the instance's objects by its labels.
    px.add_rule(ApiRule(method="GET", path=rf"/namespaces/{name}/(pods|daemonsets)$", query=r"^(?!.*app\.kubernetes)",
                        status=429, headers={"Retry-After": str(retry_after)},
                        times=12 if storm == "passing" else None))
    result, seconds = play(cluster, collections_path, workdir, kubeconfig, name,
                           images["endless" if storm == "endless" else "storm"], images_timeout=timeout)
    print(f"fault storm-{storm}: play ended in {seconds:.1f}s (rollout timeout {timeout}s), rc {result.rc}")
    assert_clean(result)
    throttled = {resource: [r for r in requests_to(px, "GET", rf"/namespaces/{name}/{resource}$") if r.status == 429]
                 for resource in ("pods", "daemonsets")}
    # Both ways of waiting list the pods: the watches (DaemonSet, pods, Nodes) and, when the agents finished before
    # the wait began, the fast path (pods and Nodes only, no DaemonSet list), so only the pods are always throttled.
    assert throttled["pods"]
    for requests in throttled.values():
        assert_spaced(requests, retry_after)
    if storm == "passing":
        assert result.rc == 0, result.stdout[-6000:]
        succeeded_everywhere(result, cluster)
        return
    assert result.rc != 0
    message = module_failure(result, "Wait until every node")["msg"]
    assert message.startswith(f"while waiting for DaemonSet {name}/{name}: cannot "), message
    assert f"in namespace {name}: HTTP 429 Too Many Requests: the API fault proxy answered 429 (gave up after " \
           in message
    assert "would come after the task's timeout" in message
    assert timeout - retry_after <= seconds < timeout + REPORT_REQUESTS_BOUND_S + PLAY_ALLOWANCE_S


def test_token_revoked_mid_run(cluster: Cluster, collections_path: Path, workdir: Path, px: ApiProxy,
                               kubeconfig: Path, images: dict[str, str]) -> None:
    """The proxy answers 401 from some moment on: the next request of the wait fails it at once, naming the
    DaemonSet, the request and the 401; the open watches end with their slice (30 s) at the latest."""
    name, image, node = fresh(cluster, "e2e-fault-revoked"), images["revoked"], cluster.node_names[-1]
    watch_slice = 30
    with waiting_play(cluster, collections_path, workdir, kubeconfig, px, name, image, node) as running:
        px.revoke()
        revoked, revoked_wall = time.monotonic(), time.time()
        result = running.finish(timeout_s=ROLLOUT_TIMEOUT_S + 60)
        seconds = time.monotonic() - revoked
    print(f"fault revoked: play ended {seconds:.1f}s after the revocation, rc {result.rc}")
    assert result.rc != 0
    assert_clean(result)
    message = module_failure(result, "Wait until every node")["msg"]
    assert re.match(rf"while waiting for DaemonSet {name}/{name}: the API server at {re.escape(px.url)} rejected "
                    r"the credentials \(401 Unauthorized\) when trying to (list|watch) ", message), message
    assert seconds < watch_slice + STATED_BOUND_S + PLAY_ALLOWANCE_S
    after = [r for r in px.requests if r.started >= revoked_wall]
    assert after and {r.status for r in after} == {401}, [(r.path, r.status) for r in after]


def module_processes(marker: str) -> list[str]:
    done = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


@pytest.mark.parametrize("core", ["2.19", "2.16"])
def test_sigint_to_ansible_playbook_during_the_wait(cluster: Cluster, collections_path: Path, workdir: Path,
                                                    px: ApiProxy, kubeconfig: Path, images: dict[str, str],
                                                    core: str) -> None:
    """SIGINT to ansible-playbook alone (not its process group): ansible-core 2.19 passes it on to the module,
    2.16 exits and leaves the module orphaned, which then notices that nobody reads its result. Either way
    ansible-playbook ends at once, and the module's process and its requests end within a second or two."""
    venv_bin = VENV_BIN if core == "2.19" else VENV_BIN.parent.parent / ".venv-ansible216" / "bin"
    # scripts/bootstrap.sh makes both environments: a missing one is a broken setup, not a reason to skip.
    assert (venv_bin / "ansible-playbook").exists(), f"no ansible-core {core} environment at {venv_bin}: run make setup"
    name, image, node = fresh(cluster, f"e2e-fault-sigint-{core.replace('.', '')}"), images["sigint"], \
        cluster.node_names[-1]
    remote_tmp = workdir / "remote-tmp"
    with waiting_play(cluster, collections_path, workdir, kubeconfig, px, name, image, node, bin_dir=venv_bin,
                      env={"ANSIBLE_REMOTE_TMP": str(remote_tmp)}) as running:
        assert module_processes(str(remote_tmp)), "the rollout module is not running"
        os.kill(running.proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        result = running.finish(timeout_s=30)
        ended = time.monotonic() - interrupted
        wait_for(lambda: not module_processes(str(remote_tmp)), "the module process gone", timeout_s=10)
        gone = time.monotonic() - interrupted
        count = len(px.requests)
        time.sleep(3)
        later = px.requests[count:]
    print(f"fault sigint-{core}: ansible-playbook ended {ended:.1f}s after SIGINT, the module {gone:.1f}s, "
          f"rc {result.rc}")
    assert result.rc != 0
    assert "User interrupted execution" in result.stdout, result.stdout[-4000:]
    assert "Traceback" not in result.stdout
    assert ended < 10 and gone < 10, (ended, gone)
    assert [r for r in later if f"/namespaces/{name}/" in r.path] == []


# ---- the API server restarts ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def restartable(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Cluster]]:
    """A cluster of its own (its kube-apiserver is restarted), sharing the session cluster's registry."""
    upstream = cluster.info["registry"]["upstream"]
    with KubeCluster(tmp_path_factory.mktemp("restart"), nodes=2, registry_upstream=upstream, name="rst") as kube:
        push_all(upstream)
        yield kube, Cluster(kube.dir)


def test_api_server_restarted_mid_rollout(restartable: tuple[KubeCluster, Cluster], collections_path: Path,
                                          workdir: Path, images: dict[str, str]) -> None:
    """kube-apiserver goes away (SIGTERM) while the rollout watches and comes back: the watches break, the
    requests in between are refused or cut, and are retried until it answers again; the rollout then finishes."""
    kube, small = restartable
    name, image, node = fresh(small, "e2e-fault-restart"), images["restart"], small.node_names[-1]
    with api_proxy(small, workdir / "proxy") as px:
        config = proxy_kubeconfig(small, px, workdir / "kubeconfig")
        with waiting_play(small, collections_path, workdir / "play", config, px, name, image, node) as running:
            restarted_at = time.time()
            down_s = kube.restart_apiserver(down_s=3)
        result = running.finish(timeout_s=ROLLOUT_TIMEOUT_S + 60)
        requests = px.requests
    assert result.rc == 0, result.stdout[-6000:]
    assert_clean(result)
    succeeded_everywhere(result, small)
    during = [r for r in requests if restarted_at <= r.started <= restarted_at + down_s]
    print(f"fault restart: kube-apiserver gone {down_s:.1f}s; requests meanwhile:",
          sorted({f"{r.method} {r.path.rsplit('/', 1)[-1]}: {r.error or r.status}" for r in during}))
    failed = [r.started for r in during if r.error]
    assert failed, [(r.path, r.error) for r in requests[-30:]]
    # The wait watched again once the server was back (it may be back before the harness saw it ready).
    assert any(r.watch and r.status == 200 and r.started > min(failed) for r in requests), "no watch after the restart"
