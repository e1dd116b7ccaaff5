# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""apply: object validation, instance resolution, Pod Security and secret checks, planning/diffing, and the
Applier's order of calls against an in-memory fake of the API server (which records every write)."""

from __future__ import annotations

import copy
import json
from typing import Any, Optional, cast

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._apply import (
    INSTANCE_KINDS,
    PSA_ENFORCE,
    REDACTED,
    Applier,
    Instance,
    apply_order,
    check_pod_security,
    check_secret_type,
    comparable,
    instance_selector,
    namespace_manifest,
    needs_privileged_pods,
    not_written_entries,
    object_diff,
    place_object,
    plan_action,
    redact,
    referenced_secrets,
    resolve_instance,
    validate_object_shapes,
    write_report,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import Cluster, ResourceInfo
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ConflictError,
    MissingSecretError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._render import render
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import validate_settings

LABELS = {
    "app.kubernetes.io/name": "image-prefetcher",
    "app.kubernetes.io/instance": "imgs",
    "app.kubernetes.io/managed-by": "stackrox.prefetch",
}


def meta(name: str, namespace: Optional[str] = "prefetch", labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS if labels is None else labels)}
    if namespace:
        metadata["namespace"] = namespace
    return metadata


def daemonset(secret: Optional[str] = None, host_path: bool = True) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "list", "configMap": {"name": "imgs"}}]
    if host_path:
        volumes.append({"name": "cri", "hostPath": {"path": "/var/run/containerd"}})
    if secret:
        volumes.append({"name": "pull-secret", "secret": {"secretName": secret}})
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("imgs"),
        "spec": {
            "selector": {"matchLabels": {"app": "imgs"}},
            "template": {
                "metadata": {"labels": {"app": "imgs"}},
                "spec": {
                    "initContainers": [{"name": "prefetch", "image": "agent:v1"}],
                    "containers": [{"name": "sleep", "image": "agent:v1"}],
                    "volumes": volumes,
                },
            },
        },
    }


def rendered(secret: Optional[str] = None, images: str = "r/a:v1\n") -> list[dict[str, Any]]:
    return [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", **{k: v for k, v in daemonset(secret).items() if k != "kind"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("imgs"), "data": {"images.txt": images}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta("imgs-node-labeler", None),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "update"]}],
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("imgs")},
    ]


# --- validation and identity ---------------------------------------------------------------------------------------


class TestValidateShapes:
    @pytest.mark.parametrize(
        ("obj", "message"),
        [
            ("text", "objects[0]: every object must be a mapping, got str"),
            ({"kind": "ConfigMap", "metadata": {"name": "x"}}, "objects[0] (ConfigMap x): apiVersion must be"),
            ({"apiVersion": "v1", "metadata": {"name": "x"}}, "objects[0] (? x): kind must be"),
            ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "objects[0] (ConfigMap ?): metadata.name must"),
            (
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": []}},
                "objects[0] (ConfigMap x): metadata.labels must be a mapping",
            ),
        ],
    )
    def test_bad_shapes(self, obj: Any, message: str) -> None:
        with pytest.raises(ValidationError) as raised:
            validate_object_shapes([obj])
        assert str(raised.value).startswith(message)

    def test_rendered_objects_pass(self) -> None:
        validate_object_shapes(rendered())


class TestResolveInstance:
    def test_derived_from_labels_and_namespaces(self) -> None:
        assert resolve_instance(rendered(), None, None) == Instance("imgs", "prefetch")

    def test_given_values_must_match(self) -> None:
        with pytest.raises(
            ValidationError, match="instance name 'other' does not match the objects' instance name 'imgs'"
        ):
            resolve_instance(rendered(), "other", None)
        with pytest.raises(ValidationError, match="namespace 'x' does not match the objects' namespace 'prefetch'"):
            resolve_instance(rendered(), None, "x")

    def test_objects_of_two_instances(self) -> None:
        objects = rendered()
        objects[1]["metadata"]["labels"]["app.kubernetes.io/instance"] = "other"
        with pytest.raises(ValidationError, match="more than one instance name: imgs, other"):
            resolve_instance(objects, None, None)

    def test_objects_without_instance_labels_are_refused(self) -> None:
        objects = rendered()
        del objects[3]["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        with pytest.raises(
            ValidationError, match=r"objects\[3\] \(ServiceAccount imgs\): label app.kubernetes.io/managed-by"
        ):
            resolve_instance(objects, None, None)

    def test_namespace_needed_when_no_object_names_one(self) -> None:
        objects = [obj for obj in rendered() if obj["kind"] == "ClusterRole"]
        with pytest.raises(ValidationError, match="namespace is required"):
            resolve_instance(objects, None, None)
        assert resolve_instance(objects, None, "p") == Instance("imgs", "p")


def test_selector_has_the_three_design_labels() -> None:
    assert instance_selector("imgs") == (
        "app.kubernetes.io/name=image-prefetcher,app.kubernetes.io/instance=imgs,"
        "app.kubernetes.io/managed-by=stackrox.prefetch"
    )


