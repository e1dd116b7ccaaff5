"""DaemonSet/Deployment controller logic against in-memory caches and a recording API client (no server)."""

from __future__ import annotations

import itertools
from typing import Any, Optional

from simcluster import podutil
from simcluster.client import ApiError
from simcluster.controllers import DaemonSetController, DeploymentController, WorkQueue

Obj = dict[str, Any]
_rv = itertools.count(1)


class FakeInformer:
    def __init__(self, objs: Optional[list[Obj]] = None) -> None:
        self.cache: dict[str, Obj] = {}
        self.handlers: list[Any] = []
        for obj in objs or []:
            self.observe(obj)

    def key(self, obj: Obj) -> str:
        ns = obj["metadata"].get("namespace")
        return f"{ns}/{obj['metadata']['name']}" if ns else obj["metadata"]["name"]

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    def get(self, key: str) -> Optional[Obj]:
        return self.cache.get(key)

    def observe(self, obj: Obj, deleted: bool = False) -> None:
        if deleted:
            self.cache.pop(self.key(obj), None)
        else:
            self.cache[self.key(obj)] = obj


class FakeClient:
    """Records writes; ``reject_pods`` makes pod creation fail like a PodSecurity rejection."""

    def __init__(self, reject_pods: str = "") -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.reject_pods = reject_pods

    def create(self, kind: str, obj: Obj, namespace: Optional[str] = None) -> Obj:
        self.calls.append(("create", kind, obj))
        if kind == "Pod" and self.reject_pods:
            raise ApiError(403, {"reason": "Forbidden", "message": self.reject_pods})
        created = dict(obj)
        created["metadata"] = dict(obj["metadata"], uid=f"uid-{next(_rv)}", resourceVersion=str(next(_rv)),
                                   creationTimestamp=podutil.now_iso())
        return created

    def delete(self, kind: str, name: str, namespace: Optional[str] = None, grace_period_seconds: Any = None,
               uid: Any = None) -> Obj:
        self.calls.append(("delete", kind, name))
        return {"kind": "Status", "status": "Success"}

    def merge_patch(self, kind: str, name: str, patch: Obj, namespace: Optional[str] = None,
                    subresource: Optional[str] = None) -> Obj:
        self.calls.append(("patch", f"{kind}/{subresource or ''}", patch))
        return {"metadata": {"name": name, "namespace": namespace}, **patch}

    def writes(self, verb: str, kind: str) -> list[Any]:
        return [c[2] for c in self.calls if c[0] == verb and c[1] == kind]


def make_node(name: str, taints: Optional[list[Obj]] = None) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {"taints": taints or []}}


def make_ds(tolerate_all: bool = True, max_unavailable: Any = "100%", generation: int = 1) -> Obj:
    spec: Obj = {"containers": [{"name": "sleep", "image": "img:v1", "args": ["sleep"]}]}
    if tolerate_all:
        spec["tolerations"] = [{"operator": "Exists"}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "pf", "namespace": "ns", "uid": "ds-uid", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "pf"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
                     "template": {"metadata": {"labels": {"app": "pf"}}, "spec": spec}},
            "status": {}}


