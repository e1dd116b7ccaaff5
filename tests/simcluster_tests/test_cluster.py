"""SimCluster end to end without Ansible: controllers, kubelets, real pulls, the real agent, status as Kubernetes does.

One 3-node cluster for the module (node 1 is a tainted control-plane node); each test uses its own namespace.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

from infra.images import push_test_image
from simcluster.client import ApiClient, ApiError
from simcluster.cluster import SimCluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containerd and mount namespaces need root")
Obj = dict[str, Any]
IMAGE = "registry.test:5000/simtest/app:v1"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    with SimCluster(tmp_path_factory.mktemp("sim"), nodes=3, name="t") as cluster:
        push_test_image(cluster.info["registry"]["upstream"], "simtest/app", "v1", size_mib=0.5, layers=1,
                        seed="simtest")
        yield cluster


@pytest.fixture()
def api(sim: SimCluster) -> ApiClient:
    assert sim.client is not None
    return sim.client


def wait_for(check: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def namespace(api: ApiClient, name: str, labels: Optional[dict[str, str]] = None) -> str:
    api.create("Namespace", {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": name, "labels": labels or {}}})
    return name


def daemonset(sim: SimCluster, ns: str, init: Optional[Obj] = None, tolerate: bool = True,
              image: Optional[str] = None, name: str = "pf") -> Obj:
    agent = image or sim.info["agent_image"]["ref"]
    spec: Obj = {"containers": [{"name": "sleep", "image": agent, "args": ["sleep"]}]}
    if init is not None:
        spec["initContainers"] = [{"image": agent, **init}]
    if tolerate:
        spec["tolerations"] = [{"operator": "Exists"}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def ds_status(api: ApiClient, ns: str, name: str = "pf") -> Obj:
    status: Obj = api.get("DaemonSet", name, ns).get("status") or {}
    return status


def pods(api: ApiClient, ns: str) -> list[Obj]:
    return list(api.list("Pod", ns)["items"])


def events(api: ApiClient, ns: str, reason: str) -> list[Obj]:
    return [e for e in api.list("Event", ns)["items"] if e.get("reason") == reason]


FETCH = {"name": "prefetch", "args": ["fetch", "--image-list-file=/tmp/list/images.txt",
                                      "--cri-socket=/tmp/cri/containerd.sock", "--initial-pull-attempt-timeout=3s",
                                      "--overall-timeout=30s"],
         "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                 {"name": "INSTANCE_NAME", "value": "pf"}],
         "volumeMounts": [{"name": "cri", "mountPath": "/tmp/cri", "readOnly": True},
                          {"name": "list", "mountPath": "/tmp/list", "readOnly": True}]}


def test_agent_runs_on_every_node_and_status_is_complete(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-agent")
    api.create("ConfigMap", {"metadata": {"name": "pf", "namespace": ns}, "data": {"images.txt": IMAGE + "\n"}}, ns)
    ds = daemonset(sim, ns, FETCH)
    ds["spec"]["template"]["spec"]["volumes"] = [{"name": "cri", "hostPath": {"path": "/var/run/containerd"}},
                                                 {"name": "list", "configMap": {"name": "pf"}}]
    api.create("DaemonSet", ds, ns)
    wait_for(lambda: ds_status(api, ns).get("numberAvailable") == 3, what="3 available")
    status = ds_status(api, ns)
    assert status["desiredNumberScheduled"] == status["currentNumberScheduled"] == 3
    assert status["updatedNumberScheduled"] == 3 and status.get("numberUnavailable", 0) == 0
    assert status["observedGeneration"] == api.get("DaemonSet", "pf", ns)["metadata"]["generation"]
    for pod in pods(api, ns):
        init = pod["status"]["initContainerStatuses"][0]
        summary = json.loads(init["state"]["terminated"]["message"])
        assert summary["node"] == pod["spec"]["nodeName"] and summary["ok"] == 1, summary
        assert init["imageID"].startswith("registry.test:5000/stackrox/prefetch-agent@sha256:")
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    for node in sim.nodes:
        assert node.containerd is not None and node.containerd.image_present(IMAGE)
    assert len(events(api, ns, "SuccessfulCreate")) == 3


def test_taint_without_toleration_leaves_the_control_plane_node_out(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-taint")
    api.create("DaemonSet", daemonset(sim, ns, tolerate=False), ns)
    wait_for(lambda: ds_status(api, ns).get("numberAvailable") == 2, what="2 available")
    assert ds_status(api, ns)["desiredNumberScheduled"] == 2
    assert sorted(p["spec"]["nodeName"] for p in pods(api, ns)) == ["t-node-2", "t-node-3"]


def test_missing_agent_image_shows_the_real_pull_failure(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-pullfail")
    api.create("DaemonSet", daemonset(sim, ns, {"name": "prefetch", "args": ["fetch"]},
                                      image="registry.test:5000/stackrox/prefetch-agent:does-not-exist"), ns)

    def waiting() -> Optional[Obj]:
        for pod in pods(api, ns):
            state = (pod.get("status", {}).get("initContainerStatuses") or [{}])[0].get("state", {})
            if state.get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return dict(state["waiting"])
        return None

    state = wait_for(waiting, what="ErrImagePull")
    assert "not found" in state["message"] and "rpc error: code = NotFound" in state["message"], state
    assert ds_status(api, ns).get("numberReady", 0) == 0


def test_pod_security_rejection_is_a_failed_create_event(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-psa", {"pod-security.kubernetes.io/enforce": "restricted"})
    ds = daemonset(sim, ns)
    ds["spec"]["template"]["spec"]["volumes"] = [{"name": "cri", "hostPath": {"path": "/var/run/containerd"}}]
    api.create("DaemonSet", ds, ns)
    failed = wait_for(lambda: events(api, ns, "FailedCreate"), what="FailedCreate")
    assert failed[0]["message"].startswith("Error creating: ")
    assert "PodSecurity" in failed[0]["message"] and "restricted" in failed[0]["message"], failed[0]
    assert pods(api, ns) == []


def test_container_sees_env_volumes_hosts_and_token(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-env")
    api.create("ServiceAccount", {"metadata": {"name": "pf", "namespace": ns}}, ns)
    api.create("Service", {"metadata": {"name": "pf-metrics", "namespace": ns},
                           "spec": {"ports": [{"name": "http", "port": 8080}], "selector": {"app": "x"}}}, ns)
    script = ('printf "%s|%s|%s|%s|%s" "$NODE_NAME" "$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)" '
              '"$(grep -c pf-metrics.t-env.svc.cluster.local /etc/hosts)" "$KUBERNETES_SERVICE_HOST" '
              '"$(test -S /tmp/cri/crio.sock && echo socket)" > /dev/termination-log')
    ds = daemonset(sim, ns, {"name": "probe", "command": ["/bin/sh", "-c", script],
                             "env": FETCH["env"],
                             "volumeMounts": [{"name": "cri", "mountPath": "/tmp/cri", "readOnly": True}]})
    ds["spec"]["template"]["spec"].update(serviceAccountName="pf", volumes=[
        {"name": "cri", "hostPath": {"path": "/var/run/crio"}}])
    api.create("DaemonSet", ds, ns)
    wait_for(lambda: ds_status(api, ns).get("numberAvailable") == 3, what="3 available")
    for pod in pods(api, ns):
        message = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["message"]
        assert message == f"{pod['spec']['nodeName']}|t-env|1|127.0.0.1|socket", message


def test_failing_init_container_crash_loops_with_last_state(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-crash")
    crash = ["/bin/sh", "-c", "echo boom > /dev/termination-log; exit 3"]
    api.create("DaemonSet", daemonset(sim, ns, {"name": "prefetch", "command": crash}), ns)

    def crashed() -> Optional[Obj]:
        for pod in pods(api, ns):
            status = (pod.get("status", {}).get("initContainerStatuses") or [{}])[0]
            if status.get("restartCount", 0) >= 1 and "waiting" in status.get("state", {}):
                return dict(status)
        return None

    status = wait_for(crashed, what="CrashLoopBackOff")
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["lastState"]["terminated"]["message"] == "boom\n"


def test_template_change_rolls_pods_and_deletion_is_graceful(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-roll")
    api.create("DaemonSet", daemonset(sim, ns), ns)
    wait_for(lambda: ds_status(api, ns).get("numberAvailable") == 3, what="3 available")
    before = {p["metadata"]["uid"] for p in pods(api, ns)}
    api.merge_patch("DaemonSet", "pf", {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}, ns)

    def rolled() -> bool:
        status = ds_status(api, ns)
        current = pods(api, ns)
        return (status.get("observedGeneration") == 2 and status.get("updatedNumberScheduled") == 3
                and status.get("numberAvailable") == 3 and len(current) == 3
                and not {p["metadata"]["uid"] for p in current} & before)

    wait_for(rolled, timeout_s=90, what="rolled pods")
    labels = {p["metadata"]["labels"]["pod-template-generation"] for p in pods(api, ns)}
    assert labels == {"2"}
    api.delete("DaemonSet", "pf", ns)
    wait_for(lambda: pods(api, ns) == [], timeout_s=60, what="pods garbage-collected")


def test_api_errors_surface(api: ApiClient) -> None:
    with pytest.raises(ApiError) as info:
        api.get("DaemonSet", "nope", "default")
    assert info.value.status == 404