def test_place_object_sets_or_drops_the_namespace() -> None:
    namespaced = ResourceInfo("v1", "ConfigMap", "configmaps", True)
    cluster_scoped = ResourceInfo("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False)
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert place_object(obj, namespaced, "p")["metadata"]["namespace"] == "p"
    assert "namespace" not in obj["metadata"]  # the input stays untouched
    assert (
        "namespace"
        not in place_object({**obj, "metadata": {"name": "x", "namespace": "p"}}, cluster_scoped, "p")["metadata"]
    )


def test_apply_order_puts_rbac_and_config_before_workloads() -> None:
    infos = {
        obj["kind"]: ResourceInfo(obj["apiVersion"], obj["kind"], obj["kind"].lower() + "s", True) for obj in rendered()
    }
    ordered = apply_order([(obj, infos[obj["kind"]]) for obj in rendered()])
    assert [obj["kind"] for obj, _info in ordered] == ["ServiceAccount", "ClusterRole", "ConfigMap", "DaemonSet"]


def real_render(**overrides: Any) -> list[dict[str, Any]]:
    params = {"name": "imgs", "namespace": "prefetch", "images": ["r/a:v1"], **overrides}
    return render(validate_settings(params))


def test_every_rendered_kind_is_an_instance_kind() -> None:
    # Pruning and state=absent search only INSTANCE_KINDS: a rendered kind missing there would be left behind.
    kinds = {(obj["apiVersion"], obj["kind"]) for obj in real_render(flavor="ocp", collect_metrics=True)}
    assert kinds <= set(INSTANCE_KINDS)
    assert kinds == set(INSTANCE_KINDS)  # and nothing is searched that the render never makes


def test_network_policies_are_applied_before_the_workloads() -> None:
    objects = real_render(collect_metrics=True)
    pairs = [(obj, ResourceInfo(obj["apiVersion"], obj["kind"], obj["kind"].lower() + "s", True)) for obj in objects]
    kinds = [obj["kind"] for obj, _info in apply_order(list(reversed(pairs)))]
    first_workload = min(kinds.index("Deployment"), kinds.index("DaemonSet"))
    assert max(index for index, kind in enumerate(kinds) if kind == "NetworkPolicy") < first_workload


# --- Pod Security, secrets, namespace -------------------------------------------------------------------------------


def namespace_obj(level: Optional[str]) -> dict[str, Any]:
    labels = {PSA_ENFORCE: level} if level else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prefetch", "labels": labels}}


class TestPodSecurity:
    @pytest.mark.parametrize("level", ["baseline", "restricted"])
    def test_levels_that_reject_host_path_fail_naming_namespace_level_and_why(self, level: str) -> None:
        with pytest.raises(ValidationError) as raised:
            check_pod_security(namespace_obj(level), rendered())
        message = str(raised.value)
        assert message.startswith(f"namespace prefetch enforces Pod Security level {level!r}")
        assert "hostPath" in message and "privileged" in message

    @pytest.mark.parametrize("level", [None, "privileged"])
    def test_levels_that_admit_the_pods(self, level: Optional[str]) -> None:
        check_pod_security(namespace_obj(level), rendered())

    def test_restricted_namespace_is_fine_without_privileged_pods(self) -> None:
        objects = [daemonset(host_path=False)]
        assert not needs_privileged_pods(objects)
        check_pod_security(namespace_obj("restricted"), objects)

    def test_privileged_container_needs_privileged_level(self) -> None:
        objects = [daemonset(host_path=False)]
        objects[0]["spec"]["template"]["spec"]["initContainers"][0]["securityContext"] = {"privileged": True}
        assert needs_privileged_pods(objects)


def test_referenced_secrets() -> None:
    objects = [daemonset(secret="pull")]
    spec = objects[0]["spec"]["template"]["spec"]
    spec["imagePullSecrets"] = [{"name": "agent-pull"}, {"name": "pull"}]
    spec["volumes"].append({"name": "opt", "secret": {"secretName": "maybe", "optional": True}})
    assert referenced_secrets(objects) == ["pull", "agent-pull"]


class TestSecretType:
    def test_missing(self) -> None:
        with pytest.raises(MissingSecretError, match="pull secret p/s does not exist"):
            check_secret_type("s", "p", None, exists=False)

    @pytest.mark.parametrize("secret_type", [None, "Opaque", "kubernetes.io/dockercfg"])
    def test_wrong_type(self, secret_type: Optional[str]) -> None:
        with pytest.raises(MissingSecretError, match=r"expected 'kubernetes\.io/dockerconfigjson'"):
            check_secret_type("s", "p", secret_type, exists=True)

    def test_right_type(self) -> None:
        check_secret_type("s", "p", "kubernetes.io/dockerconfigjson", exists=True)


def test_new_namespace_is_labelled_privileged() -> None:
    labels = namespace_manifest("p")["metadata"]["labels"]
    assert {key: labels[key] for key in labels if key.startswith("pod-security")} == {
        "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/audit": "privileged",
        "pod-security.kubernetes.io/warn": "privileged",
    }


# --- planning and diffing ---------------------------------------------------------------------------------------------


def with_server_noise(obj: dict[str, Any], version: str = "7") -> dict[str, Any]:
    noisy = copy.deepcopy(obj)
    noisy["metadata"].update(
        resourceVersion=version,
        uid="u-1",
        generation=int(version),
        creationTimestamp="2026-11-24T10:00:00Z",
        managedFields=[{"manager": "stackrox.prefetch", "time": f"2026-11-24T10:0{version}:00Z"}],
        annotations={"deprecated.daemonset.template.generation": version},
    )
    noisy["status"] = {"numberReady": int(version)}
    return noisy


class TestPlanning:
    def test_unchanged_when_only_server_noise_differs(self) -> None:
        live = with_server_noise(daemonset(), "3")
        after = with_server_noise(daemonset(), "4")
        assert plan_action(live, after) == "unchanged"

    def test_updated_when_the_spec_changes(self) -> None:
        changed = daemonset()
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:v2"
        assert plan_action(with_server_noise(daemonset()), with_server_noise(changed)) == "updated"

    def test_updated_when_a_user_annotation_changes(self) -> None:
        changed = with_server_noise(daemonset())
        changed["metadata"]["annotations"]["team"] = "x"
        assert plan_action(with_server_noise(daemonset()), changed) == "updated"

    def test_created_when_nothing_lives(self) -> None:
        assert plan_action(None, daemonset()) == "created"

    def test_comparable_strips_noise_only(self) -> None:
        clean = comparable(with_server_noise(daemonset()))
        assert clean == daemonset()


class TestRedaction:
    def test_secret_values_never_appear(self) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "data": {".dockerconfigjson": "c2VjcmV0"},
            "stringData": {"password": "hunter2"},
        }
        diff = object_diff("Secret p/s", secret, secret)
        text = json.dumps(diff)
        assert "c2VjcmV0" not in text and "hunter2" not in text and "{...}" not in text
        assert diff["after"]["data"] == {".dockerconfigjson": REDACTED}

    def test_other_kinds_are_shown(self) -> None:
        config_map = rendered()[1]
        assert redact(config_map) is config_map


