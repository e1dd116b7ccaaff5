"""The verbs (create, update, patch, apply, delete, list) on top of the store, with defaulting, validation,
admission, managedFields, status subresources, graceful deletion and garbage collection."""

from __future__ import annotations

import contextlib
import copy
import datetime
import ipaddress
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml

from . import admission, apply, defaults, errors, patch, validation
from .errors import ApiError
from .resources import Registry, ResourceDef
from .store import Store

WORKLOAD_KINDS = {"DaemonSet", "Deployment", "ReplicaSet"}
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml",
               "application/strategic-merge-patch+json"]
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339(offset_s: float = 0) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


@dataclass
class WriteResult:
    obj: dict[str, Any]
    code: int = 200
    warnings: list[str] = field(default_factory=list)


@dataclass
class WriteOptions:
    manager: str
    dry_run: bool = False
    subresource: str = ""
    force: bool = False


def _strip_for_compare(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the parts a no-op write may legitimately change (timestamps of managers, rv)."""
    o = copy.deepcopy(obj)
    meta = o.get("metadata") or {}
    meta.pop("resourceVersion", None)
    for e in meta.get("managedFields") or []:
        e.pop("time", None)
    return o


class Api:
    def __init__(self, store: Store, registry: Registry, ca_pem: str, grace_slack_s: float = 0.0) -> None:
        self.store = store
        self.registry = registry
        self.ca_pem = ca_pem
        self.grace_slack_s = grace_slack_s
        self._stop = threading.Event()
        self._reaper: Optional[threading.Thread] = None
        self._ip_counter = 10
        self._reaped_rv = -1
        self._deletions_pending = False
        # Serialises read-modify-write sequences; the store lock alone only covers single operations.
        self.write_lock = threading.RLock()

    # --- lifecycle ---------------------------------------------------------------------------------

    def bootstrap(self) -> None:
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.registry.by_key("namespaces"), "", {"apiVersion": "v1", "kind": "Namespace",
                                                                    "metadata": {"name": ns}},
                        WriteOptions("kube-apiserver"))
        svc = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kubernetes", "namespace": "default",
                            "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443}], "clusterIP": "10.96.0.1"}}
        self.create(self.registry.by_key("services"), "default", svc, WriteOptions("kube-apiserver"))

    def start_reaper(self, interval_s: float = 0.2) -> None:
        self._reaper = threading.Thread(target=self._reap_loop, args=(interval_s,), name="sim-gc", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=10)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, rd: ResourceDef, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rd.key, ns if rd.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rd, name)
        return obj

    def list_objects(self, rd: ResourceDef, ns: Optional[str], matcher: Callable[[dict[str, Any]], bool],
             limit: int = 0, cont: str = "") -> dict[str, Any]:
        items, rv = self.store.list_objects(rd.key, ns if rd.namespaced else None)
        items = [o for o in items if matcher(o)]
        start_after: Optional[list[str]] = None
        if cont:
            try:
                start_after = json.loads(bytes.fromhex(cont).decode())["start"]
            except (ValueError, KeyError):
                raise errors.bad_request("continue key is not valid: illegal base64 data") from None
        if start_after is not None:
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start_after]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = json.dumps({"start": [last.get("namespace", ""), last["name"]]}).encode().hex()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for o in items:
            # Items of a built-in list carry no TypeMeta, as the real server encodes them.
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return {"kind": rd.list_kind, "apiVersion": rd.api_version, "metadata": meta, "items": items}

    # --- helpers ---------------------------------------------------------------------------------

    def _namespace(self, ns: str) -> Optional[dict[str, Any]]:
        return self.store.get("namespaces", "", ns)

    def _check_namespace_for_create(self, rd: ResourceDef, ns: str, name: str) -> dict[str, Any]:
        nso = self._namespace(ns)
        if nso is None:
            raise errors.namespace_not_found(ns)
        if (nso.get("metadata") or {}).get("deletionTimestamp"):
            msg = f"unable to create new content in namespace {ns} because it is being terminated"
            err = errors.forbidden(rd, name, msg)
            assert err.details is not None
            err.details["causes"] = [{"reason": "NamespaceTerminating", "message": msg, "field": "metadata.namespace"}]
            raise err
        return nso

    def _admit(self, rd: ResourceDef, ns: str, obj: dict[str, Any]) -> list[str]:
        if not rd.namespaced or rd.kind not in ("Pod", *WORKLOAD_KINDS):
            return []
        nso = self._namespace(ns) or {}
        labels = (nso.get("metadata") or {}).get("labels") or {}
        reject, warnings = admission.check(rd.kind, obj, labels)
        if reject:
            raise errors.forbidden(rd, obj["metadata"]["name"], reject)
        return warnings

    def _validate(self, rd: ResourceDef, obj: dict[str, Any], old: Optional[dict[str, Any]]) -> None:
        errs = validation.validate(rd.kind, obj, old)
        if errs:
            raise errors.invalid(rd, obj.get("metadata", {}).get("name", ""), errs)

    def _check_body(self, rd: ResourceDef, ns: str, body: Any, url_name: Optional[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the object provided is unrecognized (must be of type " + rd.kind + ")")
        kind = body.get("kind")
        if kind and kind != rd.kind:
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {rd.kind}): "
                                     f"kind {kind} does not match")
        api_version = body.get("apiVersion")
        if api_version and api_version != rd.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected "
                                     f"API version ({rd.api_version})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if rd.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if url_name is not None and meta.get("name") and meta["name"] != url_name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                     f"({url_name})")
        if url_name is not None:
            meta["name"] = url_name
        body["kind"] = rd.kind
        body["apiVersion"] = rd.api_version
        return body

    def _initial_status(self, rd: ResourceDef, obj: dict[str, Any]) -> None:
        """PrepareForCreate: the status a client sends on create is dropped, as the real strategies do."""
        k = rd.kind
        if k == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}
        elif k == "DaemonSet":
            obj["status"] = {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
                             "numberReady": 0}
        elif k in ("Deployment", "ReplicaSet"):
            obj["status"] = {"replicas": 0} if k == "ReplicaSet" else {}
        elif k == "Namespace":
            obj["status"] = {"phase": "Active"}
        elif k == "Service":
            obj["status"] = {"loadBalancer": {}}

    def _allocate_cluster_ip(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            with self.write_lock:
                self._ip_counter += 1
                spec["clusterIP"] = str(ipaddress.ip_address("10.96.0.0") + self._ip_counter)
        spec.setdefault("clusterIPs", [spec["clusterIP"]])

    # --- create -----------------------------------------------------------------------------------

    def create(self, rd: ResourceDef, ns: str, body: Any, opts: WriteOptions,
               managed: Optional[Callable[[dict[str, Any]], None]] = None) -> WriteResult:
        """POST. ``managed`` (used by apply) sets managedFields instead of the Update bookkeeping."""
        with self.write_lock:
            obj = self._check_body(rd, ns, copy.deepcopy(body), None)
            meta = obj["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            name = meta.get("name") or ""
            if rd.namespaced:
                self._check_namespace_for_create(rd, ns, name)
            for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "selfLink", "generation"):
                meta.pop(k, None)
            if rd.kind != "Node":
                self._initial_status(rd, obj)
            defaults.apply_defaults(rd.kind, obj)
            self._validate(rd, obj, None)
            if self.store.get(rd.key, ns if rd.namespaced else "", name) is not None:
                raise errors.already_exists(rd, name)
            warnings = self._admit(rd, ns, obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rd.kind in WORKLOAD_KINDS:
                meta["generation"] = 1
            if rd.kind == "Service":
                self._allocate_cluster_ip(obj)
            if managed is not None:
                managed(obj)
            else:
                meta.pop("managedFields", None)
                apply.record_update(None, obj, opts.manager, rd.api_version, rd.kind)
            if opts.dry_run:
                return WriteResult(obj, 201, warnings)
            stored = self.store.put(rd.key, obj, "ADDED")
            if rd.kind == "Namespace":
                self._populate_namespace(name)
            return WriteResult(stored, 201, warnings)

    def _populate_namespace(self, ns: str) -> None:
        """What the service-account and root-CA controllers add to every new namespace."""
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                                                      "annotations": {
                                                                          "kubernetes.io/description":
                                                                              "Contains a CA bundle that can be used "
                                                                              "to verify the kube-apiserver when "
                                                                              "using internal endpoints such as the "
                                                                              "internal service IP or "
                                                                              "kubernetes.default.svc. No other "
                                                                              "usage is guaranteed across "
                                                                              "distributions of Kubernetes "
                                                                              "clusters."}},
              "data": {"ca.crt": self.ca_pem}}
        for key, obj, mgr in (("serviceaccounts", sa, "kube-controller-manager"),
                              ("configmaps", cm, "kube-controller-manager")):
            with contextlib.suppress(ApiError):  # already there (created by a client first)
                self.create(self.registry.by_key(key), ns, obj, WriteOptions(mgr))

    # --- update / patch / apply ----------------------------------------------------------------------

    def _commit_update(self, rd: ResourceDef, old: dict[str, Any], new: dict[str, Any], opts: WriteOptions,
                       apply_managed: bool) -> WriteResult:
        """Shared tail of PUT, PATCH and apply on an existing object."""
        ns = old["metadata"].get("namespace", "")
        name = old["metadata"]["name"]
        meta = new.setdefault("metadata", {})
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rd, name)
        if opts.subresource == "status":
            # Status writes change only status (metadata kept as ResetObjectMetaForStatus does).
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if apply_managed:
                new["metadata"]["managedFields"] = meta.get("managedFields", [])
            meta = new["metadata"]
        else:
            if rd.has_status():
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            meta["name"] = name
            if rd.namespaced:
                meta["namespace"] = ns
            new["kind"] = rd.kind
            new["apiVersion"] = rd.api_version
            defaults.apply_defaults(rd.kind, new)
            if rd.kind == "Service":
                self._allocate_cluster_ip(new)
            if rd.kind in WORKLOAD_KINDS and new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self._validate(rd, new, old)
        # Pod Security ignores status writes and pod updates that leave the spec alone (e.g. label changes).
        spec_unchanged = rd.kind == "Pod" and new.get("spec") == old.get("spec")
        warnings = self._admit(rd, ns, new) if opts.subresource == "" and not spec_unchanged else []
        if not apply_managed:
            meta["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields") or [])
            apply.record_update(old, new, opts.manager, rd.api_version, rd.kind, opts.subresource)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _strip_for_compare(new) == _strip_for_compare(old):
            return WriteResult(old, 200, warnings)  # no-op: nothing written, resourceVersion unchanged
        if opts.dry_run:
            return WriteResult(new, 200, warnings)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rd.kind != "Pod":
            final = self.store.remove(rd.key, ns, name)
            return WriteResult(final or new, 200, warnings)
        stored = self.store.put(rd.key, new, "MODIFIED")
        return WriteResult(stored, 200, warnings)

    def update(self, rd: ResourceDef, ns: str, name: str, body: Any, opts: WriteOptions) -> WriteResult:
        with self.write_lock:
            new = self._check_body(rd, ns, copy.deepcopy(body), name)
            old = self.store.get(rd.key, ns if rd.namespaced else "", name)
            if old is None:
                raise errors.not_found(rd, name)
            new["metadata"].pop("managedFields", None)
            return self._commit_update(rd, old, new, opts, False)

    def patch(self, rd: ResourceDef, ns: str, name: str, content_type: str, raw: bytes,
              opts: WriteOptions) -> WriteResult:
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(content_type, PATCH_TYPES)
        if content_type == "application/apply-patch+yaml":
            return self.apply(rd, ns, name, raw, opts)
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise errors.bad_request(f"error decoding patch: {e}") from None
        with self.write_lock:
            old = self.store.get(rd.key, ns if rd.namespaced else "", name)
            if old is None:
                raise errors.not_found(rd, name)
            if content_type == "application/json-patch+json":
                new = patch.json_patch(old, body)
            elif content_type == "application/merge-patch+json":
                new = patch.merge_patch(old, body)
            else:
                new = patch.strategic_merge_patch(old, body)
            if not isinstance(new, dict):
                raise errors.bad_request("the patch produced an object that is not a JSON object")
            new = self._check_body(rd, ns, new, name)
            return self._commit_update(rd, old, new, opts, False)

    def apply(self, rd: ResourceDef, ns: str, name: str, raw: bytes, opts: WriteOptions) -> WriteResult:
        if not opts.manager:
            raise errors.bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is "
                                     "required for apply requests")
        try:
            cfg = yaml.safe_load(raw.decode("utf-8") if raw else "")
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise errors.bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(cfg, dict):
            raise errors.bad_request("error decoding YAML: the apply configuration must be an object")
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise errors.bad_request("invalid object type: /, Kind=")
        cfg = self._check_body(rd, ns, cfg, name)
        if cfg["metadata"].get("managedFields"):
            raise errors.bad_request("metadata.managedFields must be nil")
        dup = apply.first_duplicate(apply.drop_nulls(cfg), rd.kind)
        if dup is not None:
            # What the real server answers when the applied object cannot be made a typed value.
            gvk = f"{rd.api_version}, Kind={rd.kind}" if rd.group else f"/{rd.version}, Kind={rd.kind}"
            text = (f"failed to create typed patch object ({gvk}): {apply.path_string(dup[0])}: duplicate entries "
                    f"for key {apply.path_string((dup[1],))}")
            raise ApiError(500, "InternalError", f"Internal error occurred: {text}", {"causes": [{"message": text}]})
        with self.write_lock:
            old = self.store.get(rd.key, ns if rd.namespaced else "", name)
            try:
                if old is None:
                    if opts.subresource:
                        raise errors.not_found(rd, name)

                    def managed(obj: dict[str, Any]) -> None:
                        merged = apply.server_side_apply(None, cfg, opts.manager, opts.force, rd.api_version,
                                                         rd.kind)
                        obj.setdefault("metadata", {})["managedFields"] = merged["metadata"].get("managedFields", [])

                    # create-on-apply: the applied configuration is the object (after defaulting)
                    res = self.create(rd, ns, apply.drop_nulls(cfg), opts, managed=managed)
                    return res
                merged = apply.server_side_apply(old, cfg, opts.manager, opts.force, rd.api_version, rd.kind,
                                                 opts.subresource)
            except apply.ApplyConflict as c:
                raise ApiError(409, "Conflict", c.message(), {"causes": c.causes()} | _details(rd, name)) from None
            merged["metadata"].pop("resourceVersion", None)
            if cfg["metadata"].get("resourceVersion"):
                merged["metadata"]["resourceVersion"] = cfg["metadata"]["resourceVersion"]
            return self._commit_update(rd, old, merged, opts, True)

    # --- delete / garbage collection -------------------------------------------------------------

    def delete(self, rd: ResourceDef, ns: str, name: str, options: dict[str, Any], dry_run: bool) -> WriteResult:
        with self.write_lock:
            key_ns = ns if rd.namespaced else ""
            obj = self.store.get(rd.key, key_ns, name)
            if obj is None:
                raise errors.not_found(rd, name)
            meta = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict_message(rd, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                                        f"UID in object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise errors.conflict_message(rd, name, "Precondition failed: ResourceVersion in precondition: "
                                                        f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                                        f"{meta.get('resourceVersion')}")
            policy = options.get("propagationPolicy") or (
                "Orphan" if options.get("orphanDependents") is True else "Background")
            if rd.kind == "Namespace":
                return self._delete_namespace(rd, obj, dry_run)
            if rd.kind == "Pod" and self._graceful(obj):
                return self._delete_pod_gracefully(rd, obj, options.get("gracePeriodSeconds"), dry_run)
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if finalizers:
                if dry_run:
                    return WriteResult(obj)
                if meta.get("deletionTimestamp"):
                    return WriteResult(obj)
                meta["finalizers"] = finalizers
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
                if "generation" in meta:
                    meta["generation"] = int(meta["generation"]) + 1
                return WriteResult(self.store.put(rd.key, obj, "MODIFIED"))
            if dry_run:
                return WriteResult(self._deleted_result(rd, obj))
            if policy == "Orphan":
                self._orphan_dependents(meta.get("uid", ""))
            final = self.store.remove(rd.key, key_ns, name)
            return WriteResult(self._deleted_result(rd, final or obj))

    def _deleted_result(self, rd: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        if rd.kind == "Pod":
            return obj  # the pod registry returns the deleted object; the others a Success Status
        details = {"name": obj["metadata"]["name"], "kind": rd.plural, "uid": obj["metadata"].get("uid")}
        if rd.group:
            details["group"] = rd.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _graceful(self, pod: dict[str, Any]) -> bool:
        phase = (pod.get("status") or {}).get("phase")
        return bool((pod.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed")

    def _delete_pod_gracefully(self, rd: ResourceDef, pod: dict[str, Any], grace: Any,
                               dry_run: bool) -> WriteResult:
        meta = pod["metadata"]
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        grace = max(0, int(grace))
        if grace == 0:
            if dry_run:
                return WriteResult(pod)
            final = self.store.remove(rd.key, meta["namespace"], meta["name"])
            return WriteResult(final or pod)
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and int(current) <= grace:
            return WriteResult(pod)  # a longer grace never extends a pending deletion
        meta["deletionTimestamp"] = now_rfc3339(grace)
        meta["deletionGracePeriodSeconds"] = grace
        if dry_run:
            return WriteResult(pod)
        return WriteResult(self.store.put(rd.key, pod, "MODIFIED"))

    def _delete_namespace(self, rd: ResourceDef, obj: dict[str, Any], dry_run: bool) -> WriteResult:
        meta = obj["metadata"]
        if dry_run or meta.get("deletionTimestamp"):
            return WriteResult(obj)
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        return WriteResult(self.store.put(rd.key, obj, "MODIFIED"))

    def _orphan_dependents(self, owner_uid: str) -> None:
        for rd in self.registry.defs:
            items, _ = self.store.list_objects(rd.key)
            for o in items:
                refs = o["metadata"].get("ownerReferences") or []
                keep = [r for r in refs if r.get("uid") != owner_uid]
                if len(keep) != len(refs):
                    if keep:
                        o["metadata"]["ownerReferences"] = keep
                    else:
                        o["metadata"].pop("ownerReferences", None)
                    self.store.put(rd.key, o, "MODIFIED")

    def _reap_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.reap_once()
            except Exception as e:  # keep collecting; a bug here must not kill the server silently
                print(f"simcluster apiserver: gc error: {e!r}", flush=True)

    def reap_once(self) -> None:
        """One pass of the garbage collector, namespace controller and expired graceful deletions.

        Skipped while nothing changed and no deletion is pending, to keep an idle server off the shared CPUs.
        """
        with self.write_lock:
            if self.store.rv == self._reaped_rv and not self._deletions_pending:
                return
            self._reaped_rv = self.store.rv
            self._deletions_pending = False
            everything: list[tuple[ResourceDef, dict[str, Any]]] = []
            for rd in self.registry.defs:
                if rd.virtual:
                    continue
                items, _ = self.store.list_objects(rd.key)
                everything += [(rd, o) for o in items]
            alive = {o["metadata"].get("uid") for _, o in everything}
            foreground = {o["metadata"].get("uid") for _, o in everything
                          if "foregroundDeletion" in (o["metadata"].get("finalizers") or [])}
            terminating_ns = {o["metadata"]["name"] for rd, o in everything
                              if rd.kind == "Namespace" and o["metadata"].get("deletionTimestamp")}
            dependents_of: dict[str, int] = {}
            now = time.time()
            for rd, o in everything:
                meta = o["metadata"]
                ns = meta.get("namespace", "")
                refs = meta.get("ownerReferences") or []
                for r in refs:
                    dependents_of[r.get("uid", "")] = dependents_of.get(r.get("uid", ""), 0) + 1
                if meta.get("deletionTimestamp"):
                    self._deletions_pending = True
                if rd.kind == "Pod" and meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds"):
                    if parse_rfc3339(meta["deletionTimestamp"]) + self.grace_slack_s <= now:
                        self.store.remove(rd.key, ns, meta["name"])
                    continue
                if meta.get("deletionTimestamp"):
                    continue
                if rd.namespaced and ns in terminating_ns:
                    self._try_delete(rd, o, {})
                    continue
                if refs and (all(r.get("uid") not in alive for r in refs)
                             or any(r.get("uid") in foreground for r in refs)):
                    self._try_delete(rd, o, {"propagationPolicy": "Background"})
            for rd, o in everything:
                meta = o["metadata"]
                if "foregroundDeletion" in (meta.get("finalizers") or []) and not dependents_of.get(meta.get("uid")):
                    self._remove_finalizer(rd, o, "foregroundDeletion")
                if rd.kind == "Namespace" and meta["name"] in terminating_ns and not any(
                        r.namespaced and o2["metadata"].get("namespace") == meta["name"] for r, o2 in everything):
                    self.store.remove(rd.key, "", meta["name"])

    def _try_delete(self, rd: ResourceDef, o: dict[str, Any], options: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):  # already gone or blocked: the next pass looks again
            self.delete(rd, o["metadata"].get("namespace", ""), o["metadata"]["name"], options, False)

    def _remove_finalizer(self, rd: ResourceDef, o: dict[str, Any], fin: str) -> None:
        meta = o["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != fin]
        if not meta["finalizers"]:
            meta.pop("finalizers")
            if meta.get("deletionTimestamp"):
                self.store.remove(rd.key, meta.get("namespace", ""), meta["name"])
                return
        self.store.put(rd.key, o, "MODIFIED")


def _details(rd: ResourceDef, name: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": rd.plural}
    if rd.group:
        d["group"] = rd.group
    return d


def _qos_class(spec: dict[str, Any]) -> str:
    reqs, lims, any_set = [], [], False
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = (c or {}).get("resources") or {}
        if res.get("requests") or res.get("limits"):
            any_set = True
        reqs.append(res.get("requests") or {})
        lims.append(res.get("limits") or {})
    if not any_set:
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and (not req or req == {k: lim[k] for k in req})
        for req, lim in zip(reqs, lims))
    return "Guaranteed" if guaranteed else "Burstable"