def ready_pod(controller: DaemonSetController, ds: Obj, node: str, ready: bool = True, old: bool = False) -> Obj:
    ds_hash, generation = controller.revision(ds)
    pod = controller.new_pod(ds, node, "oldhash" if old else ds_hash, "0" if old else generation,
                             ds["spec"]["template"]["spec"])
    pod["metadata"].update(uid=f"pod-{node}-{old}", creationTimestamp="2026-01-01T00:00:00Z")
    pod["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return pod


def setup(nodes: list[Obj], ds: Obj, pods: Optional[list[Obj]] = None,
          client: Optional[FakeClient] = None) -> tuple[DaemonSetController, FakeClient, FakeInformer]:
    client = client or FakeClient()
    pod_informer = FakeInformer(pods or [])
    controller = DaemonSetController(client, FakeInformer([ds]), pod_informer, FakeInformer(nodes))  # type: ignore[arg-type]
    return controller, client, pod_informer


NODES = [make_node("n1", [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
         make_node("n2"), make_node("n3")]


def test_creates_one_pod_per_eligible_node_with_real_labels_and_owner() -> None:
    ds = make_ds()
    controller, client, _ = setup(NODES, ds)
    controller.sync("ns/pf")
    created = client.writes("create", "Pod")
    assert sorted(p["spec"]["nodeName"] for p in created) == ["n1", "n2", "n3"]
    pod = created[0]
    ds_hash, generation = controller.revision(ds)
    assert pod["metadata"]["labels"] == {"app": "pf", "controller-revision-hash": ds_hash,
                                         "pod-template-generation": generation}
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "pf",
                                                   "uid": "ds-uid", "controller": True, "blockOwnerDeletion": True}]
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"} in \
        pod["spec"]["tolerations"]
    events = [e for e in client.writes("create", "Event") if e["reason"] == "SuccessfulCreate"]
    assert len(events) == 3 and events[0]["involvedObject"]["kind"] == "DaemonSet"


def test_taint_without_toleration_skips_the_node_and_status_counts_it_out() -> None:
    controller, client, _ = setup(NODES, make_ds(tolerate_all=False))
    controller.sync("ns/pf")
    assert sorted(p["spec"]["nodeName"] for p in client.writes("create", "Pod")) == ["n2", "n3"]
    status = client.writes("patch", "DaemonSet/status")[-1]["status"]
    assert status["desiredNumberScheduled"] == 2
    assert status["currentNumberScheduled"] == 2
    assert status["numberReady"] == 0
    assert status["numberUnavailable"] == 2
    assert status["observedGeneration"] == 1


def test_status_counts_ready_available_updated_and_misscheduled() -> None:
    ds = make_ds(tolerate_all=False, generation=2)
    controller, _, _ = setup(NODES, ds)
    pods = [ready_pod(controller, ds, "n1"), ready_pod(controller, ds, "n2"),
            ready_pod(controller, ds, "n3", ready=False, old=True)]
    controller, _, _ = setup(NODES, ds, pods)
    ds_hash, generation = controller.revision(ds)
    status = controller.compute_status(ds, ds_hash, generation)
    assert status == {"currentNumberScheduled": 2, "numberMisscheduled": 1, "desiredNumberScheduled": 2,
                      "numberReady": 1, "observedGeneration": 2, "updatedNumberScheduled": 1,
                      "numberAvailable": 1, "numberUnavailable": 1}


def test_rolling_update_respects_max_unavailable() -> None:
    ds = make_ds(max_unavailable=1)
    controller, _, _ = setup(NODES, ds)
    pods = [ready_pod(controller, ds, n["metadata"]["name"], old=True) for n in NODES]
    controller, client, _ = setup(NODES, ds, pods)
    controller.sync("ns/pf")
    assert len(client.writes("delete", "Pod")) == 1


def test_rolling_update_at_100_percent_replaces_every_old_pod_at_once() -> None:
    ds = make_ds(max_unavailable="100%")
    controller, _, _ = setup(NODES, ds)
    pods = [ready_pod(controller, ds, n["metadata"]["name"], old=True) for n in NODES]
    controller, client, _ = setup(NODES, ds, pods)
    controller.sync("ns/pf")
    assert len(client.writes("delete", "Pod")) == 3
    assert client.writes("create", "Pod") == []  # new pods wait until the old ones are gone


def test_unavailable_old_pods_are_replaced_even_beyond_max_unavailable() -> None:
    ds = make_ds(max_unavailable=1)
    controller, _, _ = setup(NODES, ds)
    pods = [ready_pod(controller, ds, n["metadata"]["name"], ready=False, old=True) for n in NODES]
    controller, client, _ = setup(NODES, ds, pods)
    controller.sync("ns/pf")
    assert len(client.writes("delete", "Pod")) == 3


def test_pods_on_nodes_no_longer_eligible_are_deleted() -> None:
    ds = make_ds()
    controller, _, _ = setup(NODES, ds)
    stray = ready_pod(controller, ds, "n2")
    evicting = [make_node("n2", [{"key": "maintenance", "effect": "NoExecute"}])]
    controller, client, _ = setup(evicting, ds, [stray])
    ds["spec"]["template"]["spec"]["tolerations"] = []
    controller.sync("ns/pf")
    assert client.writes("delete", "Pod") == [stray["metadata"]["name"]]


def test_rejected_pod_creation_records_failed_create_with_the_api_message() -> None:
    message = 'pods "pf-x" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes'
    controller, client, _ = setup(NODES, make_ds(), client=FakeClient(reject_pods=message))
    controller.sync("ns/pf")
    failed = [e for e in client.writes("create", "Event") if e["reason"] == "FailedCreate"]
    assert failed and failed[0]["message"] == f"Error creating: {message}"
    assert failed[0]["type"] == "Warning"


def test_deployment_creates_replicas_and_reports_conditions() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "m", "namespace": "ns", "uid": "dep-uid", "generation": 3},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "m"}},
                           "template": {"metadata": {"labels": {"app": "m"}},
                                        "spec": {"containers": [{"name": "a", "image": "i"}]}}}}
    client = FakeClient()
    pods = FakeInformer()
    controller = DeploymentController(client, FakeInformer([deployment]), pods, FakeInformer(NODES))  # type: ignore[arg-type]
    controller.sync("ns/m")
    created = client.writes("create", "Pod")
    assert len(created) == 2
    assert all(p["spec"]["nodeName"] in ("n2", "n3") for p in created)  # the tainted node is not picked
    assert all(p["metadata"]["labels"]["pod-template-hash"] for p in created)
    status = client.writes("patch", "Deployment/status")[-1]["status"]
    assert status["observedGeneration"] == 3 and status["replicas"] == 2
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert available["status"] == "False" and available["reason"] == "MinimumReplicasUnavailable"


def test_work_queue_deduplicates_and_delays() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b", delay_s=0.05)
    assert queue.get() == "a"
    assert queue.get() == "b"
    queue.close()
    assert queue.get() is None