# --- the Applier against an in-memory API server ---------------------------------------------------------------------

SERVED = {
    ("v1", "Namespace"): ResourceInfo("v1", "Namespace", "namespaces", False),
    ("v1", "ServiceAccount"): ResourceInfo("v1", "ServiceAccount", "serviceaccounts", True),
    ("v1", "ConfigMap"): ResourceInfo("v1", "ConfigMap", "configmaps", True),
    ("v1", "Secret"): ResourceInfo("v1", "Secret", "secrets", True),
    ("v1", "Service"): ResourceInfo("v1", "Service", "services", True),
    ("v1", "Pod"): ResourceInfo("v1", "Pod", "pods", True),
    ("v1", "Node"): ResourceInfo("v1", "Node", "nodes", False),
    ("coordination.k8s.io/v1", "Lease"): ResourceInfo("coordination.k8s.io/v1", "Lease", "leases", True),
    ("apps/v1", "DaemonSet"): ResourceInfo("apps/v1", "DaemonSet", "daemonsets", True),
    ("apps/v1", "Deployment"): ResourceInfo("apps/v1", "Deployment", "deployments", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ResourceInfo(
        "networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ResourceInfo(
        "rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ResourceInfo(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): ResourceInfo("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ResourceInfo(
        "rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True
    ),
}


class FakeApiServer:
    """Objects by (kind, namespace, name); apply merges like SSA would for our own manager and adds server noise."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.dry_runs: list[tuple[str, str]] = []
        self.version = 1
        self.conflict_on: Optional[str] = None

    def put(self, obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        self.store[(obj["kind"], metadata.get("namespace") or "", metadata["name"])] = with_server_noise(obj, "1")

    def resource_for(self, api_version: str, kind: str) -> ResourceInfo:
        if (api_version, kind) not in SERVED:
            raise NotFoundError(f"the API server does not serve kind {kind} in apiVersion {api_version}")
        return SERVED[(api_version, kind)]

    def get(self, info: ResourceInfo, name: str, namespace: Optional[str] = None) -> Optional[dict[str, Any]]:
        found = self.store.get((info.kind, namespace or "", name))
        return copy.deepcopy(found) if found else None

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        wanted: dict[str, Optional[str]] = {}
        for part in filter(None, (label_selector or "").split(",")):
            key, _equals, value = part.partition("=")
            wanted[key] = value if "=" in part else None
        items = []
        for (kind, item_namespace, _name), obj in self.store.items():
            labels = obj["metadata"].get("labels") or {}
            if kind != info.kind or (namespace and item_namespace != namespace):
                continue
            if all(key in labels and (value is None or labels[key] == value) for key, value in wanted.items()):
                items.append(copy.deepcopy(obj))
        return items, str(self.version)

    def apply(self, info: ResourceInfo, obj: dict[str, Any], dry_run: bool, force: bool) -> dict[str, Any]:
        key = (info.kind, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        if self.conflict_on == info.kind and not force:
            raise ConflictError(f"conflict applying {info.kind}")
        live = self.store.get(key)
        version = "1" if live is None else live["metadata"]["resourceVersion"]
        if live is not None and comparable(live) != comparable(obj):
            version = str(int(version) + 1)
        result = with_server_noise(obj, version)
        if dry_run:
            self.dry_runs.append((info.kind, obj["metadata"]["name"]))
        else:
            self.writes.append(("apply", info.kind, obj["metadata"]["name"]))
            self.store[key] = result
        return copy.deepcopy(result)

    def delete(self, info: ResourceInfo, name: str, namespace: Optional[str], dry_run: bool) -> bool:
        key = (info.kind, namespace or "", name)
        if key not in self.store:
            return False
        if not dry_run:
            self.writes.append(("delete", info.kind, name))
            del self.store[key]
        return True

    def merge_patch(
        self, info: ResourceInfo, name: str, namespace: Optional[str], patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(("patch", info.kind, name))
        node = self.store[(info.kind, "", name)]
        for key, value in patch["metadata"]["labels"].items():
            if value is None:
                node["metadata"]["labels"].pop(key, None)
        return node

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        return iter(())


def applier(server: FakeApiServer, **options: Any) -> Applier:
    # The fake API server implements the part of Cluster that Applier uses.
    return Applier(cast(Cluster, server), **options)


def prepared_server(secret: bool = False, level: Optional[str] = None) -> FakeApiServer:
    server = FakeApiServer()
    server.put(namespace_obj(level))
    if secret:
        server.put(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "pull", "namespace": "prefetch"},
                "data": {".dockerconfigjson": "e30="},
            }
        )
    return server


INSTANCE = Instance("imgs", "prefetch")


class TestPresent:
    def test_first_run_creates_every_object_in_order(self) -> None:
        server = prepared_server()
        run = applier(server)
        run.present(rendered(), INSTANCE, create_namespace=False)
        assert [(entry["kind"], entry["action"]) for entry in run.objects] == [
            ("ServiceAccount", "created"),
            ("ClusterRole", "created"),
            ("ConfigMap", "created"),
            ("DaemonSet", "created"),
        ]
        assert run.changed and len(server.writes) == 4
        assert run.objects[1]["namespace"] is None and run.objects[0]["namespace"] == "prefetch"

    def test_second_identical_run_writes_nothing(self) -> None:
        server = prepared_server()
        applier(server).present(rendered(), INSTANCE, create_namespace=False)
        server.writes.clear()
        again = applier(server)
        again.present(rendered(), INSTANCE, create_namespace=False)
        assert {entry["action"] for entry in again.objects} == {"unchanged"}
        assert not again.changed and server.writes == []

    def test_changed_image_list_updates_only_the_config_map(self) -> None:
        server = prepared_server()
        applier(server).present(rendered(), INSTANCE, create_namespace=False)
        server.writes.clear()
        run = applier(server)
        run.present(rendered(images="r/a:v1\nr/b:v1\n"), INSTANCE, create_namespace=False)
        assert [entry["kind"] for entry in run.objects if entry["action"] == "updated"] == ["ConfigMap"]
        assert server.writes == [("apply", "ConfigMap", "imgs")]

    def test_check_mode_only_dry_runs(self) -> None:
        server = prepared_server()
        run = applier(server, check_mode=True, diff_mode=True)
        run.present(rendered(), INSTANCE, create_namespace=False)
        assert run.changed and server.writes == [] and len(server.dry_runs) == 4
        assert [diff["after_header"] for diff in run.diffs][-1] == "DaemonSet prefetch/imgs"
        assert run.diffs[-1]["before"] == {} and run.diffs[-1]["after"]["spec"]

    def test_missing_namespace_without_create_fails_before_any_call_that_writes(self) -> None:
        server = FakeApiServer()
        with pytest.raises(ValidationError, match="namespace prefetch does not exist; set create_namespace: true"):
            applier(server).present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == [] and server.dry_runs == []

    def test_created_namespace_comes_first_and_is_privileged(self) -> None:
        server = FakeApiServer()
        run = applier(server)
        run.present(rendered(), INSTANCE, create_namespace=True)
        assert server.writes[0] == ("apply", "Namespace", "prefetch")
        labels = server.store[("Namespace", "", "prefetch")]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
        assert run.objects[0]["action"] == "created" and run.objects[0]["kind"] == "Namespace"

    def test_create_namespace_in_check_mode_writes_nothing(self) -> None:
        server = FakeApiServer()
        run = applier(server, check_mode=True)
        run.present(rendered(), INSTANCE, create_namespace=True)
        assert server.writes == [] and {entry["action"] for entry in run.objects} == {"created"}

    def test_restricted_namespace_fails_before_any_write(self) -> None:
        server = prepared_server(level="restricted")
        with pytest.raises(ValidationError, match="enforces Pod Security level 'restricted'"):
            applier(server).present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == [] and server.dry_runs == []

    def test_missing_secret_fails_before_any_write(self) -> None:
        server = prepared_server()
        with pytest.raises(MissingSecretError, match="pull secret prefetch/pull does not exist"):
            applier(server).present(rendered(secret="pull"), INSTANCE, create_namespace=False)
        assert server.writes == []

    def test_secret_of_the_right_type_passes(self) -> None:
        server = prepared_server(secret=True)
        applier(server).present(rendered(secret="pull"), INSTANCE, create_namespace=False)
        assert ("apply", "DaemonSet", "imgs") in server.writes

    def test_secret_with_a_namespace_to_be_created_cannot_exist(self) -> None:
        server = FakeApiServer()
        with pytest.raises(MissingSecretError, match="namespace prefetch does not exist yet; create the namespace and"):
            applier(server).present(rendered(secret="pull"), INSTANCE, create_namespace=True)
        assert server.writes == []

    def test_conflict_in_the_dry_run_stops_before_any_write(self) -> None:
        server = prepared_server()
        server.conflict_on = "DaemonSet"
        with pytest.raises(ConflictError):
            applier(server).present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == []
        forced = applier(server, force_conflicts=True)
        forced.present(rendered(), INSTANCE, create_namespace=False)
        assert ("apply", "DaemonSet", "imgs") in server.writes

    def test_unknown_kind_fails_before_any_write(self) -> None:
        server = prepared_server()
        objects = [*rendered(), {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": meta("imgs")}]
        with pytest.raises(NotFoundError, match="does not serve kind Route"):
            applier(server).present(objects, INSTANCE, create_namespace=False)
        assert server.writes == []


def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels, "namespace": ""}}


class TestAbsent:
    def deployed(self) -> FakeApiServer:
        server = prepared_server()
        applier(server).present(rendered(), INSTANCE, create_namespace=False)
        server.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("unrelated", labels={})})
        server.writes.clear()
        return server

    def test_deletes_every_labelled_object_workloads_first(self) -> None:
        server = self.deployed()
        run = applier(server)
        run.absent(INSTANCE, [], remove_node_labels=False)
        assert [write[1] for write in server.writes] == ["DaemonSet", "ConfigMap", "ClusterRole", "ServiceAccount"]
        assert {entry["action"] for entry in run.objects} == {"deleted"} and run.changed
        assert ("ConfigMap", "prefetch", "unrelated") in server.store

    def slot_lease(self, name: str = "imgs-slot-0") -> dict[str, Any]:
        """A node-slot Lease as the agent creates it (parallel_nodes): the instance's labels, never rendered."""
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta(name)}

    def test_removes_the_agents_node_slot_leases_after_the_workloads(self) -> None:
        server = self.deployed()
        server.put(self.slot_lease())
        server.put(self.slot_lease("imgs-canary"))
        other = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta("other", labels={})}
        server.put(other)
        run = applier(server)
        run.absent(INSTANCE, [], remove_node_labels=False)
        deleted = [write[1] for write in server.writes if write[0] == "delete"]
        assert deleted.count("Lease") == 2 and deleted.index("Lease") > deleted.index("DaemonSet")
        assert ("Lease", "prefetch", "other") in server.store
        assert not [key for key in server.store if key[0] == "Lease" and key[2].startswith("imgs-")]

    def test_present_never_prunes_a_lease_an_agent_may_hold(self) -> None:
        server = self.deployed()
        server.put(self.slot_lease())
        applier(server).present(rendered(), INSTANCE, create_namespace=False)
        assert ("Lease", "prefetch", "imgs-slot-0") in server.store
        assert not [write for write in server.writes if write[0] == "delete"]

    def test_second_absent_changes_nothing(self) -> None:
        server = self.deployed()
        applier(server).absent(INSTANCE, [], remove_node_labels=False)
        server.writes.clear()
        again = applier(server)
        again.absent(INSTANCE, [], remove_node_labels=False)
        assert again.objects == [] and not again.changed and server.writes == []

    def test_given_objects_that_are_gone_are_reported_absent(self) -> None:
        server = FakeApiServer()
        run = applier(server)
        run.absent(INSTANCE, rendered(), remove_node_labels=False)
        assert {entry["action"] for entry in run.objects} == {"absent"} and not run.changed

    def test_check_mode_deletes_nothing(self) -> None:
        server = self.deployed()
        run = applier(server, check_mode=True)
        run.absent(INSTANCE, [], remove_node_labels=True)
        assert server.writes == [] and run.changed

    def test_node_labels_are_removed_with_a_null_merge_patch(self) -> None:
        server = self.deployed()
        key = "image-prefetcher.stackrox.io/imgs"
        server.store[("Node", "", "n1")] = node("n1", {key: "succeeded", "zone": "a"})
        server.store[("Node", "", "n2")] = node("n2", {"zone": "b"})
        run = applier(server)
        run.absent(INSTANCE, [], remove_node_labels=True)
        assert ("patch", "Node", "n1") in server.writes and ("patch", "Node", "n2") not in server.writes
        assert server.store[("Node", "", "n1")]["metadata"]["labels"] == {"zone": "a"}
        assert run.objects[-1] == {
            "kind": "Node",
            "apiVersion": "v1",
            "name": "n1",
            "namespace": None,
            "action": "updated",
        }


