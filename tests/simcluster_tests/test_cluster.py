"""SimCluster end to end without Ansible: controllers, kubelets, real pulls, the real agent, status as Kubernetes does.

One 3-node cluster for the module (node 1 is a tainted control-plane node); each test uses its own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
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




def test_deployment_runs_the_aggregator_behind_a_service(sim: SimCluster, api: ApiClient) -> None:
    ns = namespace(api, "t-deploy")
    grpc_port, http_port = free_port(), free_port()
    container = {"name": "aggregator", "image": sim.info["agent_image"]["ref"],
                 "args": ["aggregate-metrics", f"--grpc-port={grpc_port}", f"--http-port={http_port}"],
                 "ports": [{"containerPort": grpc_port, "name": "grpc"}, {"containerPort": http_port, "name": "http"}],
                 "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}
    api.create("Deployment", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m", "namespace": ns},
                              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "m"}},
                                       "template": {"metadata": {"labels": {"app": "m"}},
                                                    "spec": {"containers": [container]}}}}, ns)
    api.create("Service", {"metadata": {"name": "m", "namespace": ns}, "spec": {
        "selector": {"app": "m"}, "ports": [{"name": "http", "port": http_port, "targetPort": http_port}]}}, ns)

    def available() -> Optional[Obj]:
        status: Obj = api.get("Deployment", "m", ns).get("status") or {}
        return status if status.get("availableReplicas") == 1 else None

    status = wait_for(available, what="an available aggregator")
    assert status["observedGeneration"] == 1 and status["readyReplicas"] == 1 and status["updatedReplicas"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    (pod,) = pods(api, ns)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert pod["metadata"]["labels"]["pod-template-hash"]
    metrics = api.request("GET", f"/api/v1/namespaces/{ns}/services/m:http/proxy/metrics")
    assert metrics == [], metrics  # nothing submitted yet: an empty JSON list, through the API server's proxy
    api.delete("Deployment", "m", ns)
    wait_for(lambda: pods(api, ns) == [], what="aggregator pod gone")


def test_cluster_runner_command_writes_its_files_and_stops_on_sigterm(tmp_path: Path) -> None:
    directory = tmp_path / "up"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "simcluster", "up", "--dir", str(directory), "--nodes", "1",
                             "--name", "solo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    daemons: dict[int, str] = {}
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        info = json.loads((directory / "cluster.json").read_text())
        assert [n["name"] for n in info["nodes"]] == ["solo-node-1"]
        assert info["registry"]["own"] is True and info["agent_image"]["version"] == "sim"
        assert (directory / "kubeconfig").exists() and (directory / "kubeconfig-viewer").exists()
        assert Path(info["nodes"][0]["host_root"], "run/crio/crio.sock").is_socket()
        daemons = _children(proc.pid)
        assert any("containerd" in c for c in daemons.values()) and any("registry" in c for c in daemons.values())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in daemons)


def _children(parent: int) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True,
                         check=False).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_agent_reaches_containerd_after_a_restart(sim: SimCluster, api: ApiClient) -> None:
    node = sim.nodes[2]
    assert node.containerd is not None
    node.containerd.restart()  # a new socket inode: the host root's links must follow it
    ns = namespace(api, "t-restart")
    api.create("ConfigMap", {"metadata": {"name": "pf", "namespace": ns}, "data": {"images.txt": IMAGE + "\n"}}, ns)
    ds = daemonset(sim, ns, FETCH)
    ds["spec"]["template"]["spec"].update(
        nodeSelector={"kubernetes.io/hostname": node.name},
        volumes=[{"name": "cri", "hostPath": {"path": "/var/run/containerd"}},
                 {"name": "list", "configMap": {"name": "pf"}}])
    api.create("DaemonSet", ds, ns)
    wait_for(lambda: ds_status(api, ns).get("numberAvailable") == 1, what="1 available")
    (pod,) = pods(api, ns)
    summary = json.loads(pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["message"])
    assert summary["node"] == node.name and summary["failed"] == 0, summary
