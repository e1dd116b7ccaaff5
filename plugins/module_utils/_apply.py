# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate, plan and apply (or delete) the objects of one instance.

The pure functions at the top decide; ``Applier`` at the bottom talks to the cluster through ``_cluster.Cluster``.
Everything that can fail is checked before the first write: object shapes, kinds known to the server, the
namespace and its Pod Security level, the pull secret, and a server dry-run of every object (which also
surfaces RBAC denials and field-manager conflicts).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import (
    Cluster,
    ResourceInfo,
    WatchExpiredError,
    WatchInterruptedError,
    object_target,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    MissingSecretError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._nodelabels import node_label_key

NAME_LABEL = "app.kubernetes.io/name"
NAME_VALUE = "image-prefetcher"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "stackrox.prefetch"
# On the cluster-scoped objects: the namespace of the instance that owns them (their names carry no namespace).
NAMESPACE_LABEL = "prefetch.stackrox.io/namespace"
PSA_PREFIX = "pod-security.kubernetes.io/"
PSA_ENFORCE = PSA_PREFIX + "enforce"
# Both levels forbid hostPath volumes (and privileged containers), which the DaemonSet needs for the CRI socket.
PSA_REJECTING_LEVELS = ("baseline", "restricted")
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
REDACTED = "VALUE_REDACTED"

# Every kind the render can produce, in the order they are applied (deletion runs in reverse).
INSTANCE_KINDS: list[tuple[str, str]] = [
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    # Before the workloads, so no pod it selects ever runs unprotected; deleted after them.
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
]
# Created by the agents at run time (parallel_nodes: the node-slot Leases), never rendered: state=absent removes them,
# pruning on state=present leaves them alone (a running agent may hold one).
RUNTIME_KINDS: list[tuple[str, str]] = [("coordination.k8s.io/v1", "Lease")]
_KIND_RANK = {kind: rank for rank, (_api_version, kind) in enumerate(INSTANCE_KINDS)}
_WORKLOAD_KINDS = ("DaemonSet", "Deployment")
_NOISE_METADATA = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid", "selfLink")
# Written by the server itself; it moves only when the template moves, which the spec comparison already sees.
_NOISE_ANNOTATIONS = ("deprecated.daemonset.template.generation",)


@dataclass(frozen=True)
class Instance:
    name: str
    namespace: str


# --- object shape and instance identity (pure) ---------------------------------------------------------------------


def _describe(index: int, obj: Any) -> str:
    if isinstance(obj, dict):
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
        return f"objects[{index}] ({obj.get('kind', '?')} {name or '?'})"
    return f"objects[{index}]"


def validate_object_shapes(objects: list[Any]) -> None:
    """Each object is a mapping with apiVersion, kind and metadata.name strings."""
    for index, obj in enumerate(objects):
        where = _describe(index, obj)
        if not isinstance(obj, dict):
            raise ValidationError(f"{where}: every object must be a mapping, got {type(obj).__name__}")
        for key in ("apiVersion", "kind"):
            if not isinstance(obj.get(key), str) or not obj[key]:
                raise ValidationError(f"{where}: {key} must be a non-empty string")
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
            raise ValidationError(f"{where}: metadata.name must be a non-empty string")
        labels = metadata.get("labels", {})
        if not isinstance(labels, dict):
            raise ValidationError(f"{where}: metadata.labels must be a mapping")


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _check_instance_labels(index: int, obj: dict[str, Any]) -> str:
    labels = _labels(obj)
    expected = {NAME_LABEL: NAME_VALUE, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    for key, value in expected.items():
        if labels.get(key) != value:
            raise ValidationError(
                f"{_describe(index, obj)}: label {key}={value} is missing; apply manages only the objects "
                "rendered by stackrox.prefetch.manifest (state=absent finds them by these labels)"
            )
    instance = labels.get(INSTANCE_LABEL)
    if not isinstance(instance, str) or not instance:
        raise ValidationError(f"{_describe(index, obj)}: label {INSTANCE_LABEL} is missing")
    return instance


def _single(values: set[str], what: str, given: Optional[str]) -> Optional[str]:
    if len(values) > 1:
        raise ValidationError(f"the objects belong to more than one {what}: {', '.join(sorted(values))}")
    found = next(iter(values), None)
    if given and found and given != found:
        raise ValidationError(f"{what} {given!r} does not match the objects' {what} {found!r}")
    return given or found


def resolve_instance(objects: list[dict[str, Any]], name: Optional[str], namespace: Optional[str]) -> Instance:
    """The instance the objects belong to; ``name``/``namespace`` must agree with them when given."""
    instances = {_check_instance_labels(index, obj) for index, obj in enumerate(objects)}
    namespaces = {str(obj["metadata"]["namespace"]) for obj in objects if obj["metadata"].get("namespace")}
    resolved_name = _single(instances, "instance name", name)
    resolved_namespace = _single(namespaces, "namespace", namespace)
    if not resolved_name:
        raise ValidationError("name is required when no objects are given")
    if not resolved_namespace:
        raise ValidationError(f"namespace is required: no object of instance {resolved_name} names one")
    return Instance(resolved_name, resolved_namespace)


def instance_selector(name: str) -> str:
    """The label selector that finds every object of an instance (DESIGN.md "Rendered objects")."""
    return f"{NAME_LABEL}={NAME_VALUE},{INSTANCE_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


def foreign_namespace(obj: dict[str, Any], namespace: str) -> Optional[str]:
    """The other namespace a cluster-scoped object belongs to, or None when it is ``namespace``'s (or unknown).

    The owner is the namespace label; a binding whose ServiceAccount subject is elsewhere belongs there too
    (also for objects made before the label existed).
    """
    owner = _labels(obj).get(NAMESPACE_LABEL)
    if owner and owner != namespace:
        return str(owner)
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and subject.get("kind") == "ServiceAccount":
            subject_namespace = subject.get("namespace")
            if subject_namespace and subject_namespace != namespace:
                return str(subject_namespace)
    return None


def check_cluster_scoped_owner(live: dict[str, Any], kind: str, instance: Instance) -> None:
    """Fail when a cluster-scoped object of the instance's name belongs to the same name in another namespace."""
    other = foreign_namespace(live, instance.namespace)
    if other is not None:
        name = (live.get("metadata") or {}).get("name", "?")
        raise ValidationError(
            f"{kind} {name} belongs to instance {instance.name} in namespace {other}, not namespace "
            f"{instance.namespace}: cluster-scoped objects are named after the instance alone, so two instances "
            f"of one name cannot live in two namespaces; choose another instance name for namespace "
            f"{instance.namespace}"
        )


def place_object(obj: dict[str, Any], info: ResourceInfo, namespace: str) -> dict[str, Any]:
    """A copy with the instance namespace on namespaced objects and none on cluster-scoped ones."""
    placed = copy.deepcopy(obj)
    metadata = placed["metadata"]
    if info.namespaced:
        metadata["namespace"] = metadata.get("namespace") or namespace
    else:
        metadata.pop("namespace", None)
    return placed


def apply_order(pairs: list[tuple[dict[str, Any], ResourceInfo]]) -> list[tuple[dict[str, Any], ResourceInfo]]:
    """RBAC and config before the workloads that use them; unknown kinds keep their place after the known ones."""
    return sorted(pairs, key=lambda pair: _KIND_RANK.get(pair[1].kind, len(_KIND_RANK)))


# --- Pod Security, pull secret, namespace (pure) -----------------------------------------------------------------


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj.get("kind") in _WORKLOAD_KINDS:
            spec = (((obj.get("spec") or {}).get("template") or {}).get("spec")) or {}
            specs.append((obj, spec))
    return specs


def needs_privileged_pods(objects: list[dict[str, Any]]) -> bool:
    """True when a workload mounts a hostPath or runs a privileged container (both need PSA level privileged)."""
    for _workload, spec in _pod_specs(objects):
        if any("hostPath" in (volume or {}) for volume in spec.get("volumes") or []):
            return True
        containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
        if any(((c or {}).get("securityContext") or {}).get("privileged") for c in containers):
            return True
    return False


def check_pod_security(namespace_obj: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """Fail before any write when the namespace's enforced Pod Security level would reject the pods."""
    name = (namespace_obj.get("metadata") or {}).get("name", "?")
    level = _labels(namespace_obj).get(PSA_ENFORCE)
    if level in PSA_REJECTING_LEVELS and needs_privileged_pods(objects):
        raise ValidationError(
            f"namespace {name} enforces Pod Security level {level!r} ({PSA_ENFORCE}={level}), which rejects the "
            "prefetch pods: they mount the CRI socket with a hostPath volume; label the namespace "
            f"{PSA_ENFORCE}=privileged or use another namespace (create_namespace: true labels a new one)"
        )


def referenced_secrets(objects: list[dict[str, Any]]) -> list[str]:
    """Secrets the pods need to start: non-optional secret volumes and imagePullSecrets, in first-seen order."""
    names: list[str] = []
    for _workload, spec in _pod_specs(objects):
        for volume in spec.get("volumes") or []:
            secret = (volume or {}).get("secret")
            if isinstance(secret, dict) and secret.get("secretName") and not secret.get("optional"):
                names.append(str(secret["secretName"]))
        for reference in spec.get("imagePullSecrets") or []:
            if isinstance(reference, dict) and reference.get("name"):
                names.append(str(reference["name"]))
    return list(dict.fromkeys(names))


def check_secret_type(name: str, namespace: str, secret_type: Optional[str], exists: bool) -> None:
    """The pull secret must exist and be a dockerconfigjson secret (the agent reads .dockerconfigjson)."""
    if not exists:
        raise MissingSecretError(
            f"pull secret {namespace}/{name} does not exist; create it (type {DOCKERCONFIGJSON}) before applying"
        )
    if secret_type != DOCKERCONFIGJSON:
        raise MissingSecretError(
            f"pull secret {namespace}/{name} has type {secret_type or 'Opaque'!r}, expected {DOCKERCONFIGJSON!r} "
            "(create it with kubectl create secret docker-registry)"
        )


def namespace_manifest(namespace: str) -> dict[str, Any]:
    """A new namespace that admits the prefetch pods (Pod Security level privileged, also for audit/warn)."""
    labels = {PSA_PREFIX + mode: "privileged" for mode in ("enforce", "audit", "warn")}
    labels[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}


# --- comparing, diffing, reporting (pure) --------------------------------------------------------------------------


def comparable(obj: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The object without what the server changes on its own (resourceVersion, managedFields, status, ...)."""
    if not obj:
        return {}
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    metadata = clean.get("metadata") or {}
    for key in _NOISE_METADATA:
        metadata.pop(key, None)
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        for key in _NOISE_ANNOTATIONS:
            annotations.pop(key, None)
        if not annotations:
            metadata.pop("annotations", None)
    return clean


def plan_action(live: Optional[dict[str, Any]], after: dict[str, Any]) -> str:
    """created / updated / unchanged, comparing the live object with the server's dry-run result."""
    if live is None:
        return "created"
    return "unchanged" if comparable(live) == comparable(after) else "updated"


def redact(obj: dict[str, Any]) -> dict[str, Any]:
    """Secret-like objects with every value of data/stringData replaced; other objects unchanged."""
    if obj.get("kind") != "Secret":
        return obj
    redacted = copy.deepcopy(obj)
    for key in ("data", "stringData"):
        if isinstance(redacted.get(key), dict):
            redacted[key] = {item: REDACTED for item in redacted[key]}
    annotations = (redacted.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = REDACTED
    return redacted


def object_diff(target: str, before: Optional[dict[str, Any]], after: Optional[dict[str, Any]]) -> dict[str, Any]:
    return {
        "before_header": target,
        "after_header": target,
        "before": redact(comparable(before)),
        "after": redact(comparable(after)),
    }


def result_entry(obj: dict[str, Any], action: str) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    return {
        "kind": obj.get("kind"),
        "apiVersion": obj.get("apiVersion"),
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "action": action,
    }


def _key(info: ResourceInfo, obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return (info.kind, str(metadata.get("name")), str(metadata.get("namespace") or ""))


def _target_of(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return object_target(str(obj.get("kind")), str(metadata.get("name")), metadata.get("namespace"))


_PLANNED_WORDS = {"created": "to be created", "updated": "to be updated", "deleted": "to be deleted"}
_REPORT_LIMIT = 12


def _entry_target(entry: dict[str, Any]) -> str:
    return object_target(str(entry.get("kind")), str(entry.get("name")), entry.get("namespace"))


def _listed(parts: list[str]) -> str:
    shown = ", ".join(parts[:_REPORT_LIMIT])
    return shown + (f" and {len(parts) - _REPORT_LIMIT} more" if len(parts) > _REPORT_LIMIT else "")


def not_written_entries(pending: list[dict[str, Any]], error: str, outcome_unknown: bool) -> list[dict[str, Any]]:
    """The planned writes that were not done, in order; the first is the one that failed (``error``), and
    ``maybe_done`` says when its request may have taken effect all the same."""
    entries = []
    for index, entry in enumerate(pending):
        item = dict(entry)
        item["error"] = error if index == 0 else None
        item["maybe_done"] = bool(index == 0 and outcome_unknown)
        entries.append(item)
    return entries


def write_report(done: list[dict[str, Any]], not_written: list[dict[str, Any]], check_mode: bool) -> str:
    """What a failed apply did and did not write, for the end of its message (DESIGN.md "API faults and retries");
    "" when there is nothing to say: check mode, or a failure before the writes were planned (every check comes
    before the first write, so nothing was written)."""
    written = [f"{_entry_target(e)} ({e['action']})" for e in done if e["action"] in ("created", "updated", "deleted")]
    missing = []
    for entry in not_written:
        word = _PLANNED_WORDS.get(str(entry["action"]), str(entry["action"]))
        if entry.get("maybe_done"):
            word += f", maybe {entry['action']} all the same: the request may have reached the server"
        missing.append(f"{_entry_target(entry)} ({word})")
    if check_mode or (not written and not missing):
        return ""
    parts = [f"written: {_listed(written)}" if written else "nothing was written"]
    if missing:
        parts.append(f"not written: {_listed(missing)}")
    parts.append("run the task again to finish: it writes only what is missing or differs")
    return "; ".join(parts)


# --- talking to the cluster ------------------------------------------------------------------------------------


@dataclass
class _Planned:
    obj: dict[str, Any]
    info: ResourceInfo
    live: Optional[dict[str, Any]]
    after: dict[str, Any]
    action: str


@dataclass
class Applier:
    """Runs one apply; ``objects``, ``diffs`` and ``warnings`` hold what happened so far (also after an error)."""

    cluster: Cluster
    check_mode: bool = False
    diff_mode: bool = False
    force_conflicts: bool = False
    wait_timeout: float = 120.0
    clock: Callable[[], float] = time.monotonic
    objects: list[dict[str, Any]] = field(default_factory=list)
    diffs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The writes planned and not done yet, in order (result entries with the planned action): on a failure, what a
    # rerun still has to do.
    pending: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(entry["action"] in ("created", "updated", "deleted") for entry in self.objects)

    def _record(self, obj: dict[str, Any], action: str, before: Any = None, after: Any = None) -> None:
        entry = result_entry(obj, action)
        self.objects.append(entry)
        key = (entry["kind"], entry["name"], entry["namespace"])
        for index, planned in enumerate(self.pending):
            if (planned["kind"], planned["name"], planned["namespace"]) == key:
                del self.pending[index]
                break
        if self.diff_mode and action != "unchanged" and action != "absent":
            self.diffs.append(object_diff(_target_of(obj), before, after))

    def _plan_writes(self, entries: list[dict[str, Any]]) -> None:
        self.pending.extend(entry for entry in entries if entry["action"] in _PLANNED_WORDS)

    def failure_report(self, error: Exception) -> tuple[str, list[dict[str, Any]]]:
        """(the message's ending, the ``not_written`` entries) after ``error`` stopped the run."""
        not_written = [] if self.check_mode else not_written_entries(
            self.pending, str(error), bool(getattr(error, "outcome_unknown", False))
        )
        return write_report(self.objects, not_written, self.check_mode), not_written

    # -- state: present

    def present(self, objects: list[dict[str, Any]], instance: Instance, create_namespace: bool) -> None:
        pairs = [(obj, self.cluster.resource_for(obj["apiVersion"], obj["kind"])) for obj in objects]
        placed = apply_order([(place_object(obj, info, instance.namespace), info) for obj, info in pairs])
        placed_objects = [obj for obj, _info in placed]
        namespace_exists = self._check_namespace(instance.namespace, placed_objects, create_namespace)
        self._check_secrets(placed_objects, instance.namespace, namespace_exists)
        self._check_cluster_scoped_owners(placed, instance)
        plan = [self._plan(obj, info, namespace_exists) for obj, info in placed]
        stale = self._stale_objects(instance, placed, namespace_exists)
        if not namespace_exists:
            self._plan_writes([result_entry(namespace_manifest(instance.namespace), "created")])
        self._plan_writes([result_entry(planned.obj, planned.action) for planned in plan])
        self._plan_writes([result_entry(obj, "deleted") for obj, _info in reversed(apply_order(stale))])
        if not namespace_exists:
            self._create_namespace(instance.namespace)
        for planned in plan:
            self._execute(planned)
        # Objects no longer rendered go after the new ones are in place (the DaemonSet stops using them first).
        self._delete(stale)

    def _check_cluster_scoped_owners(
        self, placed: list[tuple[dict[str, Any], ResourceInfo]], instance: Instance
    ) -> None:
        for obj, info in placed:
            if not info.namespaced:
                live = self.cluster.get(info, obj["metadata"]["name"], None)
                if live is not None:
                    check_cluster_scoped_owner(live, info.kind, instance)

    def _stale_objects(
        self, instance: Instance, placed: list[tuple[dict[str, Any], ResourceInfo]], namespace_exists: bool
    ) -> list[tuple[dict[str, Any], ResourceInfo]]:
        """The instance's live objects (found as absent finds them) that the given objects no longer include."""
        wanted = {_key(info, obj) for obj, info in placed}
        found = self._find_instance_objects(instance, [], namespaced=namespace_exists)
        return [(obj, info) for obj, info in found if _key(info, obj) not in wanted]

    def _delete(self, pairs: list[tuple[dict[str, Any], ResourceInfo]]) -> None:
        """Delete in reverse apply order; check mode asks the server for a dry-run only."""
        for obj, info in reversed(apply_order(pairs)):
            metadata = obj["metadata"]
            deleted = self.cluster.delete(info, metadata["name"], metadata.get("namespace"), dry_run=self.check_mode)
            self._record(obj, "deleted" if deleted else "absent", obj, None)

    def _check_namespace(self, namespace: str, objects: list[dict[str, Any]], create_namespace: bool) -> bool:
        live = self.cluster.get(self.cluster.resource_for("v1", "Namespace"), namespace)
        if live is None:
            if not create_namespace:
                raise ValidationError(f"namespace {namespace} does not exist; set create_namespace: true to create it")
            return False
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            raise ValidationError(f"namespace {namespace} is being deleted; wait until it is gone or use another one")
        check_pod_security(live, objects)
        return True

    def _check_secrets(self, objects: list[dict[str, Any]], namespace: str, namespace_exists: bool) -> None:
        names = referenced_secrets(objects)
        if not names:
            return
        if not namespace_exists:
            raise MissingSecretError(
                f"pull secret {namespace}/{names[0]} cannot exist: namespace {namespace} does not exist yet; create "
                f"the namespace and the secret (type {DOCKERCONFIGJSON}) first"
            )
        info = self.cluster.resource_for("v1", "Secret")
        for name in names:
            secret = self.cluster.get(info, name, namespace)
            # Only existence and type are looked at; the secret's data is dropped right here.
            exists, secret_type = secret is not None, (secret or {}).get("type")
            secret = None
            check_secret_type(name, namespace, secret_type, exists=exists)

    def _plan(self, obj: dict[str, Any], info: ResourceInfo, namespace_exists: bool) -> _Planned:
        metadata = obj["metadata"]
        if info.namespaced and not namespace_exists:
            # Nothing can exist in a namespace that does not exist yet, and a dry-run there would fail.
            return _Planned(obj, info, None, obj, "created")
        live = self.cluster.get(info, metadata["name"], metadata.get("namespace"))
        after = self.cluster.apply(info, obj, dry_run=True, force=self.force_conflicts)
        return _Planned(obj, info, live, after, plan_action(live, after))

    def _create_namespace(self, namespace: str) -> None:
        manifest = namespace_manifest(namespace)
        after = manifest
        if not self.check_mode:
            after = self.cluster.apply(self.cluster.resource_for("v1", "Namespace"), manifest, False, False)
        self._record(manifest, "created", None, after)

    def _execute(self, planned: _Planned) -> None:
        after = planned.after
        if planned.action != "unchanged" and not self.check_mode:
            after = self.cluster.apply(planned.info, planned.obj, dry_run=False, force=self.force_conflicts)
        self._record(planned.obj, planned.action, planned.live, after)

    # -- state: absent

    def absent(self, instance: Instance, objects: list[dict[str, Any]], remove_node_labels: bool) -> None:
        found = self._find_instance_objects(instance, objects, runtime_kinds=True)
        # Workloads first, and their pods gone before the RBAC: a terminating agent still writes its node label.
        workloads = [(obj, info) for obj, info in found if info.kind in _WORKLOAD_KINDS]
        rest = [(obj, info) for obj, info in found if info.kind not in _WORKLOAD_KINDS]
        deadline = self.clock() + self.wait_timeout  # one bound for both waits
        self._plan_writes([result_entry(obj, "deleted") for obj, _info in reversed(apply_order(workloads))])
        self._plan_writes([result_entry(obj, "deleted") for obj, _info in reversed(apply_order(rest))])
        self._delete(workloads)
        if not self.check_mode:
            self._wait_for_deletion(instance, workloads, deadline, pods=True)
        self._delete(rest)
        for obj in self._missing_given_objects(objects, found, instance):
            self._record(obj, "absent")
        if not self.check_mode:
            self._wait_for_deletion(instance, rest, deadline, pods=False)
        if remove_node_labels:
            self._remove_node_labels(instance.name)

    def _kinds_to_search(self, objects: list[dict[str, Any]], runtime_kinds: bool = False) -> list[ResourceInfo]:
        searched = INSTANCE_KINDS + (RUNTIME_KINDS if runtime_kinds else [])
        kinds = list(dict.fromkeys(searched + [(obj["apiVersion"], obj["kind"]) for obj in objects]))
        infos = []
        for api_version, kind in kinds:
            try:
                infos.append(self.cluster.resource_for(api_version, kind))
            except NotFoundError:
                continue  # a kind the server does not serve has no objects to delete
        return infos

    def _find_instance_objects(
        self, instance: Instance, objects: list[dict[str, Any]], namespaced: bool = True, runtime_kinds: bool = False
    ) -> list[tuple[dict[str, Any], ResourceInfo]]:
        """The instance's objects: labelled ones in its namespace, cluster-scoped ones of its namespace, given ones.

        Cluster-scoped objects of the same instance name in another namespace (NAMESPACE_LABEL, or a binding's
        subject) are left alone.
        """
        found: dict[tuple[str, str, str], tuple[dict[str, Any], ResourceInfo]] = {}
        selector = instance_selector(instance.name)
        for info in self._kinds_to_search(objects, runtime_kinds):
            if info.namespaced and not namespaced:
                continue
            items, _version = self.cluster.list_objects(info, instance.namespace if info.namespaced else None, selector)
            for item in items:
                if not info.namespaced and foreign_namespace(item, instance.namespace) is not None:
                    continue
                item.setdefault("kind", info.kind)
                item.setdefault("apiVersion", info.api_version)
                found[_key(info, item)] = (item, info)
        for obj in objects:  # given objects are deleted by name even when someone removed their labels
            info = self.cluster.resource_for(obj["apiVersion"], obj["kind"])
            placed = place_object(obj, info, instance.namespace)
            key = (info.kind, placed["metadata"]["name"], placed["metadata"].get("namespace") or "")
            if key not in found:
                live = self.cluster.get(info, key[1], key[2] or None)
                if live is not None and (info.namespaced or foreign_namespace(live, instance.namespace) is None):
                    live.setdefault("kind", info.kind)
                    live.setdefault("apiVersion", info.api_version)
                    found[key] = (live, info)
        return list(found.values())

    def _missing_given_objects(
        self,
        objects: list[dict[str, Any]],
        found: list[tuple[dict[str, Any], ResourceInfo]],
        instance: Instance,
    ) -> list[dict[str, Any]]:
        present = {(info.kind, obj["metadata"]["name"]) for obj, info in found}
        missing = []
        for obj in objects:
            if (obj["kind"], obj["metadata"]["name"]) not in present:
                info = self.cluster.resource_for(obj["apiVersion"], obj["kind"])
                missing.append(place_object(obj, info, instance.namespace))
        return missing

    def _wait_for_deletion(
        self, instance: Instance, found: list[tuple[dict[str, Any], ResourceInfo]], deadline: float, pods: bool
    ) -> None:
        selector = instance_selector(instance.name)
        groups: dict[ResourceInfo, set[str]] = {}
        for obj, info in found:
            groups.setdefault(info, set()).add(obj["metadata"]["name"])
        for info, names in groups.items():
            namespace = instance.namespace if info.namespaced else None
            left = self._wait_until_gone(info, namespace, selector, names, deadline)
            if left:
                raise ClusterError(
                    f"timed out after {int(self.wait_timeout)}s waiting for the deletion of {info.kind} "
                    f"{', '.join(sorted(left))} (finalizers?)"
                )
        if not pods:
            return
        pod_info = self.cluster.resource_for("v1", "Pod")
        left = self._wait_until_gone(pod_info, instance.namespace, selector, None, deadline)
        if left:
            self.warnings.append(
                f"{len(left)} pod(s) of instance {instance.name} still terminating after "
                f"{int(self.wait_timeout)}s: {', '.join(sorted(left)[:10])}"
            )

    def _wait_until_gone(
        self,
        info: ResourceInfo,
        namespace: Optional[str],
        selector: str,
        names: Optional[set[str]],
        deadline: float,
    ) -> set[str]:
        """List, then watch DELETED events until none of ``names`` (all, when None) is left or the deadline passes."""
        while True:
            items, version = self.cluster.list_objects(info, namespace, selector)
            left = {item["metadata"]["name"] for item in items}
            if names is not None:
                left &= names
            remaining = deadline - self.clock()
            if not left or remaining <= 0:
                return left
            try:
                for event in self.cluster.watch(info, namespace, version, int(max(1, remaining)), selector):
                    if event.get("type") == "DELETED":
                        left.discard(((event.get("object") or {}).get("metadata") or {}).get("name"))
                    if not left or self.clock() >= deadline:
                        return left
            except (WatchExpiredError, WatchInterruptedError):
                continue  # resourceVersion too old, or the stream broke: list again
            if self.clock() >= deadline:
                return left

    def _remove_node_labels(self, instance_name: str) -> None:
        key = node_label_key(instance_name)
        info = self.cluster.resource_for("v1", "Node")
        nodes, _version = self.cluster.list_objects(info, None, key)
        for node in sorted(nodes, key=lambda item: item["metadata"]["name"]):
            name = node["metadata"]["name"]
            entry = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
            before = {"metadata": {"name": name, "labels": {key: _labels(node).get(key)}}}
            if not self.check_mode:
                # JSON merge patch with null removes just this label and leaves every other one alone.
                self.cluster.merge_patch(info, name, None, {"metadata": {"labels": {key: None}}})
            self._record(entry, "updated", before, {"metadata": {"name": name, "labels": {}}})
