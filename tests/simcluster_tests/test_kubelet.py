"""The kubelet's pure parts (env, volumes, hosts, status) and the real mount-namespace runner (podexec, as root)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from simcluster.client import ApiError
from simcluster.kubelet import ContainerRun, PodWorker, default_pull_policy
from simcluster.podexec import __file__ as podexec_path
from simcluster.volumes import (
    PodContext,
    VolumeError,
    container_env,
    container_mounts,
    host_path,
    hosts_file,
    materialise_volume,
    remove_pod_volumes,
)

Obj = dict[str, Any]
POD: Obj = {"metadata": {"name": "pf-abcde", "namespace": "ns", "uid": "u-1", "labels": {"app": "pf"}},
            "spec": {"nodeName": "sim-node-2", "serviceAccountName": "pf"}}


def lookup_from(objects: dict[tuple[str, str], Obj]) -> Any:
    return lambda kind, name: objects.get((kind, name))


def test_env_values_field_refs_and_key_refs() -> None:
    container = {"name": "c", "env": [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "INSTANCE_NAME", "value": "pf"},
        {"name": "GREETING", "value": "$(INSTANCE_NAME)-x $$(NOT)"},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
    ], "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}]}
    objects = {("Secret", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}},
               ("ConfigMap", "cm"): {"data": {"mode": "fast"}}}
    env = container_env(container, PodContext(POD, "sim-node-2"), lookup_from(objects), {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CM_mode": "fast", "NODE_NAME": "sim-node-2", "POD": "pf-abcde", "NS": "ns",
                   "IP": "127.0.0.1", "SA": "pf", "APP": "pf", "INSTANCE_NAME": "pf", "GREETING": "pf-x $(NOT)",
                   "PW": "hunter2", "MODE": "fast"}


def test_missing_key_ref_is_a_config_error_unless_optional() -> None:
    ref: dict[str, object] = {"name": "nope", "key": "k"}
    container: Obj = {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": ref}}]}
    with pytest.raises(VolumeError, match="couldn't find key k"):
        container_env(container, PodContext(POD, "n"), lookup_from({}), {})
    ref["optional"] = True
    assert container_env(container, PodContext(POD, "n"), lookup_from({}), {}) == {"X": ""}


def test_configmap_and_secret_volumes_honour_items_and_modes(tmp_path: Path) -> None:
    objects = {("ConfigMap", "pf"): {"data": {"images.txt": "a:1\nb:2\n", "other": "x"}},
               ("Secret", "pull"): {"data": {".dockerconfigjson": base64.b64encode(b"{}").decode()}}}
    ctx = PodContext(POD, "n")

    def make(volume: Obj) -> Path:
        return materialise_volume(volume, tmp_path, tmp_path / "root", ctx, lookup_from(objects), lambda _s: "tok",
                                  b"CA")

    listing = make({"name": "image-list", "configMap": {"name": "pf"}})
    assert sorted(os.listdir(listing)) == ["images.txt", "other"]
    assert (listing / "images.txt").read_text() == "a:1\nb:2\n"
    picked = make({"name": "picked", "configMap": {"name": "pf", "items": [{"key": "other", "path": "sub/o.txt",
                                                                            "mode": 0o600}]}})
    assert os.listdir(picked) == ["sub"] and (picked / "sub" / "o.txt").read_text() == "x"
    assert (picked / "sub" / "o.txt").stat().st_mode & 0o777 == 0o600
    secret = make({"name": "pull-secret", "secret": {"secretName": "pull"}})
    assert (secret / ".dockerconfigjson").read_text() == "{}"
    with pytest.raises(VolumeError, match='configmap "missing" not found'):
        make({"name": "m", "configMap": {"name": "missing"}})
    projected = make({"name": "kube-api-access", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}})
    assert {p: (projected / p).read_text() for p in ("token", "ca.crt", "namespace")} == {
        "token": "tok", "ca.crt": "CA", "namespace": "ns"}


def test_host_path_types(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/srv/kubernetes").mkdir(parents=True)
    assert host_path({"path": "/etc/srv/kubernetes", "type": "Directory"}, root, "v") == root / "etc/srv/kubernetes"
    with pytest.raises(VolumeError, match="is not a directory"):
        host_path({"path": "/home/kubernetes/bin", "type": "Directory"}, root, "v")
    created = host_path({"path": "/var/run/anything"}, root, "v")  # no type: created, as the runtime does
    assert created.is_dir()
    with pytest.raises(VolumeError, match="is not a socket file"):
        host_path({"path": "/etc/srv/kubernetes", "type": "Socket"}, root, "v")


def test_container_mounts_and_hosts_file(tmp_path: Path) -> None:
    (tmp_path / "list").mkdir()
    mounts = container_mounts({"volumeMounts": [{"name": "image-list", "mountPath": "/tmp/list", "readOnly": True}]},
                              {"image-list": tmp_path / "list"})
    assert [m.to_json() for m in mounts] == [{"source": str(tmp_path / "list"), "target": "/tmp/list",
                                              "kind": "dir", "read_only": True}]
    services = [{"metadata": {"name": "pf-metrics", "namespace": "ns"}},
                {"metadata": {"name": "elsewhere", "namespace": "other"}}]
    hosts = hosts_file(POD, services)
    assert "127.0.0.1\tpf-metrics pf-metrics.ns pf-metrics.ns.svc pf-metrics.ns.svc.cluster.local" in hosts
    assert "elsewhere" not in hosts


@pytest.mark.parametrize(("image", "policy"), [("r/x:v1", "IfNotPresent"), ("r/x", "Always"),
                                               ("r/x:latest", "Always"), ("r:5000/x@sha256:ab", "IfNotPresent")])
def test_default_pull_policy(image: str, policy: str) -> None:
    assert default_pull_policy(image) == policy


class _StubKubelet:
    node_name = "n"
    stopping = None

    def __init__(self, tmp: Path) -> None:
        self.pods_dir = tmp


class _StubClient:
    def __init__(self, error: Exception | None = None) -> None:
        self.deleted: list[tuple[str, str, str | None]] = []
        self.error = error

    def delete(self, kind: str, name: str, namespace: str | None = None, grace_period_seconds: int | None = None,
               uid: str | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.deleted.append((kind, name, namespace))

    def merge_patch(self, kind: str, name: str, patch: Obj, namespace: str | None = None,
                    subresource: str | None = None) -> Obj:
        return {}


class _DeletingKubelet(_StubKubelet):
    def __init__(self, tmp: Path, client: _StubClient, stopping: bool = False) -> None:
        super().__init__(tmp)
        self.client = client
        event = threading.Event()
        if stopping:
            event.set()
        self.stopping = event  # type: ignore[assignment]


def _worker_with_secret_volume(kubelet: _StubKubelet) -> PodWorker:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pod["spec"]["volumes"] = [{"name": "pull-secret", "secret": {"secretName": "s"}}]
    worker = PodWorker(kubelet, pod)  # type: ignore[arg-type]
    secret = {"data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}}
    worker.volume_paths = {"pull-secret": materialise_volume(
        pod["spec"]["volumes"][0], worker.dir, kubelet.pods_dir, PodContext(pod, "n"),
        lookup_from({("Secret", "s"): secret}), lambda _s: "token", b"")}
    (worker.dir / "containers" / "prefetch").mkdir(parents=True)
    (worker.dir / "containers" / "prefetch" / "0.log").write_text("log line\n")
    assert (worker.dir / "volumes" / "pull-secret" / ".dockerconfigjson").exists()
    return worker


@pytest.mark.parametrize("error", [None, ApiError(404, {"reason": "NotFound"}), ApiError(409, {"reason": "Conflict"})])
def test_a_deleted_pod_leaves_no_volume_files_but_keeps_its_logs(tmp_path: Path, error: ApiError | None) -> None:
    client = _StubClient(error)
    worker = _worker_with_secret_volume(_DeletingKubelet(tmp_path, client))
    worker._terminate()
    assert client.deleted == ([] if error else [("Pod", "pf-abcde", "ns")])
    assert not (worker.dir / "volumes").exists()
    assert (worker.dir / "containers" / "prefetch" / "0.log").read_text() == "log line\n"


def test_volumes_stay_while_the_pod_exists(tmp_path: Path) -> None:
    # The kubelet stops (simulated node shutdown) but the pod object still exists; a failed delete keeps them too.
    worker = _worker_with_secret_volume(_DeletingKubelet(tmp_path, _StubClient(), stopping=True))
    worker._terminate()
    assert (worker.dir / "volumes" / "pull-secret" / ".dockerconfigjson").exists()
    server_error = _StubClient(ApiError(500, {"reason": "InternalError"}))
    failing = _worker_with_secret_volume(_DeletingKubelet(tmp_path / "b", server_error))
    failing._terminate()
    assert (failing.dir / "volumes" / "pull-secret").exists()


def test_remove_pod_volumes_does_not_follow_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    pod_dir = tmp_path / "pod"
    (pod_dir / "volumes" / "v").mkdir(parents=True)
    (pod_dir / "volumes" / "link").symlink_to(outside)
    remove_pod_volumes(pod_dir)
    assert not (pod_dir / "volumes").exists() and (outside / "keep").exists()
    remove_pod_volumes(pod_dir)  # nothing left: no error


def test_pod_status_phases_and_conditions(tmp_path: Path) -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"].update(initContainers=[{"name": "prefetch", "image": "a:v1"}],
                       containers=[{"name": "sleep", "image": "a:v1"}])
    worker = PodWorker(_StubKubelet(tmp_path), pod)  # type: ignore[arg-type]
    status = worker.compute_status()
    assert status["phase"] == "Pending"
    assert status["initContainerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Initialized"]["status"] == "False"
    assert conditions["Initialized"]["message"] == "containers with incomplete status: [prefetch]"
    worker.volume_paths = {}
    worker.init_index = 1
    worker.inits[0].state = {"terminated": {"exitCode": 0, "reason": "Completed", "message": '{"v":1}'}}
    worker.containers[0].state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    worker.containers[0].ready = True
    status = worker.compute_status()
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True", "ContainersReady": "True",
        "PodScheduled": "True"}
    assert status["initContainerStatuses"][0]["state"]["terminated"]["message"] == '{"v":1}'
    assert status["podIP"] == "127.0.0.1" and status["hostIP"] == "127.0.0.1"
    assert status["containerStatuses"][0]["started"] is True


def test_container_run_status_shape() -> None:
    run = ContainerRun({"name": "c", "image": "r/x:v1"}, False, {"waiting": {"reason": "ErrImagePull",
                                                                             "message": "not found"}})
    assert run.status() == {"name": "c", "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
                            "lastState": {}, "ready": False, "restartCount": 0, "image": "r/x:v1", "imageID": "",
                            "started": False}


# ---- the real runner ----------------------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


def run_podexec(tmp_path: Path, mounts: list[Obj], script: str) -> subprocess.CompletedProcess[str]:
    spec = {"argv": ["/bin/sh", "-c", script], "env": {"PATH": "/usr/bin:/bin"}, "cwd": "/",
            "stage": str(tmp_path / "stage"), "mounts": mounts}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, podexec_path, str(spec_path)], capture_output=True, text=True,
                          timeout=60, check=False)


@needs_root
def test_podexec_binds_volumes_at_paths_missing_on_the_host(tmp_path: Path) -> None:
    listing = tmp_path / "list"
    listing.mkdir()
    (listing / "images.txt").write_text("r/x:v1\n")
    term = tmp_path / "termination-log"
    term.write_text("")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tpf-metrics\n")
    target = f"/tmp/simcluster-test-{os.getpid()}/list"
    mounts = [{"source": str(listing), "target": target, "kind": "dir", "read_only": True},
              {"source": str(term), "target": "/dev/termination-log", "kind": "file", "read_only": False},
              {"source": str(hosts), "target": "/etc/hosts", "kind": "file", "read_only": False}]
    script = (f"cat {target}/images.txt; grep -c pf-metrics /etc/hosts; echo done > /dev/termination-log; "
              f"touch {target}/x 2>/dev/null && echo writable || echo read-only")
    result = run_podexec(tmp_path, mounts, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["r/x:v1", "1", "read-only"]
    assert term.read_text() == "done\n"
    # Nothing leaked to the host: the missing mount points lived in the namespace's overlay only.
    assert not Path(target).exists()
    assert not Path("/dev/termination-log").exists() or Path("/dev/termination-log").read_text() != "done\n"


@needs_root
def test_podexec_reports_a_failed_mount(tmp_path: Path) -> None:
    mounts: list[Obj] = [{"source": str(tmp_path / "does-not-exist"), "target": "/tmp/x", "kind": "dir"}]
    result = run_podexec(tmp_path, mounts, "true")
    assert result.returncode != 0


