"""Watches, garbage collection, graceful pod deletion, namespace termination, Pod Security admission, the
service proxy and kubectl against the simulated API server."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from simcluster.apiserver import ApiServer
from simcluster.apiserver.testing import call


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # A small watch window so the 410 path can be reached with a handful of writes.
    server = ApiServer(tmp_path_factory.mktemp("apiserver"), watch_window=20, bookmark_interval_s=0.3).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kubeconfig(srv: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return srv.write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig")


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield c
    finally:
        c.close()


_counter = iter(range(1, 10_000))


@pytest.fixture()
def ns(srv: ApiServer) -> str:
    name = f"l{next(_counter)}"
    assert call(srv, "POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def kubectl(kubeconfig: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ds(name: str, ns: str, volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "img:v1"}]}
    if volumes:
        spec["volumes"] = volumes
        spec["containers"][0]["volumeMounts"] = [{"name": v["name"], "mountPath": f"/m/{v['name']}"}
                                                 for v in volumes]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def pod(name: str, node: str = "", owner: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
        port: int = 0, grace: int | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "image": "i:1"}
    if port:
        c["ports"] = [{"name": "http", "containerPort": port}]
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}}, "spec": {"containers": [c]}}
    if node:
        body["spec"]["nodeName"] = node
    if grace is not None:
        body["spec"]["terminationGracePeriodSeconds"] = grace
    if owner:
        body["metadata"]["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                                "controller": True, "blockOwnerDeletion": True}]
    return body


# --- watch ---------------------------------------------------------------------------------------

def test_watch_resume_and_selector_transitions(api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    start_rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def run() -> None:
        for ev in w.stream(v1.list_namespaced_config_map, ns, label_selector="team=a", resource_version=start_rv,
                           timeout_seconds=10):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) >= 4:
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    try:
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "x", "labels": {"team": "a"}}})
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "other", "labels": {"team": "b"}}})
        v1.patch_namespaced_config_map("x", ns, {"data": {"k": "v"}})
        v1.patch_namespaced_config_map("x", ns, {"metadata": {"labels": {"team": "b"}}})  # leaves the selector
        v1.patch_namespaced_config_map("other", ns, {"metadata": {"labels": {"team": "a"}}})  # enters it
    finally:
        t.join(timeout=20)
    assert events == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x"), ("ADDED", "other")]


def test_watch_without_resource_version_lists_first(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    v1.create_namespaced_secret(ns, {"metadata": {"name": "s1"}})
    got = [(e["type"], e["object"].metadata.name)
           for e in watch.Watch().stream(v1.list_namespaced_secret, ns, timeout_seconds=1)]
    assert got == [("ADDED", "s1")]


def test_watch_too_old_resource_version_is_410(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    old_rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    for i in range(50):  # push the window (20 events, trimmed at 40) past old_rv
        v1.create_namespaced_config_map(ns, {"metadata": {"name": f"f{i}"}})
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=old_rv,
                                      timeout_seconds=2):
            pass
    assert e.value.status == 410
    # the raw stream: HTTP 200, then one ERROR event carrying an Expired Status
    r = call(srv, "GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={old_rv}")
    assert r.status == 200
    ev = json.loads(r.raw.splitlines()[0])
    assert ev["type"] == "ERROR"
    assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    assert ev["object"]["message"].startswith(f"too old resource version: {old_rv} (")


def test_watch_bookmarks_and_timeout(srv: ApiServer, ns: str) -> None:
    rv = call(srv, "GET", f"/api/v1/namespaces/{ns}/configmaps").json()["metadata"]["resourceVersion"]
    t0 = time.monotonic()
    r = call(srv, "GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}"
                         "&allowWatchBookmarks=true&timeoutSeconds=1")
    assert time.monotonic() - t0 >= 0.9
    evs = [json.loads(line) for line in r.raw.splitlines()]
    assert evs and all(e["type"] == "BOOKMARK" for e in evs)
    assert evs[0]["object"]["kind"] == "ConfigMap" and int(evs[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_stop_ends_open_watches_and_threads(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    s = ApiServer(tmp_path / "w").start()
    result: dict[str, Any] = {}

    def run() -> None:
        result["r"] = call(s, "GET", "/api/v1/namespaces?watch=true", timeout=30)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)  # let the watch open (it is only logged once it ends)
    s.stop()
    t.join(timeout=10)
    assert not t.is_alive()
    assert b'"ADDED"' in result["r"].raw  # got the initial events, then a clean end of stream
    leftover = [x for x in threading.enumerate() if x not in before and x.is_alive()]
    assert not leftover


def test_watch_ends_when_client_disconnects(srv: ApiServer, ns: str) -> None:
    import http.client
    import ssl

    conn = http.client.HTTPSConnection("127.0.0.1", srv.port,
                                       context=ssl.create_default_context(cafile=str(srv.ca_path)))
    path = f"/api/v1/namespaces/{ns}/secrets"
    conn.request("GET", f"{path}?watch=true&timeoutSeconds=600",
                 headers={"Authorization": f"Bearer {srv.admin_token}"})
    assert conn.getresponse().status == 200
    conn.close()
    # the request is logged when its handler finishes: well before the 600 s timeout
    assert wait_for(lambda: any(r.path == path and "watch=true" in r.query for r in srv.requests), 10)


# --- garbage collection and deletion --------------------------------------------------------------------

def test_gc_deletes_pods_of_deleted_daemonset(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    owner = call(srv, "POST", f"/apis/apps/v1/namespaces/{ns}/daemonsets", ds("gc", ns)).json()
    v1: Any = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, pod("gc-unbound", owner=owner))
    v1.create_namespaced_pod(ns, pod("gc-bound", node="n1", owner=owner))
    v1.create_namespaced_pod(ns, pod("bystander"))
    assert call(srv, "DELETE", f"/apis/apps/v1/namespaces/{ns}/daemonsets/gc").json()["status"] == "Success"

    def names() -> set[str]:
        return {p.metadata.name for p in v1.list_namespaced_pod(ns).items}

    assert wait_for(lambda: "gc-unbound" not in names())
    bound = v1.read_namespaced_pod("gc-bound", ns)  # bound: waits for its kubelet
    assert bound.metadata.deletion_timestamp is not None
    assert bound.metadata.deletion_grace_period_seconds == 30
    v1.delete_namespaced_pod("gc-bound", ns, grace_period_seconds=0)  # what the kubelet does when done
    assert names() == {"bystander"}


def test_orphan_and_foreground_propagation(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    dep: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    owner = call(srv, "POST", base, dep).json()
    assert owner["spec"]["replicas"] == 1 and owner["spec"]["strategy"]["type"] == "RollingUpdate"
    v1.create_namespaced_pod(ns, pod("orphan-me", owner=owner))
    call(srv, "DELETE", f"{base}/d1", {"propagationPolicy": "Orphan"})
    time.sleep(0.5)
    kept = v1.read_namespaced_pod("orphan-me", ns)
    assert not kept.metadata.owner_references
    dep["metadata"]["name"] = "d2"
    owner = call(srv, "POST", base, dep).json()
    v1.create_namespaced_pod(ns, pod("fg", owner=owner))
    r = call(srv, "DELETE", f"{base}/d2?propagationPolicy=Foreground")
    assert r.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert wait_for(lambda: call(srv, "GET", f"{base}/d2").status == 404)
    assert call(srv, "GET", f"/api/v1/namespaces/{ns}/pods/fg").status == 404


def test_graceful_pod_deletion(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, pod("g1", node="n1"))
    rv_seen = v1.list_namespaced_pod(ns).metadata.resource_version
    deleted = call(srv, "DELETE", f"/api/v1/namespaces/{ns}/pods/g1", {"gracePeriodSeconds": 45}).json()
    assert deleted["kind"] == "Pod" and deleted["metadata"]["deletionGracePeriodSeconds"] == 45
    # the watch shows a MODIFIED event with deletionTimestamp, then DELETED when the kubelet confirms
    v1.delete_namespaced_pod("g1", ns, grace_period_seconds=0)
    types = [e["type"] for e in watch.Watch().stream(v1.list_namespaced_pod, ns, resource_version=rv_seen,
                                                      timeout_seconds=1)]
    assert types == ["MODIFIED", "DELETED"]
    # the grace period expiring removes the pod too (as if the kubelet were gone)
    v1.create_namespaced_pod(ns, pod("g2", node="n1", grace=1))
    v1.delete_namespaced_pod("g2", ns)
    assert v1.read_namespaced_pod("g2", ns).metadata.deletion_timestamp is not None
    assert wait_for(lambda: call(srv, "GET", f"/api/v1/namespaces/{ns}/pods/g2").status == 404, 5)
    # unbound pods go at once
    v1.create_namespaced_pod(ns, pod("g3"))
    v1.delete_namespaced_pod("g3", ns)
    assert call(srv, "GET", f"/api/v1/namespaces/{ns}/pods/g3").status == 404


def test_namespace_deletion_removes_contents(srv: ApiServer, api: client.ApiClient) -> None:
    v1: Any = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "doomed"}})
    v1.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    v1.create_namespaced_pod("doomed", pod("p", node="n1"))  # bound: keeps the namespace terminating
    v1.delete_namespace("doomed")
    assert wait_for(lambda: call(srv, "GET", "/api/v1/namespaces/doomed/configmaps/c").status == 404)
    nso = v1.read_namespace("doomed")
    assert nso.status.phase == "Terminating" and nso.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
    assert e.value.status == 403
    assert json.loads(str(e.value.body))["message"] == (
        'configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being '
        "terminated")
    assert v1.read_namespaced_pod("p", "doomed").metadata.deletion_timestamp is not None
    v1.delete_namespaced_pod("p", "doomed", grace_period_seconds=0)  # the kubelet's confirmation
    assert wait_for(lambda: call(srv, "GET", "/api/v1/namespaces/doomed").status == 404)


# --- Pod Security admission ---------------------------------------------------------------------------

def test_pod_security_rejects_hostpath_pod_and_warns_on_daemonset(srv: ApiServer) -> None:
    call(srv, "POST", "/api/v1/namespaces", {"metadata": {"name": "psa-b", "labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}})
    body = pod("hp")
    body["spec"]["volumes"] = [{"name": "cri-socket-dir", "hostPath": {"path": "/var/run/containerd"}}]
    r = call(srv, "POST", "/api/v1/namespaces/psa-b/pods", body)
    assert r.status == 403
    assert r.json()["message"] == ('pods "hp" is forbidden: violates PodSecurity "baseline:latest": '
                                   'hostPath volumes (volume "cri-socket-dir")')
    assert r.json()["reason"] == "Forbidden"
    r = call(srv, "POST", "/apis/apps/v1/namespaces/psa-b/daemonsets",
             ds("agent", "psa-b", [{"name": "cri-socket-dir", "hostPath": {"path": "/run/containerd"}}]))
    assert r.status == 201
    assert r.warnings() == ['would violate PodSecurity "baseline:latest": hostPath volumes (volume "cri-socket-dir")']
    # dry-run admission rejects too
    assert call(srv, "POST", "/api/v1/namespaces/psa-b/pods?dryRun=All", body).status == 403


def test_pod_security_restricted_message_order(srv: ApiServer) -> None:
    call(srv, "POST", "/api/v1/namespaces", {"metadata": {"name": "psa-r", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "v1.30"}}})
    body = pod("r")
    body["spec"]["volumes"] = [{"name": "a", "hostPath": {"path": "/a"}}, {"name": "b", "hostPath": {"path": "/b"}}]
    r = call(srv, "POST", "/api/v1/namespaces/psa-r/pods", body)
    assert r.status == 403
    assert r.json()["message"] == (
        'pods "r" is forbidden: violates PodSecurity "restricted:v1.30": allowPrivilegeEscalation != false '
        '(container "c" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
        '(container "c" must set securityContext.capabilities.drop=["ALL"]), hostPath volumes (volumes "a", "b"), '
        'restricted volume types (volumes "a", "b" use restricted volume type "hostPath"), runAsNonRoot != true '
        '(pod or container "c" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" '
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    ok = pod("fine")
    ok["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ok["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False,
                                                      "capabilities": {"drop": ["ALL"]}}
    assert call(srv, "POST", "/api/v1/namespaces/psa-r/pods", ok).status == 201


# --- service proxy -----------------------------------------------------------------------------------

class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_service_proxy_to_ready_pod(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=upstream.serve_forever, daemon=True)
    t.start()
    try:
        port = upstream.server_address[1]
        v1: Any = client.CoreV1Api(api)
        v1.create_namespaced_service(ns, {"metadata": {"name": "metrics"}, "spec": {
            "selector": {"app": "agg"}, "ports": [{"name": "http", "port": 8080, "targetPort": "http"},
                                                  {"name": "grpc", "port": 8443, "targetPort": 1}]}})
        r = call(srv, "GET", f"/api/v1/namespaces/{ns}/services/metrics:http/proxy/metrics")
        assert r.status == 503
        assert r.json()["message"] == 'no endpoints available for service "metrics"'
        v1.create_namespaced_pod(ns, pod("agg-1", node="n1", labels={"app": "agg"}, port=port))
        v1.patch_namespaced_pod_status("agg-1", ns, {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}})
        r = call(srv, "GET", f"/api/v1/namespaces/{ns}/services/metrics:http/proxy/metrics?x=1")
        assert r.status == 200, r.raw
        assert r.json() == {"path": "/metrics?x=1", "auth": None}  # the caller's token is not forwarded
        assert r.headers["X-Upstream"] == "yes"
        data = v1.connect_get_namespaced_service_proxy_with_path("metrics:8080", ns, "api/v1")
        assert "/api/v1" in data
    finally:
        upstream.shutdown()
        upstream.server_close()
        t.join(timeout=5)


# --- kubectl -------------------------------------------------------------------------------------

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kc
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: prefetch
  namespace: kc
spec:
  selector:
    matchLabels: {app: prefetch}
  template:
    metadata:
      labels: {app: prefetch}
    spec:
      containers:
      - name: sleep
        image: img:v1
        volumeMounts: [{name: cri, mountPath: /cri}]
      volumes:
      - name: cri
        hostPath: {path: /run/containerd}
"""