class TerminatingPodsServer(FakeApiServer):
    """Pods of the instance stay until their DELETED events arrive on the watch (or never, with no events)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.events = events
        self.watched: list[tuple[str, Optional[str]]] = []

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.kind == "Pod" and not self.watched:
            pods = [{"kind": "Pod", "metadata": {"name": name, "namespace": namespace}} for name in ("a", "b")]
            return pods, "5"
        if info.kind == "Pod":
            return [], "9"
        return super().list_objects(info, namespace, label_selector)

    def watch(self, info: ResourceInfo, namespace: Optional[str], version: str, *args: Any, **kwargs: Any) -> Any:
        self.watched.append((info.kind, version))
        return iter(self.events)


def test_absent_waits_for_the_pods_through_the_watch() -> None:
    deleted = [{"type": "DELETED", "object": {"metadata": {"name": name}}} for name in ("a", "b")]
    server = TerminatingPodsServer(deleted)
    run = applier(server)
    run.absent(INSTANCE, [], remove_node_labels=False)
    assert server.watched == [("Pod", "5")] and run.warnings == []


def test_pods_still_terminating_after_the_wait_are_a_warning() -> None:
    ticks = iter([0.0] + [1000.0] * 20)
    server = TerminatingPodsServer([])
    server.watched.append(("Pod", "0"))  # lists keep returning the two pods

    def pods_forever(
        info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.kind == "Pod":
            return [{"kind": "Pod", "metadata": {"name": name}} for name in ("a", "b")], "5"
        return FakeApiServer.list_objects(server, info, namespace, label_selector)

    server.list_objects = pods_forever  # type: ignore[method-assign]
    run = applier(server, wait_timeout=30, clock=lambda: next(ticks))
    run.absent(INSTANCE, [], remove_node_labels=False)
    assert run.warnings == ["2 pod(s) of instance imgs still terminating after 30s: a, b"]


# --- cluster-scoped objects shared by name across namespaces; pruning; deletion order -------------------------------

NS_LABEL = "prefetch.stackrox.io/namespace"


def cluster_rbac(namespace: str) -> list[dict[str, Any]]:
    labels = {**LABELS, NS_LABEL: namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta("imgs-node-labeler", None, labels),
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch", "update"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta("imgs-node-labeler", None, labels),
            "subjects": [{"kind": "ServiceAccount", "name": "imgs", "namespace": namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "imgs-node-labeler"},
        },
    ]


def in_namespace(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    moved = copy.deepcopy(objects)
    for obj in moved:
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
    return moved


def instance_objects(namespace: str) -> list[dict[str, Any]]:
    rest = [obj for obj in in_namespace(rendered(), namespace) if obj["kind"] != "ClusterRole"]
    return [*rest, *cluster_rbac(namespace)]


def two_namespace_server() -> FakeApiServer:
    server = prepared_server()
    other = namespace_obj(None)
    other["metadata"]["name"] = "team-b"
    server.put(other)
    applier(server).present(instance_objects("prefetch"), INSTANCE, create_namespace=False)
    server.writes.clear()
    server.dry_runs.clear()
    return server


class TestSameNameInTwoNamespaces:
    def test_present_in_another_namespace_fails_before_any_write(self) -> None:
        server = two_namespace_server()
        with pytest.raises(ValidationError) as raised:
            applier(server).present(instance_objects("team-b"), Instance("imgs", "team-b"), create_namespace=False)
        message = str(raised.value)
        assert "\n" not in message
        assert "belongs to instance imgs in namespace prefetch, not namespace team-b" in message
        assert "choose another instance name for namespace team-b" in message
        assert server.writes == [] and server.dry_runs == []
        binding = server.store[("ClusterRoleBinding", "", "imgs-node-labeler")]
        assert binding["subjects"][0]["namespace"] == "prefetch"

    def test_unlabelled_binding_with_a_subject_elsewhere_also_conflicts(self) -> None:
        server = two_namespace_server()
        binding = server.store[("ClusterRoleBinding", "", "imgs-node-labeler")]
        del binding["metadata"]["labels"][NS_LABEL]
        role = server.store[("ClusterRole", "", "imgs-node-labeler")]
        del role["metadata"]["labels"][NS_LABEL]
        with pytest.raises(ValidationError, match="ClusterRoleBinding imgs-node-labeler belongs to instance imgs"):
            applier(server).present(instance_objects("team-b"), Instance("imgs", "team-b"), create_namespace=False)
        assert server.writes == []

    def test_absent_in_another_namespace_leaves_the_cluster_rbac(self) -> None:
        server = two_namespace_server()
        run = applier(server)
        run.absent(Instance("imgs", "team-b"), [], remove_node_labels=False)
        assert server.writes == [] and run.objects == []
        assert ("ClusterRole", "", "imgs-node-labeler") in server.store
        assert ("ClusterRoleBinding", "", "imgs-node-labeler") in server.store

    def test_absent_with_given_objects_of_another_namespace_leaves_the_cluster_rbac(self) -> None:
        server = two_namespace_server()
        run = applier(server)
        run.absent(Instance("imgs", "team-b"), instance_objects("team-b"), remove_node_labels=False)
        assert server.writes == [] and {entry["action"] for entry in run.objects} == {"absent"}

    def test_absent_in_the_own_namespace_deletes_the_cluster_rbac(self) -> None:
        server = two_namespace_server()
        applier(server).absent(INSTANCE, [], remove_node_labels=False)
        assert ("delete", "ClusterRoleBinding", "imgs-node-labeler") in server.writes
        assert ("delete", "ClusterRole", "imgs-node-labeler") in server.writes


def metrics_objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("imgs-metrics"), "spec": {"replicas": 1}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("imgs-metrics"), "spec": {"type": "ClusterIP"}},
    ]


class TestPrune:
    def deployed(self) -> FakeApiServer:
        server = prepared_server()
        applier(server).present([*rendered(), *metrics_objects()], INSTANCE, create_namespace=False)
        server.put({"apiVersion": "v1", "kind": "Service", "metadata": meta("unrelated", labels={})})
        server.writes.clear()
        return server

    def test_objects_no_longer_rendered_are_deleted_after_the_apply(self) -> None:
        server = self.deployed()
        run = applier(server)
        run.present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == [("delete", "Deployment", "imgs-metrics"), ("delete", "Service", "imgs-metrics")]
        assert [(entry["kind"], entry["action"]) for entry in run.objects][-2:] == [
            ("Deployment", "deleted"),
            ("Service", "deleted"),
        ]
        assert run.changed and ("Service", "prefetch", "unrelated") in server.store

    def test_check_mode_reports_the_deletions_and_diff_shows_them_removed(self) -> None:
        server = self.deployed()
        run = applier(server, check_mode=True, diff_mode=True)
        run.present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == [] and run.changed
        assert [entry["action"] for entry in run.objects if entry["kind"] in ("Deployment", "Service")] == [
            "deleted",
            "deleted",
        ]
        removed = [diff for diff in run.diffs if diff["before_header"] == "Service prefetch/imgs-metrics"]
        assert removed and removed[0]["after"] == {} and removed[0]["before"]["spec"] == {"type": "ClusterIP"}

    def test_network_policies_follow_the_settings(self) -> None:
        server = prepared_server()
        applier(server).present(real_render(collect_metrics=True), INSTANCE, create_namespace=False)
        policies = {key[2] for key in server.store if key[0] == "NetworkPolicy"}
        assert policies == {"imgs", "imgs-metrics"}
        server.writes.clear()
        # Metrics off: the aggregator's policy goes with its Deployment and Service, the agents' stays.
        applier(server).present(real_render(), INSTANCE, create_namespace=False)
        assert sorted(write for write in server.writes if write[0] == "delete") == [
            ("delete", "Deployment", "imgs-metrics"),
            ("delete", "NetworkPolicy", "imgs-metrics"),
            ("delete", "Service", "imgs-metrics"),
        ]
        server.writes.clear()
        applier(server).present(real_render(network_policy=False), INSTANCE, create_namespace=False)
        assert [write for write in server.writes if write[0] == "delete"] == [("delete", "NetworkPolicy", "imgs")]
        assert not [key for key in server.store if key[0] == "NetworkPolicy"]

    def test_absent_deletes_the_network_policies_after_the_workloads(self) -> None:
        server = prepared_server()
        applier(server).present(real_render(collect_metrics=True), INSTANCE, create_namespace=False)
        server.writes.clear()
        applier(server).absent(INSTANCE, [], remove_node_labels=False)
        deleted = [write[1] for write in server.writes if write[0] == "delete"]
        assert deleted.count("NetworkPolicy") == 2
        assert deleted.index("NetworkPolicy") > max(deleted.index("DaemonSet"), deleted.index("Deployment"))
        assert not [key for key in server.store if key[0] != "Namespace"]

    def test_cluster_rbac_of_another_namespace_is_not_pruned(self) -> None:
        server = two_namespace_server()
        run = applier(server)
        objects = [obj for obj in in_namespace(rendered(), "team-b") if obj["kind"] != "ClusterRole"]
        run.present(objects, Instance("imgs", "team-b"), create_namespace=False)
        assert not [write for write in server.writes if write[0] == "delete"]
        assert ("ClusterRoleBinding", "", "imgs-node-labeler") in server.store


class OrderRecordingServer(FakeApiServer):
    """Records, in one timeline, the deletions and the moment the pods are waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[str] = []

    def delete(self, info: ResourceInfo, name: str, namespace: Optional[str], dry_run: bool) -> bool:
        self.timeline.append(f"delete {info.kind}")
        return super().delete(info, name, namespace, dry_run)

    def list_objects(
        self, info: ResourceInfo, namespace: Optional[str] = None, label_selector: Optional[str] = None
    ) -> tuple[list[dict[str, Any]], str]:
        if info.kind == "Pod":
            self.timeline.append("pods gone?")
        return super().list_objects(info, namespace, label_selector)


