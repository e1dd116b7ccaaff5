"""Watch-driven DaemonSet and Deployment controllers, API clients of the simulated server like the real ones.

DaemonSet: eligibility by nodeSelector, required node affinity and taints/tolerations (``scheduling``); one pod per
eligible node with ``controller-revision-hash`` / ``pod-template-generation`` labels and a controller ownerReference;
rolling update within ``maxUnavailable``; pods on nodes no longer eligible and failed pods are deleted; Events
``SuccessfulCreate`` / ``FailedCreate`` / ``SuccessfulDelete``; status computed as ``updateDaemonSetStatus`` does.
No ControllerRevision objects are written: the revision hash is computed from the template.

Deployment (approximation, documented): pods are owned directly by the Deployment, there is no ReplicaSet; the
``pod-template-hash`` label still names the template revision, and a changed template surges new pods and deletes
the old ones once the new are available.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Optional

from simcluster import podutil
from simcluster.client import ApiClient, ApiError, Obj
from simcluster.informer import Informer, obj_key
from simcluster.scheduling import (
    daemon_tolerations,
    node_matches_pod_spec,
    node_should_run_daemon_pod,
    scaled_value,
    untolerated_taints,
)

log = logging.getLogger(__name__)


class WorkQueue:
    """Deduplicating key queue with delayed adds (a rate-limited workqueue in miniature)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._queued: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._closed = False

    def add(self, key: str, delay_s: float = 0.0) -> None:
        with self._cond:
            if delay_s > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay_s, next(self._seq), key))
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
            self._cond.notify_all()

    def get(self) -> Optional[str]:
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    if key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    return key
                timeout = (self._delayed[0][0] - now) if self._delayed else None
                self._cond.wait(timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class EventRecorder:
    """core/v1 Events, aggregated like client-go's recorder: a repeat bumps ``count`` and ``lastTimestamp``."""

    def __init__(self, client: ApiClient, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._lock = threading.Lock()

    def record(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (str(meta.get("uid")), event_type, reason, message)
        now = podutil.now_iso()
        try:
            with self._lock:
                seen = self._seen.get(key)
            if seen is not None:
                name, count = seen
                self.client.merge_patch("Event", name, {"count": count + 1, "lastTimestamp": now}, namespace)
                with self._lock:
                    self._seen[key] = (name, count + 1)
                return
            name = f"{meta.get('name')}.{int(time.time() * 1e9):x}"
            source = {"component": self.component}
            if self.host:
                source["host"] = self.host
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                                   "name": meta.get("name"), "namespace": meta.get("namespace"),
                                   "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
                "reason": reason, "message": message, "type": event_type, "source": source,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": self.component, "reportingInstance": self.host,
            }
            self.client.create("Event", event, namespace)
            with self._lock:
                self._seen[key] = (name, 1)
        except (ApiError, OSError) as exc:  # events are best effort, as in the real recorder
            log.debug("event %s/%s not recorded: %s", reason, meta.get("name"), exc)


class _Controller:
    """A worker thread draining a WorkQueue of object keys into ``sync(key)``."""

    name = "controller"

    def __init__(self) -> None:
        self.queue = WorkQueue()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def sync(self, key: str) -> None:
        raise NotImplementedError

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self.sync(key)
            except (ApiError, OSError) as exc:
                log.info("%s: sync %s failed, retrying: %s", self.name, key, exc)
                self.queue.add(key, 1.0)
            except Exception:
                log.exception("%s: sync %s crashed", self.name, key)
                self.queue.add(key, 5.0)


def _enqueue_owner(queue: WorkQueue, kind: str) -> Callable[[str, Obj], None]:
    def handler(_event: str, pod: Obj) -> None:
        ref = podutil.controller_of(pod)
        if ref and ref.get("kind") == kind:
            queue.add(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
    return handler


def _status_changed(current: Obj, wanted: Obj) -> bool:
    return any(current.get(k) != v for k, v in wanted.items())


# ---- DaemonSet -------------------------------------------------------------------------------------------
class DaemonSetController(_Controller):
    name = "daemonset-controller"

    def __init__(self, client: ApiClient, daemonsets: Informer, pods: Informer, nodes: Informer) -> None:
        super().__init__()
        self.client = client
        self.daemonsets = daemonsets
        self.pods = pods
        self.nodes = nodes
        self.events = EventRecorder(client, "daemonset-controller")
        self._failed_create_backoff: dict[str, float] = {}
        daemonsets.handlers.append(lambda _e, ds: self.queue.add(obj_key(ds)))
        pods.handlers.append(_enqueue_owner(self.queue, "DaemonSet"))
        nodes.handlers.append(lambda _e, _n: self._enqueue_all())

    def _enqueue_all(self) -> None:
        for ds in self.daemonsets.items():
            self.queue.add(obj_key(ds))

    def revision(self, ds: Obj) -> tuple[str, str]:
        """(controller-revision-hash, pod-template-generation) of the DaemonSet's current template."""
        template = ds.get("spec", {}).get("template", {})
        collision = int(ds.get("status", {}).get("collisionCount") or 0)
        annotations = ds.get("metadata", {}).get("annotations") or {}
        generation = annotations.get("deprecated.daemonset.template.generation") or str(
            ds.get("metadata", {}).get("generation") or 1)
        return podutil.template_hash(template, collision), str(generation)

    def daemon_pods(self, ds: Obj) -> list[Obj]:
        """Pods this DaemonSet controls; deleted pods that already ended are left out (getNodesToDaemonPods)."""
        uid = ds["metadata"].get("uid")
        namespace = ds["metadata"].get("namespace")
        out = []
        for pod in self.pods.items():
            ref = podutil.controller_of(pod)
            if pod["metadata"].get("namespace") != namespace or not ref or ref.get("uid") != uid:
                continue
            if pod["metadata"].get("deletionTimestamp") and podutil.is_terminal(pod):
                continue
            out.append(pod)
        return out

    def nodes_to_pods(self, ds: Obj) -> dict[str, list[Obj]]:
        result: dict[str, list[Obj]] = {}
        for pod in self.daemon_pods(ds):
            result.setdefault(pod.get("spec", {}).get("nodeName", ""), []).append(pod)
        for pods in result.values():
            pods.sort(key=podutil.creation_order_key)
        return result

    def sync(self, key: str) -> None:
        ds = self.daemonsets.get(key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        ds_hash, generation = self.revision(ds)
        node_pods = self.nodes_to_pods(ds)
        template_spec = ds["spec"].get("template", {}).get("spec", {})
        to_create: list[str] = []
        to_delete: list[Obj] = []
        for node in self.nodes.items():
            create, delete = self._pods_should_be_on_node(ds, node, node_pods.get(node["metadata"]["name"], []))
            to_create += create
            to_delete += delete
        for node_name, pods in node_pods.items():  # pods on nodes that do not exist (any more)
            if self.nodes.get(node_name) is None:
                to_delete += [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if not to_delete and self._strategy(ds) == "RollingUpdate":
            to_delete += self._rolling_update_deletions(ds, node_pods, ds_hash, generation)
        elif self._strategy(ds) == "OnDelete":
            pass
        for pod in to_delete:
            self._delete_pod(ds, pod)
        requeue = self._create_pods(ds, to_create, ds_hash, generation, template_spec)
        self._update_status(ds, ds_hash, generation)
        if requeue:
            self.queue.add(key, requeue)

    @staticmethod
    def _strategy(ds: Obj) -> str:
        return str((ds["spec"].get("updateStrategy") or {}).get("type") or "RollingUpdate")

    def _pods_should_be_on_node(self, ds: Obj, node: Obj, pods: list[Obj]) -> tuple[list[str], list[Obj]]:
        should_run, should_continue = node_should_run_daemon_pod(ds["spec"]["template"].get("spec", {}), node)
        name = node["metadata"]["name"]
        if should_run and not pods:
            return [name], []
        delete: list[Obj] = []
        if should_continue:
            running = []
            for pod in pods:
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                phase = pod.get("status", {}).get("phase")
                if phase == "Failed":
                    self.events.record(ds, "Warning", "FailedDaemonPod",
                                       f"Found failed daemon pod {pod['metadata']['namespace']}/"
                                       f"{pod['metadata']['name']} on node {name}, will try to kill it")
                    delete.append(pod)
                elif phase == "Succeeded":
                    delete.append(pod)
                else:
                    running.append(pod)
            delete += running[1:]  # no surge: keep only the oldest
        elif pods:
            delete = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return [], delete

    def _rolling_update_deletions(self, ds: Obj, node_pods: dict[str, list[Obj]], ds_hash: str,
                                  generation: str) -> list[Obj]:
        """rollingUpdate() without surge: unavailable old pods go at once, available ones within maxUnavailable."""
        desired = sum(1 for n in self.nodes.items()
                      if node_should_run_daemon_pod(ds["spec"]["template"].get("spec", {}), n)[0])
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        max_unavailable = scaled_value(rolling.get("maxUnavailable"), desired, True, 1)
        min_ready = int(ds["spec"].get("minReadySeconds") or 0)
        unavailable = 0
        replacements: list[Obj] = []
        candidates: list[Obj] = []
        for node in self.nodes.items():
            pods = [p for p in node_pods.get(node["metadata"]["name"], [])
                    if not p["metadata"].get("deletionTimestamp")]
            if not node_should_run_daemon_pod(ds["spec"]["template"].get("spec", {}), node)[0]:
                continue
            new = [p for p in pods if self._updated(p, ds_hash, generation)]
            old = [p for p in pods if not self._updated(p, ds_hash, generation)]
            if (not new and not old) or (new and old) or len(pods) > 1:
                unavailable += 1
            elif new:
                if not podutil.is_pod_available(new[0], min_ready):
                    unavailable += 1
            elif not podutil.is_pod_available(old[0], min_ready):
                replacements.append(old[0])
            elif unavailable < max_unavailable:
                candidates.append(old[0])
        remaining = max(0, min(max_unavailable - unavailable, len(candidates)))
        return replacements + candidates[:remaining]

    @staticmethod
    def _updated(pod: Obj, ds_hash: str, generation: str) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return labels.get("controller-revision-hash") == ds_hash or labels.get("pod-template-generation") == generation

    def _delete_pod(self, ds: Obj, pod: Obj) -> None:
        try:
            result = self.client.delete("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                        uid=pod["metadata"].get("uid"))
        except ApiError as exc:
            if exc.status == 404:
                return
            self.events.record(ds, "Warning", "FailedDelete", f"Error deleting: {exc.message}")
            raise
        if isinstance(result, dict) and result.get("kind") == "Pod":
            self.pods.observe(result, deleted=not result.get("metadata", {}).get("deletionTimestamp"))
        self.events.record(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    def new_pod(self, ds: Obj, node_name: str, ds_hash: str, generation: str, template_spec: Obj) -> Obj:
        template = ds["spec"].get("template", {})
        meta = template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels.update({"controller-revision-hash": ds_hash, "pod-template-generation": generation})
        spec = copy.deepcopy(template_spec)
        spec["tolerations"] = daemon_tolerations(spec)
        # As the real controller: pin with a required node affinity on metadata.name (we bind directly too, as
        # there is no scheduler).
        spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})[
            "requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}
        spec["nodeName"] = node_name
        name = f"{ds['metadata']['name']}-{podutil.random_suffix()}"
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "generateName": f"{ds['metadata']['name']}-", "namespace": ds["metadata"]["namespace"],
                "labels": labels, "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds["metadata"]["name"],
                                     "uid": ds["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": spec,
        }

    def _create_pods(self, ds: Obj, nodes: list[str], ds_hash: str, generation: str, template_spec: Obj) -> float:
        """Creates the missing pods; on rejection records FailedCreate and returns a backoff delay for a retry."""
        key = obj_key(ds)
        for node_name in nodes:
            pod = self.new_pod(ds, node_name, ds_hash, generation, template_spec)
            try:
                created = self.client.create("Pod", pod, ds["metadata"]["namespace"])
            except ApiError as exc:
                self.events.record(ds, "Warning", "FailedCreate", f"Error creating: {exc.message}")
                delay = min(self._failed_create_backoff.get(key, 0.5) * 2, 60.0)
                self._failed_create_backoff[key] = delay
                return delay
            self.pods.observe(created)
            self._failed_create_backoff.pop(key, None)
            self.events.record(ds, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return 0.0

    def compute_status(self, ds: Obj, ds_hash: str, generation: str) -> Obj:
        desired = current = misscheduled = ready = available = updated = 0
        node_pods = self.nodes_to_pods(ds)
        min_ready = int(ds["spec"].get("minReadySeconds") or 0)
        for node in self.nodes.items():
            should_run, _ = node_should_run_daemon_pod(ds["spec"]["template"].get("spec", {}), node)
            pods = node_pods.get(node["metadata"]["name"], [])
            if not should_run:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = pods[0]
            if podutil.is_pod_ready(pod):
                ready += 1
                if podutil.is_pod_available(pod, min_ready):
                    available += 1
            if self._updated(pod, ds_hash, generation):
                updated += 1
        status: Obj = {
            "currentNumberScheduled": current, "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired, "numberReady": ready,
            "observedGeneration": ds["metadata"].get("generation", 1), "updatedNumberScheduled": updated,
            "numberAvailable": available, "numberUnavailable": desired - available,
        }
        return status

    def _update_status(self, ds: Obj, ds_hash: str, generation: str) -> None:
        wanted = self.compute_status(ds, ds_hash, generation)
        current = ds.get("status") or {}
        # The real API omits zero-valued optional counters; compare with that in mind.
        if not any((current.get(k) or 0) != v for k, v in wanted.items()):
            return
        patch = {"status": {k: (v if v or k in _DS_REQUIRED else None) for k, v in wanted.items()}}
        result = self.client.merge_patch("DaemonSet", ds["metadata"]["name"], patch, ds["metadata"]["namespace"],
                                         subresource="status")
        self.daemonsets.observe(result)


_DS_REQUIRED = {"currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"}


# ---- Deployment ------------------------------------------------------------------------------------------
class DeploymentController(_Controller):
    name = "deployment-controller"

    def __init__(self, client: ApiClient, deployments: Informer, pods: Informer, nodes: Informer) -> None:
        super().__init__()
        self.client = client
        self.deployments = deployments
        self.pods = pods
        self.nodes = nodes
        self.events = EventRecorder(client, "deployment-controller")
        deployments.handlers.append(lambda _e, d: self.queue.add(obj_key(d)))
        pods.handlers.append(_enqueue_owner(self.queue, "Deployment"))

    def owned_pods(self, deployment: Obj) -> list[Obj]:
        uid = deployment["metadata"].get("uid")
        return [p for p in self.pods.items()
                if (podutil.controller_of(p) or {}).get("uid") == uid
                and not (p["metadata"].get("deletionTimestamp") and podutil.is_terminal(p))]

    def sync(self, key: str) -> None:
        deployment = self.deployments.get(key)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        spec = deployment.get("spec", {})
        replicas = int(spec.get("replicas", 1))
        pod_hash = podutil.template_hash(spec.get("template", {}), int(deployment.get("status", {})
                                                                          .get("collisionCount") or 0))
        min_ready = int(spec.get("minReadySeconds") or 0)
        pods = self.owned_pods(deployment)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        for pod in live:
            if pod.get("status", {}).get("phase") in ("Failed", "Succeeded"):
                self._delete(pod)
        live = [p for p in live if not podutil.is_terminal(p)]
        new = [p for p in live if (p["metadata"].get("labels") or {}).get("pod-template-hash") == pod_hash]
        old = [p for p in live if p not in new]
        for _ in range(replicas - len(new)):
            self._create(deployment, pod_hash)
        for pod in sorted(new, key=podutil.creation_order_key)[replicas:]:
            self._delete(pod)
        new_available = sum(1 for p in new if podutil.is_pod_available(p, min_ready))
        if old and (new_available >= replicas or self._strategy(deployment) == "Recreate"):
            for pod in old:
                self._delete(pod)
        self._update_status(deployment, pod_hash, min_ready)

    @staticmethod
    def _strategy(deployment: Obj) -> str:
        return str((deployment["spec"].get("strategy") or {}).get("type") or "RollingUpdate")

    def _create(self, deployment: Obj, pod_hash: str) -> None:
        template = deployment["spec"].get("template", {})
        meta = template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels["pod-template-hash"] = pod_hash
        name = f"{deployment['metadata']['name']}-{pod_hash}-{podutil.random_suffix()}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"], "labels": labels,
                            "annotations": dict(meta.get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": deployment["metadata"]["name"],
                                                 "uid": deployment["metadata"]["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": copy.deepcopy(template.get("spec", {}))}
        pod["spec"]["nodeName"] = self._pick_node(pod["spec"])
        try:
            created = self.client.create("Pod", pod, deployment["metadata"]["namespace"])
        except ApiError as exc:
            self.events.record(deployment, "Warning", "FailedCreate", f"Error creating: {exc.message}")
            raise
        self.pods.observe(created)

    def _pick_node(self, spec: Obj) -> str:
        """No scheduler: the least busy schedulable node (taints and selectors honoured)."""
        load: dict[str, int] = {}
        for pod in self.pods.items():
            load[pod.get("spec", {}).get("nodeName", "")] = load.get(pod.get("spec", {}).get("nodeName", ""), 0) + 1
        eligible = [n["metadata"]["name"] for n in self.nodes.items() if _schedulable(spec, n)]
        if not eligible:
            return ""
        return min(sorted(eligible), key=lambda n: load.get(n, 0))

    def _delete(self, pod: Obj) -> None:
        try:
            result = self.client.delete("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                        uid=pod["metadata"].get("uid"))
        except ApiError as exc:
            if exc.status != 404:
                raise
            return
        if isinstance(result, dict) and result.get("kind") == "Pod":
            self.pods.observe(result, deleted=not result.get("metadata", {}).get("deletionTimestamp"))

    def compute_status(self, deployment: Obj, pod_hash: str, min_ready: int) -> Obj:
        pods = [p for p in self.owned_pods(deployment) if not p["metadata"].get("deletionTimestamp")]
        replicas = len(pods)
        updated = sum(1 for p in pods if (p["metadata"].get("labels") or {}).get("pod-template-hash") == pod_hash)
        ready = sum(1 for p in pods if podutil.is_pod_ready(p))
        available = sum(1 for p in pods if podutil.is_pod_available(p, min_ready))
        wanted = int(deployment["spec"].get("replicas", 1))
        rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = scaled_value(rolling.get("maxUnavailable"), wanted, False, "25%")
        rs_name = f"{deployment['metadata']['name']}-{pod_hash}"
        old_conditions = {c.get("type"): c for c in deployment.get("status", {}).get("conditions") or []}
        is_available = available >= wanted - max_unavailable
        complete = updated == wanted and available == wanted and replicas == wanted
        conditions = [
            _condition(old_conditions.get("Available"), "Available", is_available,
                       "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
                       "Deployment has minimum availability." if is_available
                       else "Deployment does not have minimum availability."),
            _condition(old_conditions.get("Progressing"), "Progressing", True,
                       "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                       f'ReplicaSet "{rs_name}" has successfully progressed.' if complete
                       else f'ReplicaSet "{rs_name}" is progressing.'),
        ]
        status: Obj = {"observedGeneration": deployment["metadata"].get("generation", 1), "replicas": replicas,
                       "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
                       "unavailableReplicas": max(0, wanted - available), "conditions": conditions}
        return {k: v for k, v in status.items() if v or k in ("observedGeneration", "conditions")}

    def _update_status(self, deployment: Obj, pod_hash: str, min_ready: int) -> None:
        wanted = self.compute_status(deployment, pod_hash, min_ready)
        current = deployment.get("status") or {}
        if current == wanted:
            return
        patch = {"status": {k: wanted.get(k) for k in set(wanted) | set(current)}}
        result = self.client.merge_patch("Deployment", deployment["metadata"]["name"], patch,
                                         deployment["metadata"]["namespace"], subresource="status")
        self.deployments.observe(result)


def _schedulable(spec: Obj, node: Obj) -> bool:
    taints = node.get("spec", {}).get("taints") or []
    return node_matches_pod_spec(spec, node) and not untolerated_taints(
        taints, list(spec.get("tolerations") or []), ("NoSchedule", "NoExecute"))


def _condition(old: Optional[Obj], cond_type: str, status: bool, reason: str, message: str) -> Obj:
    value = "True" if status else "False"
    now = podutil.now_iso()
    same = old is not None and old.get("status") == value
    unchanged = same and old is not None and old.get("reason") == reason and old.get("message") == message
    return {"type": cond_type, "status": value,
            "lastUpdateTime": old.get("lastUpdateTime") if unchanged and old else now,
            "lastTransitionTime": old.get("lastTransitionTime") if same and old else now,
            "reason": reason, "message": message}


class ServiceAccountController:
    """Creates the ``default`` ServiceAccount in every namespace, as the real serviceaccount controller does."""

    def __init__(self, client: ApiClient, namespaces: Informer) -> None:
        self.client = client
        namespaces.handlers.append(self._on_namespace)

    def _on_namespace(self, event_type: str, namespace: Obj) -> None:
        if event_type != "ADDED" or namespace.get("metadata", {}).get("deletionTimestamp"):
            return
        name = namespace["metadata"]["name"]
        try:
            self.client.create("ServiceAccount", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                  "metadata": {"name": "default", "namespace": name}}, name)
        except (ApiError, OSError) as exc:  # 409: it exists already
            log.debug("default ServiceAccount in %s: %s", name, exc)


class ControllerManager:
    """The informers and the controllers, sharing one pod and one node cache."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.pods = Informer(client, "Pod")
        self.nodes = Informer(client, "Node")
        self.daemonsets = Informer(client, "DaemonSet")
        self.deployments = Informer(client, "Deployment")
        self.namespaces = Informer(client, "Namespace")
        self.sa_controller = ServiceAccountController(client, self.namespaces)
        self.ds_controller = DaemonSetController(client, self.daemonsets, self.pods, self.nodes)
        self.deploy_controller = DeploymentController(client, self.deployments, self.pods, self.nodes)

    def start(self, timeout_s: float = 30) -> None:
        informers = (self.nodes, self.pods, self.daemonsets, self.deployments, self.namespaces)
        for informer in informers:
            informer.start()
        for informer in informers:
            if not informer.synced.wait(timeout_s):
                raise RuntimeError(f"{informer.kind} informer did not sync")
        self.ds_controller.start()
        self.deploy_controller.start()

    def stop(self) -> None:
        self.ds_controller.stop()
        self.deploy_controller.stop()
        for informer in (self.namespaces, self.deployments, self.daemonsets, self.pods, self.nodes):
            informer.stop()