def test_kubectl_end_to_end(srv: ApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    call(srv, "POST", "/api/v1/nodes", {"metadata": {"name": "kc-node-1"}})
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    p = kubectl(kubeconfig, "get", "nodes")
    assert p.returncode == 0 and "kc-node-1" in p.stdout, p.stderr
    p = kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest))
    assert p.returncode == 0, p.stderr
    assert "daemonset.apps/prefetch serverside-applied" in p.stdout
    assert 'Warning: would violate PodSecurity "baseline:latest": hostPath volumes (volume "cri")' in p.stderr
    rv = call(srv, "GET", "/apis/apps/v1/namespaces/kc/daemonsets/prefetch").json()["metadata"]["resourceVersion"]
    assert kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest)).returncode == 0
    got = call(srv, "GET", "/apis/apps/v1/namespaces/kc/daemonsets/prefetch").json()
    assert got["metadata"]["resourceVersion"] == rv  # re-apply is a no-op
    assert got["metadata"]["managedFields"][0]["manager"] == "kubectl"
    p = kubectl(kubeconfig, "get", "ds", "-n", "kc", "prefetch", "-o", "yaml")
    assert p.returncode == 0 and "kind: DaemonSet" in p.stdout and "hostPath" in p.stdout
    p = kubectl(kubeconfig, "get", "pods", "-A")
    assert p.returncode == 0, p.stderr
    p = kubectl(kubeconfig, "label", "node", "kc-node-1", "image-prefetcher.stackrox.io/x=succeeded")
    assert p.returncode == 0, p.stderr
    node = call(srv, "GET", "/api/v1/nodes/kc-node-1").json()
    assert node["metadata"]["labels"]["image-prefetcher.stackrox.io/x"] == "succeeded"
    p = kubectl(kubeconfig, "get", "foos")
    assert p.returncode != 0 and 'the server doesn\'t have a resource type "foos"' in p.stderr
    p = kubectl(kubeconfig, "delete", "ds", "prefetch", "-n", "kc", "--timeout=20s")
    assert p.returncode == 0 and 'daemonset.apps "prefetch" deleted' in p.stdout, p.stderr
    p = kubectl(kubeconfig, "delete", "-f", str(manifest), "--ignore-not-found", "--timeout=20s")
    assert p.returncode == 0 and 'namespace "kc" deleted' in p.stdout, p.stderr
    assert call(srv, "GET", "/api/v1/namespaces/kc").status == 404


def test_kubectl_viewer_is_forbidden(srv: ApiServer, tmp_path: Path) -> None:
    kc = srv.write_kubeconfig(tmp_path / "viewer", user="viewer")
    assert kubectl(kc, "get", "ns").returncode == 0
    p = kubectl(kc, "label", "ns", "default", "a=b")
    assert p.returncode != 0
    assert ('namespaces "default" is forbidden: User "viewer" cannot patch resource "namespaces" in API group "" '
            "at the cluster scope") in p.stderr


def test_kubectl_get_watch(srv: ApiServer, kubeconfig: Path, ns: str) -> None:
    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(kubeconfig), "get", "cm", "-n", ns, "-w",
                             "--request-timeout=10s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        call(srv, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "watched"}})
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "kube-root-ca.crt" in out and "watched" in out, (out, err)