def test_absent_waits_for_the_pods_before_deleting_the_rbac() -> None:
    server = OrderRecordingServer()
    server.put(namespace_obj(None))
    applier(server).present([*instance_objects("prefetch"), *metrics_objects()], INSTANCE, create_namespace=False)
    server.timeline.clear()
    applier(server).absent(INSTANCE, [], remove_node_labels=False)
    assert server.timeline[:3] == ["delete DaemonSet", "delete Deployment", "pods gone?"]
    assert set(server.timeline[3:]) == {
        "delete ClusterRoleBinding",
        "delete ClusterRole",
        "delete ConfigMap",
        "delete Service",
        "delete ServiceAccount",
    }


# --- a run that fails part-way: what was written and what was not --------------------------------------------------


class FailingServer(FakeApiServer):
    """Fails the real (not dry-run) write of one kind, as the API server's retries ran out."""

    def __init__(self, kind: str, verb: str = "apply", outcome_unknown: bool = False) -> None:
        super().__init__()
        self.fail_kind, self.fail_verb, self.outcome_unknown = kind, verb, outcome_unknown

    def _fail(self, info: ResourceInfo, verb: str, name: str) -> None:
        if info.kind == self.fail_kind and verb == self.fail_verb:
            raise ClusterError(f"cannot {verb} {info.kind} {name}: HTTP 500", outcome_unknown=self.outcome_unknown)

    def apply(self, info: ResourceInfo, obj: dict[str, Any], dry_run: bool, force: bool) -> dict[str, Any]:
        if not dry_run:
            self._fail(info, "apply", obj["metadata"]["name"])
        return super().apply(info, obj, dry_run, force)

    def delete(self, info: ResourceInfo, name: str, namespace: Optional[str], dry_run: bool) -> bool:
        if not dry_run:
            self._fail(info, "delete", name)
        return super().delete(info, name, namespace, dry_run)


