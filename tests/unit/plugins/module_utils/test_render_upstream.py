# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Same meaning as the Go generator: our render equals upstream's three renders once exactly the documented
differences (docs/manifests.md) are removed. Anything else that differs fails the comparison."""

from __future__ import annotations

import copy
import typing as t
from pathlib import Path

import pytest
import yaml

from ansible_collections.stackrox.prefetch.plugins.module_utils._render import render
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import validate_settings

UPSTREAM_DIR = Path(__file__).parent / "fixtures" / "upstream"
COMMON_LABEL_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by")
# Upstream's generator was run as `deploy [flags] my-images` with --version v0.3.0; only the image repository and
# the `-distro` suffix differ from ours, so render with upstream's repository and tag.
UPSTREAM_IMAGE = {"image": "quay.io/stackrox-io/image-prefetcher", "version": "v0.3.0"}
# Upstream renders with each flag combination, and the settings giving the same meaning here. Upstream always makes
# the metrics Service a LoadBalancer; ours must be asked to (that default is itself a documented difference).
CASES: dict[str, dict[str, t.Any]] = {
    "vanilla.yaml.txt": {},
    "vanilla-gke.yaml.txt": {"credential_provider": "GKE"},
    "ocp-secret-metrics.yaml.txt": {
        "flavor": "ocp",
        "secret": "my-secret",
        "collect_metrics": True,
        "metrics_service_type": "LoadBalancer",
    },
}
# Upstream's fixed SCC RBAC names, which collide between instances, and ours.
UPSTREAM_SCC_NAMES = ("privileged-scc-use", "prefetcher-privileged")

Obj = t.Dict[str, t.Any]  # noqa: UP006 - runtime alias


def load_upstream(filename: str) -> list[Obj]:
    text = (UPSTREAM_DIR / filename).read_text(encoding="utf-8")
    return [document for document in yaml.safe_load_all(text) if document is not None]


def ours(overrides: dict[str, t.Any]) -> list[Obj]:
    params = {"name": "my-images", "images": ["registry.test:5000/team/app:v1"], **UPSTREAM_IMAGE, **overrides}
    return render(validate_settings(params))


def containers_of(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _drop_empty(mapping: Obj, key: str) -> None:
    if key in mapping and not mapping[key]:
        del mapping[key]


# --- Our side: remove exactly the documented differences -------------------------------------------------------------


def strip_ours(objects: list[Obj]) -> list[Obj]:
    objects = copy.deepcopy(objects)
    # Difference: the image-list ConfigMap is ours (upstream leaves it to the user).
    objects = [obj for obj in objects if obj["kind"] != "ConfigMap"]
    # Difference: the NetworkPolicies (no ingress to the agents; the aggregator's gRPC only from them).
    objects = [obj for obj in objects if obj["kind"] != "NetworkPolicy"]
    # Difference: the agents publish their progress on their own pods (a Role for pods/patch, and its flag).
    objects = [obj for obj in objects if obj["metadata"]["name"] != "my-images-progress"]
    for obj in objects:
        # Difference: the app.kubernetes.io labels on every object and pod template.
        for metadata in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
            for key in COMMON_LABEL_KEYS:
                metadata.get("labels", {}).pop(key, None)
            # Difference: the owning namespace's label on the cluster-scoped objects.
            metadata.get("labels", {}).pop("prefetch.stackrox.io/namespace", None)
            _drop_empty(metadata, "labels")
            # Difference: the config-hash annotation on the DaemonSet's pod template.
            metadata.get("annotations", {}).pop("prefetch.stackrox.io/config-hash", None)
            _drop_empty(metadata, "annotations")
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        if pod:
            # Difference (hardening): a pod-level security context (non-root, RuntimeDefault seccomp) as the
            # default of every container; the containers' own contexts are compared below.
            assert pod.pop("securityContext")["runAsNonRoot"] is True
        if obj["kind"] == "DaemonSet":
            # Difference: RollingUpdate with maxUnavailable 100% (upstream leaves the API default, 1 node).
            assert obj["spec"].pop("updateStrategy")["type"] == "RollingUpdate"
            # Difference (hardening): the token is mounted into the prefetch container only, not into `sleep`.
            assert pod.pop("automountServiceAccountToken") is False
            pod["volumes"] = [volume for volume in pod["volumes"] if volume["name"] != "service-account-token"]
            prefetch = pod["initContainers"][0]
            prefetch["args"].remove("--progress-interval=10s")
            prefetch["volumeMounts"] = [m for m in prefetch["volumeMounts"] if m["name"] != "service-account-token"]
        if obj["kind"] == "ClusterRole":
            # Difference (least privilege): nodes: patch only (upstream: get, patch, update; the agent only PATCHes).
            assert obj["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]
            obj["rules"][0]["verbs"] = ["get", "patch", "update"]
        if obj["kind"] == "Deployment":
            # Difference (hardening): the aggregator needs no API token.
            assert pod.pop("automountServiceAccountToken") is False
            # Difference: readiness and liveness probes on the aggregator's /healthz.
            for probe in ("readinessProbe", "livenessProbe"):
                assert pod["containers"][0].pop(probe)["httpGet"]["path"] == "/healthz"
    return objects


# --- Upstream's side: map its names and image onto ours --------------------------------------------------------------


def map_upstream(objects: list[Obj]) -> list[Obj]:
    objects = copy.deepcopy(objects)
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] in ("Role", "RoleBinding") and name in UPSTREAM_SCC_NAMES:
            # Difference: per-instance SCC Role/RoleBinding names.
            obj["metadata"]["name"] = "my-images-privileged-scc-use"
            if obj["kind"] == "RoleBinding":
                obj["roleRef"]["name"] = "my-images-privileged-scc-use"
        for container in containers_of(obj):
            # Difference: one image, no `-distro` variant for credential provider plugins.
            if container["image"].endswith("-distro"):
                container["image"] = container["image"][: -len("-distro")]
    return objects


# --- Security contexts: ours must keep every guarantee upstream's gives, then both are set aside ---------------------


def assert_at_least_as_strict(ours_context: Obj, upstream_context: Obj, where: str) -> None:
    if upstream_context.get("readOnlyRootFilesystem"):
        assert ours_context.get("readOnlyRootFilesystem") is True, where
    if upstream_context.get("runAsNonRoot"):
        assert ours_context.get("runAsNonRoot") is True, where
    if "runAsUser" in upstream_context:
        # Upstream's aggregator runs as 1000 on vanilla; ours as 65534 (any non-root UID keeps the meaning).
        assert ours_context.get("runAsUser", 1) != 0, where
    # Privileged stays privileged (OpenShift's CRI-O socket needs it); elsewhere ours drops it.
    assert bool(ours_context.get("privileged")) == bool(upstream_context.get("privileged")), where
    if not upstream_context.get("privileged"):
        assert ours_context["allowPrivilegeEscalation"] is False, where
        assert ours_context["capabilities"] == {"drop": ["ALL"]}, where
        assert ours_context["seccompProfile"] == {"type": "RuntimeDefault"}, where


def set_security_contexts_aside(ours_objects: list[Obj], upstream_objects: list[Obj]) -> None:
    assert len(ours_objects) == len(upstream_objects)
    for ours_obj, upstream_obj in zip(ours_objects, upstream_objects):
        for ours_container, upstream_container in zip(containers_of(ours_obj), containers_of(upstream_obj)):
            where = f"{ours_obj['kind']}/{ours_container['name']}"
            assert_at_least_as_strict(
                ours_container.pop("securityContext"), upstream_container.pop("securityContext"), where
            )


@pytest.mark.parametrize("filename", sorted(CASES))
def test_same_meaning_as_upstream(filename: str) -> None:
    ours_objects = strip_ours(ours(CASES[filename]))
    upstream_objects = map_upstream(load_upstream(filename))
    assert [obj["kind"] for obj in ours_objects] == [obj["kind"] for obj in upstream_objects]
    set_security_contexts_aside(ours_objects, upstream_objects)
    for ours_obj, upstream_obj in zip(ours_objects, upstream_objects):
        assert ours_obj == upstream_obj, f"{ours_obj['kind']} {ours_obj['metadata']['name']}"


def test_comparison_catches_an_undocumented_difference() -> None:
    # The comparison itself must be able to fail: change one arg and it has to notice.
    ours_objects = strip_ours(ours({}))
    upstream_objects = map_upstream(load_upstream("vanilla.yaml.txt"))
    set_security_contexts_aside(ours_objects, upstream_objects)
    ours_objects[-1]["spec"]["template"]["spec"]["initContainers"][0]["args"].append("--debug")
    assert ours_objects != upstream_objects


def test_upstream_fixtures_are_the_three_renders() -> None:
    kinds = {name: [obj["kind"] for obj in load_upstream(name)] for name in CASES}
    assert kinds["vanilla.yaml.txt"] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    assert kinds["ocp-secret-metrics.yaml.txt"] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "DaemonSet",
    ]
