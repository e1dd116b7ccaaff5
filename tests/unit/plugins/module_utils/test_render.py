# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The render: golden files per flavor and option, and each deliberate difference from the Go generator.

Golden files live in fixtures/golden/<case>.yaml.txt (not .yaml: yamllint
sanity rejects multi-document files). After an intended change of the render, rewrite them with
``PREFETCH_REGENERATE_GOLDEN=1 pytest tests/unit/plugins/module_utils/test_render.py`` run in a built
``ansible_collections/stackrox/prefetch`` tree, copy the files back, review the diff by eye and commit it;
without the variable the test only compares.
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import pytest
import yaml

from ansible_collections.stackrox.prefetch.plugins.module_utils._imagelist import parse_image_list
from ansible_collections.stackrox.prefetch.plugins.module_utils._render import (
    CONFIG_HASH_ANNOTATION,
    NAMESPACE_LABEL,
    config_hash,
    fetch_args,
    render,
    to_yaml,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import validate_settings

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "golden"
IMAGES = ["registry.test:5000/team/app:v1", "registry.test:5000/team/db:v2"]
COMMON_LABELS = {
    "app.kubernetes.io/name": "image-prefetcher",
    "app.kubernetes.io/instance": "my-images",
    "app.kubernetes.io/managed-by": "stackrox.prefetch",
}

GOLDEN_CASES: dict[str, dict[str, t.Any]] = {
    "vanilla": {},
    "ocp": {"flavor": "ocp"},
    "crio": {"flavor": "crio"},
    "k3s": {"flavor": "k3s"},
    "rke2": {"flavor": "rke2"},
    "microk8s": {"flavor": "microk8s"},
    "vanilla-secret": {"secret": "my-secret"},
    "vanilla-metrics": {"collect_metrics": True},
    "vanilla-metrics-loadbalancer": {"collect_metrics": True, "metrics_service_type": "LoadBalancer"},
    "ocp-secret-metrics": {"flavor": "ocp", "secret": "my-secret", "collect_metrics": True, "namespace": "prefetch"},
    "vanilla-gke": {"credential_provider": "GKE"},
    "cri-socket": {"flavor": "crio", "cri_socket": "/run/custom-crio/crio.sock"},
    "agent-options": {
        "pull_policy": "IfNotPresent",
        "max_parallel_pulls": 4,
        "not_found": "fail",
        "initial_pull_attempt_timeout": "15s",
        "max_pull_attempt_timeout": "2m",
        "overall_timeout": "45m",
        "initial_pull_attempt_delay": "500ms",
        "max_pull_attempt_delay": "1m",
        "agent_debug": True,
    },
    "node-slots": {"parallel_nodes": 2, "canary": True, "namespace": "prefetch"},
    "scheduling": {
        "node_selector": {"node-role.kubernetes.io/worker": ""},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}],
        "priority_class_name": "system-node-critical",
        "resources": {"prefetch": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}},
        "max_unavailable": 1,
        "image": "registry.example.com/tools/prefetch-agent",
        "version": "v0.4.2-0.20251126115717-559dd9fd402f",
    },
}


def make_settings(**overrides: t.Any):
    return validate_settings({"name": "my-images", "images": list(IMAGES), **overrides})


def rendered(**overrides: t.Any) -> list[dict[str, t.Any]]:
    return render(make_settings(**overrides))