class TestPartialFailure:
    def test_a_failed_write_reports_what_was_written_and_what_was_not(self) -> None:
        server = FailingServer("ConfigMap")
        server.put(namespace_obj(None))
        run = applier(server)
        with pytest.raises(ClusterError) as raised:
            run.present(rendered(), INSTANCE, create_namespace=False)
        assert [(e["kind"], e["action"]) for e in run.objects] == [("ServiceAccount", "created"),
                                                                   ("ClusterRole", "created")]
        ending, not_written = run.failure_report(raised.value)
        assert [(e["kind"], e["action"], e["maybe_done"]) for e in not_written] == [
            ("ConfigMap", "created", False), ("DaemonSet", "created", False)]
        assert not_written[0]["error"] == "cannot apply ConfigMap imgs: HTTP 500" and not_written[1]["error"] is None
        assert ending == (
            "written: ServiceAccount prefetch/imgs (created), ClusterRole imgs-node-labeler (created); "
            "not written: ConfigMap prefetch/imgs (to be created), DaemonSet prefetch/imgs (to be created); "
            "run the task again to finish: it writes only what is missing or differs"
        )

    def test_a_rerun_writes_only_what_was_missing(self) -> None:
        server = FailingServer("ConfigMap")
        server.put(namespace_obj(None))
        with pytest.raises(ClusterError):
            applier(server).present(rendered(), INSTANCE, create_namespace=False)
        server.fail_kind = ""
        server.writes.clear()
        again = applier(server)
        again.present(rendered(), INSTANCE, create_namespace=False)
        assert server.writes == [("apply", "ConfigMap", "imgs"), ("apply", "DaemonSet", "imgs")]
        assert [e["action"] for e in again.objects] == ["unchanged", "unchanged", "created", "created"]

    def test_unchanged_objects_are_not_reported_as_missing(self) -> None:
        server = FailingServer("DaemonSet")
        server.put(namespace_obj(None))
        first = applier(server)
        with pytest.raises(ClusterError):
            first.present(rendered(), INSTANCE, create_namespace=False)
        changed = rendered(images="r/b:v2\n")
        second = applier(server)
        with pytest.raises(ClusterError) as raised:
            second.present(changed, INSTANCE, create_namespace=False)
        _ending, not_written = second.failure_report(raised.value)
        assert [(e["kind"], e["action"]) for e in second.objects] == [
            ("ServiceAccount", "unchanged"), ("ClusterRole", "unchanged"), ("ConfigMap", "updated")]
        assert [(e["kind"], e["action"]) for e in not_written] == [("DaemonSet", "created")]

    def test_a_write_that_may_have_happened_says_so(self) -> None:
        server = FailingServer("DaemonSet", outcome_unknown=True)
        server.put(namespace_obj(None))
        run = applier(server)
        with pytest.raises(ClusterError) as raised:
            run.present(rendered(), INSTANCE, create_namespace=False)
        ending, not_written = run.failure_report(raised.value)
        assert not_written[0]["maybe_done"] is True
        assert ("not written: DaemonSet prefetch/imgs (to be created, maybe created all the same: the request may "
                "have reached the server)") in ending

    def test_a_failed_prune_names_the_objects_left(self) -> None:
        server = FailingServer("Service", verb="delete")
        server.put(namespace_obj(None))
        applier(server).present(real_render(collect_metrics=True), INSTANCE, create_namespace=False)
        run = applier(server)
        with pytest.raises(ClusterError) as raised:
            run.present(real_render(), INSTANCE, create_namespace=False)
        ending, not_written = run.failure_report(raised.value)
        assert [(e["kind"], e["name"], e["action"]) for e in not_written] == [
            ("Service", "imgs-metrics", "deleted"), ("NetworkPolicy", "imgs-metrics", "deleted")]
        # The DaemonSet no longer sends metrics (updated), the Deployment went first, the Service failed.
        assert ending.startswith("written: DaemonSet prefetch/imgs (updated), Deployment prefetch/imgs-metrics "
                                 "(deleted); not written: Service prefetch/imgs-metrics (to be deleted), "
                                 "NetworkPolicy prefetch/imgs-metrics (to be deleted); run the task again")

    def test_a_failure_before_the_first_write_wrote_nothing(self) -> None:
        server = FakeApiServer()  # no namespace: the check fails before any write
        run = applier(server)
        with pytest.raises(ValidationError) as raised:
            run.present(rendered(), INSTANCE, create_namespace=False)
        assert run.failure_report(raised.value) == ("", [])  # every check comes before the first write

    def test_check_mode_never_writes(self) -> None:
        server = FailingServer("ConfigMap")
        server.put(namespace_obj(None))
        run = applier(server, check_mode=True)
        run.present(rendered(), INSTANCE, create_namespace=False)
        assert run.failure_report(ClusterError("x")) == ("", [])

    def test_absent_reports_the_deletes_left(self) -> None:
        server = FailingServer("ConfigMap", verb="delete")
        server.put(namespace_obj(None))
        applier(server).present(rendered(), INSTANCE, create_namespace=False)
        run = applier(server)
        with pytest.raises(ClusterError) as raised:
            run.absent(INSTANCE, [], remove_node_labels=False)
        _ending, not_written = run.failure_report(raised.value)
        assert [e["kind"] for e in run.objects] == ["DaemonSet"]
        assert [e["kind"] for e in not_written] == ["ConfigMap", "ClusterRole", "ServiceAccount"]


def test_a_failure_on_the_first_write_says_nothing_was_written() -> None:
    pending = [{"kind": "ConfigMap", "name": "c", "namespace": "p", "action": "created"}]
    report = write_report([], not_written_entries(pending, "boom", False), check_mode=False)
    assert report.startswith("nothing was written; not written: ConfigMap p/c (to be created); run the task again")


def test_write_report_lists_at_most_twelve_objects() -> None:
    entries = [{"kind": "ConfigMap", "name": f"c{i}", "namespace": "p", "action": "created"} for i in range(15)]
    report = write_report(entries, [], check_mode=False)
    assert report.startswith("written: ConfigMap p/c0 (created), ") and " and 3 more" in report