def by_kind(objects: list[dict[str, t.Any]], kind: str) -> dict[str, t.Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def pod_spec(objects: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    return by_kind(objects, "DaemonSet")["spec"]["template"]["spec"]


def prefetch(objects: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    return pod_spec(objects)["initContainers"][0]


# --- Golden files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_render(case: str) -> None:
    text = to_yaml(rendered(**GOLDEN_CASES[case]))
    path = GOLDEN_DIR / f"{case}.yaml.txt"
    if os.environ.get("PREFETCH_REGENERATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text


def test_every_golden_file_has_a_case() -> None:
    assert {path.name[: -len(".yaml.txt")] for path in GOLDEN_DIR.glob("*.yaml.txt")} == set(GOLDEN_CASES)


def test_yaml_round_trips_to_the_objects() -> None:
    objects = rendered(**GOLDEN_CASES["ocp-secret-metrics"])
    text = to_yaml(objects)
    assert text.startswith("---\napiVersion: v1\nkind: ServiceAccount\n")
    assert list(yaml.safe_load_all(text)) == objects


def test_yaml_round_trips_awkward_strings() -> None:
    # Strings YAML would misread unquoted, a BOM, non-ASCII and inner blanks must survive the text form exactly.
    awkward = ["yes", "1.0", "x: y", "'quoted'", "\ufeffnginx", "caf\u00e9/app:1", "one two", "a\tb", "- dash"]
    objects = rendered(images=awkward, node_selector={"on": "true"})
    assert list(yaml.safe_load_all(to_yaml(objects))) == objects
    config_map = by_kind(list(yaml.safe_load_all(to_yaml(objects))), "ConfigMap")
    assert parse_image_list(config_map["data"]["images.txt"]) == awkward


@pytest.mark.parametrize("odd", ["b\x85c:1", "b\rc:1", "b\u2028c:1", "b\u2029c:1"])
def test_yaml_keeps_characters_a_literal_block_would_turn_into_line_breaks(odd: str) -> None:
    # QA: a NEL inside an entry came back from the `yaml`/dest text as a line break, splitting one entry in two,
    # so `kubectl apply -f dest` gave the nodes another list than the module applied. Such text is double-quoted.
    images = ["registry.test:5000/team/app:v1", odd]
    objects = rendered(images=images)
    text = to_yaml(objects)
    assert list(yaml.safe_load_all(text)) == objects
    assert parse_image_list(by_kind(list(yaml.safe_load_all(text)), "ConfigMap")["data"]["images.txt"]) == images
    assert "images.txt: |" in to_yaml(rendered())  # plain lists keep the readable literal block


def test_render_is_deterministic_and_unaliased() -> None:
    first, second = rendered(), rendered()
    assert first == second
    first[0]["metadata"]["name"] = "changed"
    assert rendered()[0]["metadata"]["name"] == "my-images"


# --- Objects per flavor and option -----------------------------------------------------------------------------------


def kinds_and_names(objects: list[dict[str, t.Any]]) -> list[tuple[str, str]]:
    return [(obj["kind"], obj["metadata"]["name"]) for obj in objects]


def test_vanilla_objects_in_apply_order() -> None:
    assert kinds_and_names(rendered()) == [
        ("ServiceAccount", "my-images"),
        ("ClusterRole", "my-images-node-labeler"),
        ("ClusterRoleBinding", "my-images-node-labeler"),
        ("Role", "my-images-progress"),
        ("RoleBinding", "my-images-progress"),
        ("ConfigMap", "my-images"),
        ("NetworkPolicy", "my-images"),
        ("DaemonSet", "my-images"),
    ]


def test_ocp_with_metrics_objects_in_apply_order() -> None:
    assert kinds_and_names(rendered(flavor="ocp", collect_metrics=True)) == [
        ("ServiceAccount", "my-images"),
        ("ClusterRole", "my-images-node-labeler"),
        ("ClusterRoleBinding", "my-images-node-labeler"),
        ("Role", "my-images-privileged-scc-use"),
        ("RoleBinding", "my-images-privileged-scc-use"),
        ("Role", "my-images-progress"),
        ("RoleBinding", "my-images-progress"),
        ("ConfigMap", "my-images"),
        ("NetworkPolicy", "my-images"),
        ("NetworkPolicy", "my-images-metrics"),
        ("Deployment", "my-images-metrics"),
        ("Service", "my-images-metrics"),
        ("DaemonSet", "my-images"),
    ]


@pytest.mark.parametrize("collect_metrics", [False, True])
def test_network_policy_false_renders_no_network_policy(collect_metrics: bool) -> None:
    kinds = [obj["kind"] for obj in rendered(network_policy=False, collect_metrics=collect_metrics)]
    assert "NetworkPolicy" not in kinds
    assert config_hash(make_settings(network_policy=False)) == config_hash(make_settings())


@pytest.mark.parametrize(
    ("flavor", "host_dir", "socket"),
    [
        ("vanilla", "/var/run/containerd", "containerd.sock"),
        ("ocp", "/var/run/crio", "crio.sock"),
        ("crio", "/var/run/crio", "crio.sock"),
        ("k3s", "/run/k3s/containerd", "containerd.sock"),
        ("rke2", "/run/k3s/containerd", "containerd.sock"),
        ("microk8s", "/var/snap/microk8s/common/run", "containerd.sock"),
    ],
)
def test_flavor_socket_wiring(flavor: str, host_dir: str, socket: str) -> None:
    objects = rendered(flavor=flavor)
    assert pod_spec(objects)["volumes"][0] == {"name": "cri-socket-dir", "hostPath": {"path": host_dir}}
    assert f"--cri-socket=/tmp/cri/{socket}" in prefetch(objects)["args"]
    assert prefetch(objects)["volumeMounts"][0] == {"name": "cri-socket-dir", "mountPath": "/tmp/cri", "readOnly": True}


def test_cri_socket_override() -> None:
    objects = rendered(cri_socket="/opt/runtime/run/cri-dockerd.sock")
    assert pod_spec(objects)["volumes"][0]["hostPath"] == {"path": "/opt/runtime/run"}
    assert "--cri-socket=/tmp/cri/cri-dockerd.sock" in prefetch(objects)["args"]


@pytest.mark.parametrize("flavor", ["vanilla", "crio", "k3s", "rke2", "microk8s"])
def test_only_ocp_gets_scc_rbac_and_annotation(flavor: str) -> None:
    objects = rendered(flavor=flavor)
    assert not [obj for obj in objects if obj["metadata"]["name"] == "my-images-privileged-scc-use"]
    annotations = by_kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert "openshift.io/required-scc" not in annotations


def test_ocp_scc_wiring() -> None:
    objects = rendered(flavor="ocp", namespace="prefetch", agent_progress_interval="0s")
    role, binding = by_kind(objects, "Role"), by_kind(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "prefetch"
    assert role["rules"] == [
        {
            "apiGroups": ["security.openshift.io"],
            "resourceNames": ["privileged"],
            "resources": ["securitycontextconstraints"],
            "verbs": ["use"],
        }
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-images"}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "my-images-privileged-scc-use",
    }
    annotations = by_kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["openshift.io/required-scc"] == "privileged"


def test_node_labeler_rbac() -> None:
    objects = rendered(namespace="tools")
    role, binding = by_kind(objects, "ClusterRole"), by_kind(objects, "ClusterRoleBinding")
    assert "namespace" not in role["metadata"] and "namespace" not in binding["metadata"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-images", "namespace": "tools"}]
    assert binding["roleRef"]["name"] == "my-images-node-labeler"


def test_secret_wiring() -> None:
    objects = rendered(secret="my-secret")
    assert prefetch(objects)["args"][1] == "--docker-config=/tmp/pull-secret/.dockerconfigjson"
    assert {"mountPath": "/tmp/pull-secret", "name": "pull-secret", "readOnly": True} in prefetch(objects)[
        "volumeMounts"
    ]
    assert {"name": "pull-secret", "secret": {"secretName": "my-secret"}} in pod_spec(objects)["volumes"]
    assert not [arg for arg in prefetch(rendered())["args"] if arg.startswith("--docker-config")]


def test_metrics_wiring() -> None:
    objects = rendered(collect_metrics=True)
    assert "--metrics-endpoint=my-images-metrics:8443" in prefetch(objects)["args"]
    deployment, service = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["aggregate-metrics", "--debug"]
    assert container["ports"] == [{"containerPort": 8443, "name": "grpc"}, {"containerPort": 8080, "name": "http"}]
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "my-images-metrics"}
    assert service["spec"]["selector"] == {"app": "my-images-metrics"}
    assert [(port["name"], port["port"]) for port in service["spec"]["ports"]] == [("grpc", 8443), ("http", 8080)]
    assert not [arg for arg in prefetch(rendered())["args"] if arg.startswith("--metrics-endpoint")]


def test_gke_credential_provider_wiring_without_image_switch() -> None:
    objects = rendered(credential_provider="GKE", agent_progress_interval="0s")
    assert prefetch(objects)["args"][-2:] == [
        "--image-credential-provider-config=/tmp/credential-provider/cri_auth_config.yaml",
        "--image-credential-provider-bin-dir=/tmp/credential-provider-bin",
    ]
    assert prefetch(objects)["volumeMounts"][-2:] == [
        {"mountPath": "/tmp/credential-provider", "name": "credential-provider-config", "readOnly": True},
        {"mountPath": "/tmp/credential-provider-bin", "name": "credential-provider-bin", "readOnly": True},
    ]
    assert pod_spec(objects)["volumes"][-2:] == [
        {"name": "credential-provider-config", "hostPath": {"path": "/etc/srv/kubernetes", "type": "Directory"}},
        {"name": "credential-provider-bin", "hostPath": {"path": "/home/kubernetes/bin", "type": "Directory"}},
    ]
    # Deliberate difference: no `-distro` image.
    assert prefetch(objects)["image"] == "quay.io/stackrox-io/prefetch-agent:0.1.0"


def test_env_of_the_prefetch_container() -> None:
    assert prefetch(rendered())["env"] == [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "INSTANCE_NAME", "value": "my-images"},
    ]


def test_agent_flags_only_when_not_default() -> None:
    assert fetch_args(make_settings()) == [
        "fetch",
        "--image-list-file=/tmp/list/images.txt",
        "--cri-socket=/tmp/cri/containerd.sock",
        "--progress-interval=10s",  # the agent's own default is 0s (off), as the Go tool has no such flag
    ]
    assert fetch_args(make_settings(**GOLDEN_CASES["agent-options"]))[3:] == [
        "--pull-policy=IfNotPresent",
        "--max-parallel-pulls=4",
        "--not-found=fail",
        "--progress-interval=10s",
        "--initial-pull-attempt-timeout=15s",
        "--max-pull-attempt-timeout=2m0s",
        "--overall-timeout=45m0s",
        "--initial-pull-attempt-delay=500ms",
        "--max-pull-attempt-delay=1m0s",
        "--debug",
    ]


@pytest.mark.parametrize(
    ("pulls", "flag"), [(32, None), (0, "--max-parallel-pulls=0"), (64, "--max-parallel-pulls=64")]
)
def test_max_parallel_pulls_flag_only_when_not_the_agents_default(pulls: int, flag: t.Optional[str]) -> None:
    args = fetch_args(make_settings(max_parallel_pulls=pulls))
    assert [a for a in args if a.startswith("--max-parallel-pulls")] == ([flag] if flag else [])


def test_scheduling_options() -> None:
    spec = pod_spec(rendered(**GOLDEN_CASES["scheduling"]))
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/worker": ""}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["initContainers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert spec["containers"][0]["image"] == "registry.example.com/tools/prefetch-agent:sha-559dd9f"
    default_spec = pod_spec(rendered())
    assert "nodeSelector" not in default_spec and "priorityClassName" not in default_spec
    assert default_spec["tolerations"] == [{"operator": "Exists"}]


def test_empty_tolerations_mean_none() -> None:
    assert pod_spec(rendered(tolerations=[]))["tolerations"] == []


def test_default_resources_are_upstreams() -> None:
    spec = pod_spec(rendered())
    assert spec["initContainers"][0]["resources"] == {
        "requests": {"cpu": "20m", "memory": "16Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "5m", "memory": "16Mi"},
        "limits": {"cpu": "100m", "memory": "64Mi"},
    }


# --- Deliberate differences, one test each ---------------------------------------------------------------------------


def test_difference_agent_image_is_ours() -> None:
    objects = rendered(collect_metrics=True)
    images = {prefetch(objects)["image"], pod_spec(objects)["containers"][0]["image"]}
    images.add(by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"])
    assert images == {"quay.io/stackrox-io/prefetch-agent:0.1.0"}


def test_difference_image_list_config_map_is_rendered() -> None:
    objects = rendered(images=["b", "a", "b"])
    config_map = by_kind(objects, "ConfigMap")
    assert config_map["metadata"]["name"] == "my-images"
    assert config_map["data"] == {"images.txt": "b\na\nb\n"}
    assert {"name": "image-list", "configMap": {"name": "my-images"}} in pod_spec(objects)["volumes"]
    assert "--image-list-file=/tmp/list/images.txt" in prefetch(objects)["args"]


def test_difference_common_labels_on_every_object_and_pod_template() -> None:
    objects = rendered(flavor="ocp", collect_metrics=True)
    for obj in objects:
        assert COMMON_LABELS.items() <= obj["metadata"]["labels"].items(), obj["kind"]
    for kind, app in (("DaemonSet", "my-images"), ("Deployment", "my-images-metrics")):
        workload = by_kind(objects, kind)
        assert workload["spec"]["template"]["metadata"]["labels"] == {"app": app, **COMMON_LABELS}
        # Selectors stay upstream's, so they keep matching pods of an upstream-made instance.
        assert workload["spec"]["selector"] == {"matchLabels": {"app": app}}


def test_difference_cluster_scoped_objects_name_their_namespace() -> None:
    objects = rendered(flavor="ocp", collect_metrics=True, namespace="team-a")
    for obj in objects:
        namespaced = "namespace" in obj["metadata"]
        labels = obj["metadata"]["labels"]
        assert (NAMESPACE_LABEL in labels) is not namespaced, obj["kind"]
        if not namespaced:
            assert labels[NAMESPACE_LABEL] == "team-a", obj["kind"]
    assert {obj["kind"] for obj in objects if "namespace" not in obj["metadata"]} == {
        "ClusterRole",
        "ClusterRoleBinding",
    }


def test_difference_config_hash_annotation() -> None:
    base = make_settings()
    annotations = by_kind(render(base), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[CONFIG_HASH_ANNOTATION] == config_hash(base)
    assert len(config_hash(base)) == 64 and int(config_hash(base), 16) >= 0
    # Stable for the same meaning: duplicates and duration spellings do not roll the pods.
    assert config_hash(make_settings(images=[*IMAGES, IMAGES[0]])) == config_hash(base)
    assert config_hash(make_settings(overall_timeout="60s")) == config_hash(make_settings(overall_timeout="1m"))
    # Settings that reach no pod do not change it either.
    assert config_hash(make_settings(max_unavailable=1)) == config_hash(base)
    metrics = make_settings(collect_metrics=True)
    assert config_hash(make_settings(collect_metrics=True, metrics_service_type="LoadBalancer")) == config_hash(metrics)
    # Anything the agent sees changes it.
    for change in (
        {"images": [*IMAGES, "registry.test:5000/team/new:v1"]},
        {"images": list(reversed(IMAGES))},
        {"pull_policy": "IfNotPresent"},
        {"secret": "s"},
        {"version": "0.2.0"},
        {"overall_timeout": "5m"},
    ):
        assert config_hash(make_settings(**change)) != config_hash(base), change


def test_config_hash_is_pinned() -> None:
    # sha256 of the canonical JSON; a change here rolls every deployed instance, so it must be deliberate.
    assert config_hash(make_settings()) == GOLDEN_HASH


def test_config_hash_of_the_pull_cap_default_is_the_old_defaults() -> None:
    # The default became the agent's cap of 32 (no flag, as the old default of 0): instances keep their checksum.
    # 0 now renders a flag (all at once), so it must roll the pods.
    assert config_hash(make_settings(max_parallel_pulls=32)) == GOLDEN_HASH
    assert len({GOLDEN_HASH, config_hash(make_settings(max_parallel_pulls=0)),
                config_hash(make_settings(max_parallel_pulls=4))}) == 3


GOLDEN_HASH = "a1a4bd78ef64f6c7c6defc0e9b7936fadf849e8e9dcc0070e25aab829326c384"


def test_difference_metrics_service_is_cluster_ip_by_default() -> None:
    assert by_kind(rendered(collect_metrics=True), "Service")["spec"]["type"] == "ClusterIP"
    service = by_kind(rendered(collect_metrics=True, metrics_service_type="LoadBalancer"), "Service")
    assert service["spec"]["type"] == "LoadBalancer"


def test_difference_scc_rbac_names_are_per_instance() -> None:
    def roles(**overrides: t.Any) -> set[tuple[str, str]]:
        objects = rendered(flavor="ocp", agent_progress_interval="0s", **overrides)
        return {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"].startswith("Role")}

    first, second = roles(), roles(name="other")
    assert first == {("Role", "my-images-privileged-scc-use"), ("RoleBinding", "my-images-privileged-scc-use")}
    assert not first & second


HARDENED = {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
NON_ROOT = {**HARDENED, "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534}
# The prefetch container opts out of the pod's non-root default explicitly.
ROOT = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}
POD_NON_ROOT = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("flavor", ["vanilla", "k3s", "rke2", "microk8s"])
def test_difference_hardened_security_contexts_on_containerd(flavor: str) -> None:
    objects = rendered(flavor=flavor, collect_metrics=True)
    assert prefetch(objects)["securityContext"] == {**HARDENED, **ROOT}
    assert pod_spec(objects)["containers"][0]["securityContext"] == NON_ROOT
    assert pod_spec(objects)["securityContext"] == POD_NON_ROOT
    aggregator_pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert aggregator_pod["containers"][0]["securityContext"] == NON_ROOT
    assert aggregator_pod["securityContext"] == POD_NON_ROOT


def test_difference_crio_is_not_privileged_but_spc_t() -> None:
    objects = rendered(flavor="crio")
    assert prefetch(objects)["securityContext"] == {**HARDENED, **ROOT, "seLinuxOptions": {"type": "spc_t"}}
    assert pod_spec(objects)["containers"][0]["securityContext"] == NON_ROOT
    assert pod_spec(objects)["securityContext"] == POD_NON_ROOT


def test_difference_ocp_prefetch_stays_privileged_and_others_are_hardened() -> None:
    objects = rendered(flavor="ocp", collect_metrics=True)
    assert prefetch(objects)["securityContext"] == {
        "readOnlyRootFilesystem": True,
        **ROOT,
        "allowPrivilegeEscalation": True,
        "privileged": True,
    }
    assert pod_spec(objects)["containers"][0]["securityContext"] == NON_ROOT
    # The privileged SCC the DaemonSet's pods use allows the fixed UID (the sleep container has it too).
    assert pod_spec(objects)["securityContext"] == POD_NON_ROOT
    aggregator_pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    # No fixed UID: OpenShift's restricted SCC assigns one from the namespace's range.
    assert aggregator_pod["containers"][0]["securityContext"] == {**HARDENED, "runAsNonRoot": True}
    assert aggregator_pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def test_difference_aggregator_does_not_mount_a_token() -> None:
    deployment = by_kind(rendered(collect_metrics=True), "Deployment")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not deployment["spec"]["template"]["spec"].get("volumes")


@pytest.mark.parametrize("flavor", ["vanilla", "ocp"])
def test_difference_only_the_prefetch_container_mounts_a_token(flavor: str) -> None:
    objects = rendered(flavor=flavor)
    spec = pod_spec(objects)
    assert spec["automountServiceAccountToken"] is False
    mount = {
        "name": "service-account-token",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    assert mount in prefetch(objects)["volumeMounts"]
    assert "volumeMounts" not in spec["containers"][0]  # sleep runs for the pod's life: no token
    volume = next(item for item in spec["volumes"] if item["name"] == "service-account-token")
    # The files of the kubelet's automatic kube-api-access volume, where the agent's in-cluster config reads them.
    assert volume["projected"]["sources"] == [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {
            "downwardAPI": {
                "items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]
            }
        },
    ]


AGENT_POD_LABELS = {"app": "my-images", **COMMON_LABELS}


def test_difference_agent_pods_accept_no_ingress() -> None:
    objects = rendered()
    policy = by_kind(objects, "NetworkPolicy")
    assert policy["metadata"]["name"] == "my-images"
    assert policy["spec"] == {"podSelector": {"matchLabels": AGENT_POD_LABELS}, "policyTypes": ["Ingress"]}
    # It selects exactly the DaemonSet's pods (all their labels, so no other pod with `app: my-images`).
    assert by_kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"] == AGENT_POD_LABELS


def test_difference_aggregator_accepts_grpc_from_the_agents_and_http_from_anywhere() -> None:
    objects = rendered(collect_metrics=True)
    policies = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "NetworkPolicy"}
    assert sorted(policies) == ["my-images", "my-images-metrics"]
    aggregator_labels = {"app": "my-images-metrics", **COMMON_LABELS}
    assert by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["labels"] == aggregator_labels
    assert policies["my-images-metrics"]["spec"] == {
        "podSelector": {"matchLabels": aggregator_labels},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": AGENT_POD_LABELS}}],
                "ports": [{"protocol": "TCP", "port": 8443}],
            },
            # The API server's service proxy, kubelet probes and LoadBalancer clients: no pod label to select.
            {"ports": [{"protocol": "TCP", "port": 8080}]},
        ],
    }


def test_difference_aggregator_has_health_probes() -> None:
    container = by_kind(rendered(collect_metrics=True), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    health = {"httpGet": {"path": "/healthz", "port": "http"}}
    assert container["readinessProbe"] == {**health, "periodSeconds": 5}
    assert container["livenessProbe"] == {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}


def test_difference_rolling_update_with_max_unavailable() -> None:
    strategy = by_kind(rendered(), "DaemonSet")["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    strategy = by_kind(rendered(max_unavailable="25%"), "DaemonSet")["spec"]["updateStrategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == "25%"


def test_termination_message_policy_stays_default() -> None:
    objects = rendered(flavor="ocp", collect_metrics=True)
    containers = [*pod_spec(objects)["initContainers"], *pod_spec(objects)["containers"]]
    containers += by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert all("terminationMessagePolicy" not in container for container in containers)
    assert all("terminationMessagePath" not in container for container in containers)


# --- Node slots (parallel_nodes, canary) ------------------------------------------------------------------------------


def test_node_slots_off_by_default_renders_no_lease_rbac_nor_flags() -> None:
    objects = rendered()
    assert not [obj for obj in objects if obj["metadata"]["name"] == "my-images-node-slots"]
    assert not [arg for arg in prefetch(objects)["args"] if arg.startswith(("--parallel-nodes", "--canary"))]


def test_node_slots_default_keeps_the_config_hash() -> None:
    # Hashed only when set: an upgrade of the collection alone restarts no pod.
    assert config_hash(make_settings()) == config_hash(make_settings(parallel_nodes=0, canary=False))
    assert config_hash(make_settings(parallel_nodes=2)) != config_hash(make_settings())
    assert config_hash(make_settings(parallel_nodes=2, canary=True)) != config_hash(make_settings(parallel_nodes=2))


def test_node_slots_flags() -> None:
    assert fetch_args(make_settings(parallel_nodes=3))[-1] == "--parallel-nodes=3"
    assert fetch_args(make_settings(parallel_nodes=3, canary=True))[-2:] == ["--parallel-nodes=3", "--canary"]


def test_node_slots_rbac_is_namespaced_and_minimal() -> None:
    objects = rendered(parallel_nodes=2, namespace="prefetch", agent_progress_interval="0s")
    assert kinds_and_names(objects) == [
        ("ServiceAccount", "my-images"),
        ("ClusterRole", "my-images-node-labeler"),
        ("ClusterRoleBinding", "my-images-node-labeler"),
        ("Role", "my-images-node-slots"),
        ("RoleBinding", "my-images-node-slots"),
        ("ConfigMap", "my-images"),
        ("NetworkPolicy", "my-images"),
        ("DaemonSet", "my-images"),
    ]
    role = by_kind(objects, "Role")
    assert role["metadata"]["namespace"] == "prefetch"
    assert role["metadata"]["labels"] == COMMON_LABELS
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]
    binding = by_kind(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "prefetch"
    assert binding["metadata"]["labels"] == COMMON_LABELS
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-images"}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "my-images-node-slots",
    }
    # The cluster-wide RBAC is unchanged: nodes/patch only.
    assert by_kind(objects, "ClusterRole")["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]


def test_node_slots_rbac_next_to_the_scc_rbac_on_ocp() -> None:
    names = kinds_and_names(rendered(flavor="ocp", parallel_nodes=1))
    assert names[3:7] == [
        ("Role", "my-images-privileged-scc-use"),
        ("RoleBinding", "my-images-privileged-scc-use"),
        ("Role", "my-images-node-slots"),
        ("RoleBinding", "my-images-node-slots"),
    ]


# --- Progress published by the agents (agent_progress_interval) -------------------------------------------------------


def test_progress_rbac_is_pods_patch_in_the_namespace_only() -> None:
    objects = rendered(namespace="prefetch")
    named = [o for o in objects if o["metadata"]["name"] == "my-images-progress"]
    role, binding = by_kind(named, "Role"), by_kind(named, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "prefetch"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-images"}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "my-images-progress"}
    assert "--progress-interval=10s" in prefetch(objects)["args"]


@pytest.mark.parametrize(("interval", "flag"), [("0s", None), ("0", None), ("90s", "--progress-interval=1m30s")])
def test_progress_interval_flag_and_role(interval: str, flag: t.Optional[str]) -> None:
    objects = rendered(agent_progress_interval=interval)
    flags = [a for a in prefetch(objects)["args"] if a.startswith("--progress-interval")]
    assert flags == ([flag] if flag else [])
    assert any(o["metadata"]["name"] == "my-images-progress" for o in objects) is (flag is not None)


def test_progress_default_keeps_the_config_hash() -> None:
    assert config_hash(make_settings(agent_progress_interval="10s")) == GOLDEN_HASH
    assert config_hash(make_settings(agent_progress_interval="0s")) != GOLDEN_HASH
