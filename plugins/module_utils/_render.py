# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the Kubernetes objects of one prefetch instance (pure: no I/O, no cluster).

The objects carry the same meaning as upstream's generator (BEHAVIOR.md §8) plus the deliberate
differences listed in docs/manifests.md. Object order is apply order: RBAC, the image list, the
network policies (in place before any pod they select starts), the metrics aggregator, then the
DaemonSet that uses them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import typing as t

from ansible_collections.stackrox.prefetch.plugins.module_utils._imagelist import image_list_text, unique_images
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import (
    AGENT_MAX_PARALLEL_PULLS,
    DURATION_FLAGS,
    Settings,
)

try:
    import yaml
except ImportError:  # PyYAML ships with ansible-core; the module reports its absence cleanly
    HAS_YAML = False
else:
    HAS_YAML = True

# typing.Dict, not dict[...]: aliases are evaluated at import time, and modules must import on Python 3.8.
Obj = t.Dict[str, t.Any]  # noqa: UP006

APP_NAME = "image-prefetcher"
MANAGER = "stackrox.prefetch"
CONFIG_HASH_ANNOTATION = "prefetch.stackrox.io/config-hash"
# On cluster-scoped objects only: the namespace of the instance that owns them, since their names
# (`<name>-node-labeler`, upstream's) are the same for instances of one name in different namespaces.
NAMESPACE_LABEL = "prefetch.stackrox.io/namespace"
REQUIRED_SCC_ANNOTATION = "openshift.io/required-scc"
IMAGE_LIST_KEY = "images.txt"
IMAGE_LIST_MOUNT = "/tmp/list"
CRI_MOUNT = "/tmp/cri"
PULL_SECRET_MOUNT = "/tmp/pull-secret"
GKE_CONFIG_MOUNT = "/tmp/credential-provider"
GKE_BIN_MOUNT = "/tmp/credential-provider-bin"
GKE_CONFIG_HOST_DIR = "/etc/srv/kubernetes"
GKE_BIN_HOST_DIR = "/home/kubernetes/bin"
GKE_CONFIG_FILE = "cri_auth_config.yaml"
METRICS_GRPC_PORT = 8443
METRICS_HTTP_PORT = 8080
NOBODY = 65534
# Where client-go (and the agent's incluster.py) looks for the pod's service-account credentials.
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "service-account-token"
# One hour, the API server's default; the kubelet renews the token at 80% and the agent re-reads it per request.
TOKEN_EXPIRATION_SECONDS = 3600

# Lint hints upstream puts on its DaemonSet; kept so kube-linter users see the same result.
KUBE_LINTER_ANNOTATIONS = {
    "ignore-check.kube-linter.io/privilege-escalation-container": "Needs access to CRI socket.",
    "ignore-check.kube-linter.io/privileged-container": "Needs access to CRI socket.",
    "ignore-check.kube-linter.io/run-as-non-root": "Needs access to CRI socket.",
}

# Settings that reach no pod: changing them must not re-run the pulls on every node.
_UNHASHED_SETTINGS = ("images", "metrics_service_type", "max_unavailable", "network_policy")
# Settings added after the first release: hashed only when set, so instances that leave them at their default keep
# their checksum (and their pods) across an upgrade of the collection.
_HASHED_WHEN_SET: dict[str, t.Any] = {"parallel_nodes": 0, "canary": False, "agent_progress_interval": "10s"}


def common_labels(settings: Settings) -> dict[str, str]:
    """The labels every object of the instance carries; `state: absent` finds objects by them."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": settings.name,
        "app.kubernetes.io/managed-by": MANAGER,
    }


def _metadata(
    settings: Settings,
    name: str,
    namespaced: bool = True,
    labels: t.Optional[dict[str, str]] = None,
    annotations: t.Optional[dict[str, str]] = None,
) -> Obj:
    metadata: Obj = {"name": name}
    if namespaced:
        metadata["namespace"] = settings.namespace
    metadata["labels"] = {**(labels or {}), **common_labels(settings)}
    if not namespaced:
        metadata["labels"][NAMESPACE_LABEL] = settings.namespace
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def config_hash(settings: Settings) -> str:
    """sha256 of the distinct images and every setting that reaches the pods, in a canonical form.

    Image order is kept (it is the pull order when pulls are limited); duplicates are dropped
    (the agent pulls them once); durations are already canonical; keys are sorted.
    """
    agent_settings = {
        key: value
        for key, value in dataclasses.asdict(settings).items()
        if key not in _UNHASHED_SETTINGS and not (key in _HASHED_WHEN_SET and value == _HASHED_WHEN_SET[key])
    }
    agent_settings["max_parallel_pulls"] = _hashed_max_parallel_pulls(settings.max_parallel_pulls)
    payload = {"images": unique_images(settings.images), "settings": agent_settings}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _hashed_max_parallel_pulls(value: int) -> t.Union[int, str]:
    """The hash's form of max_parallel_pulls, from before its default became the agent's cap: the default (no flag
    rendered) is hashed as 0, as the old default was, so such instances keep their checksum across the upgrade; 0
    (all at once, now a rendered flag) needs a form of its own."""
    if value == AGENT_MAX_PARALLEL_PULLS:
        return 0
    return "unlimited" if value == 0 else value


# --- RBAC -------------------------------------------------------------------------------------------------------------


def _service_account(settings: Settings) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(settings, settings.name)}


def node_labeler_name(settings: Settings) -> str:
    return f"{settings.name}-node-labeler"


def scc_rbac_name(settings: Settings) -> str:
    """Per instance, unlike upstream's fixed names that two instances in one namespace would share."""
    return f"{settings.name}-privileged-scc-use"


def node_slots_rbac_name(settings: Settings) -> str:
    return f"{settings.name}-node-slots"


def progress_rbac_name(settings: Settings) -> str:
    return f"{settings.name}-progress"


def metrics_name(settings: Settings) -> str:
    return f"{settings.name}-metrics"


def _cluster_role(settings: Settings) -> Obj:
    description = (
        "Allows the image-prefetcher to label nodes with prefetch status for instance "
        f"{settings.name} in namespace {settings.namespace}."
    )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _metadata(
            settings,
            node_labeler_name(settings),
            namespaced=False,
            annotations={"kubernetes.io/description": description},
        ),
        # patch only: the agent's one request is a strategic-merge PATCH of its own Node (upstream also grants get
        # and update, which nothing uses; checked with `kubectl auth can-i --list` in tests/e2e).
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}],
    }


def _cluster_role_binding(settings: Settings) -> Obj:
    description = (
        "Grants node labeling permissions to image-prefetcher ServiceAccount "
        f"{settings.name} in namespace {settings.namespace}."
    )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(
            settings,
            node_labeler_name(settings),
            namespaced=False,
            annotations={"kubernetes.io/description": description},
        ),
        "subjects": [{"kind": "ServiceAccount", "name": settings.name, "namespace": settings.namespace}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": node_labeler_name(settings),
        },
    }


def _scc_role(settings: Settings) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(settings, scc_rbac_name(settings)),
        "rules": [
            {
                "apiGroups": ["security.openshift.io"],
                "resourceNames": ["privileged"],
                "resources": ["securitycontextconstraints"],
                "verbs": ["use"],
            }
        ],
    }


def _role_binding(settings: Settings, role: str) -> Obj:
    """Binds the namespaced Role ``role`` (of the same name) to the agents' ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(settings, role),
        "subjects": [{"kind": "ServiceAccount", "name": settings.name}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
    }


def _node_slots_role(settings: Settings) -> Obj:
    """The node-slot Leases (parallel_nodes): in the instance's namespace only, nothing cluster-wide.

    The agent reads, lists, watches (a waiter wakes when a slot is released), creates and updates (takes, renews,
    releases by clearing the holder) Leases; it never deletes one, and names are not known in advance for `list`, so
    no resourceNames.
    """
    description = (
        f"Allows the image-prefetcher agents of instance {settings.name} to take node slots "
        f"(Leases {settings.name}-slot-<i>) in namespace {settings.namespace}."
    )
    rule = {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "list", "watch", "create", "update"],
    }
    return _agents_role(settings, node_slots_rbac_name(settings), description, rule)


def _agents_role(settings: Settings, name: str, description: str, rule: Obj) -> Obj:
    """A namespaced Role of the agents (bound by ``_role_binding``), described for whoever reads the RBAC."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(settings, name, annotations={"kubernetes.io/description": description}),
        "rules": [rule],
    }


def _progress_role(settings: Settings) -> Obj:
    """The agents' progress annotation on their own pods (agent_progress_interval): patch, of pods, in the instance's
    namespace only. Pod names are made by the DaemonSet controller, so no resourceNames."""
    description = (
        f"Allows the image-prefetcher agents of instance {settings.name} to publish their progress "
        f"(annotation prefetch.stackrox.io/progress on their own pods) in namespace {settings.namespace}."
    )
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}
    return _agents_role(settings, progress_rbac_name(settings), description, rule)


# --- Image list -------------------------------------------------------------------------------------------------------


def _config_map(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(settings, settings.name),
        "data": {IMAGE_LIST_KEY: image_list_text(settings.images)},
    }


# --- Security contexts ------------------------------------------------------------------------------------------------


def _hardened(extra: Obj) -> Obj:
    """Restricted-profile basics shared by every container that can have them."""
    return {
        "readOnlyRootFilesystem": True,
        **extra,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# The one container that runs as root opts out of the pod's non-root default explicitly.
_ROOT = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}


def _prefetch_security_context(settings: Settings) -> Obj:
    """Root, since the CRI socket is root-owned (0660 root:root); privileged only on OpenShift, whose SELinux policy
    needs it. Without capabilities root reaches the socket through its owner bits only, nothing else of the host."""
    flavor = settings.flavor_spec
    if flavor.openshift:
        return {"readOnlyRootFilesystem": True, **_ROOT, "allowPrivilegeEscalation": True, "privileged": True}
    extra: Obj = dict(_ROOT)
    if flavor.selinux_spc:
        extra["seLinuxOptions"] = {"type": "spc_t"}
    return _hardened(extra)


def _non_root_security_context() -> Obj:
    return _hardened({"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY})


def _aggregator_security_context(settings: Settings) -> Obj:
    # OpenShift's restricted SCC assigns the UID from the namespace's range: a fixed one would be refused.
    if settings.flavor_spec.openshift:
        return _hardened({"runAsNonRoot": True})
    return _non_root_security_context()


def _pod_security_context(fixed_uid: bool = True) -> Obj:
    """The pod's defaults for every container: non-root and the runtime's seccomp profile.

    Containers repeat what they need, so a container added later starts from these; the prefetch container
    overrides them with root (``_ROOT``), which the CRI socket needs.
    """
    context: Obj = {"runAsNonRoot": True}
    if fixed_uid:
        context.update({"runAsUser": NOBODY, "runAsGroup": NOBODY})
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


# --- Network policies -------------------------------------------------------------------------------------------------


def agent_pod_labels(settings: Settings) -> dict[str, str]:
    """The labels of the DaemonSet's pods: upstream's selector plus the instance labels."""
    return {"app": settings.name, **common_labels(settings)}


def aggregator_pod_labels(settings: Settings) -> dict[str, str]:
    return {"app": metrics_name(settings), **common_labels(settings)}


def _network_policy(settings: Settings, name: str, pod_labels: dict[str, str], ingress: list[Obj]) -> Obj:
    # Ingress only: the agents must reach registries, the API server and the aggregator, whatever the cluster
    # allows. Selecting by every pod label keeps other pods that happen to share `app: <name>` out of it.
    spec: Obj = {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Ingress"]}
    if ingress:
        spec["ingress"] = ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(settings, name),
        "spec": spec,
    }


def _agent_network_policy(settings: Settings) -> Obj:
    """No ingress at all to the agent pods: they only make outgoing connections."""
    return _network_policy(settings, settings.name, agent_pod_labels(settings), [])


def _aggregator_network_policy(settings: Settings) -> Obj:
    """gRPC submissions only from this instance's agents; HTTP (/metrics, /healthz) from anywhere.

    HTTP is read through the API server's service proxy (the rollout module), by kubelet probes and, with a
    LoadBalancer, from outside: none of them has a pod label or an address known here to select.
    """
    grpc = {
        "from": [{"podSelector": {"matchLabels": agent_pod_labels(settings)}}],
        "ports": [{"protocol": "TCP", "port": METRICS_GRPC_PORT}],
    }
    http = {"ports": [{"protocol": "TCP", "port": METRICS_HTTP_PORT}]}
    return _network_policy(settings, metrics_name(settings), aggregator_pod_labels(settings), [grpc, http])


# --- Metrics aggregator -----------------------------------------------------------------------------------------------


def _health_probe(**timing: int) -> Obj:
    # /healthz is answered only once the gRPC server has started too (aggregator.serve starts it first).
    return {"httpGet": {"path": "/healthz", "port": "http"}, **timing}


def _metrics_deployment(settings: Settings) -> Obj:
    selector = {"app": metrics_name(settings)}
    container = {
        "name": "aggregator",
        "image": settings.image,
        "args": ["aggregate-metrics", "--debug"],
        "ports": [
            {"containerPort": METRICS_GRPC_PORT, "name": "grpc"},
            {"containerPort": METRICS_HTTP_PORT, "name": "http"},
        ],
        "resources": settings.resources["aggregator"],
        # Ready only once it listens, so the Service sends no agent to it before; a wedged one is restarted.
        # A restart loses the records it holds in memory, hence the generous timeout against false alarms.
        "readinessProbe": _health_probe(periodSeconds=5),
        "livenessProbe": _health_probe(periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
        "securityContext": _aggregator_security_context(settings),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings, metrics_name(settings), labels=selector),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": aggregator_pod_labels(settings)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security_context(fixed_uid=not settings.flavor_spec.openshift),
                    "containers": [container],
                },
            },
        },
    }


def _metrics_service(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(settings, metrics_name(settings)),
        "spec": {
            "ports": [
                {"name": "grpc", "port": METRICS_GRPC_PORT, "protocol": "TCP"},
                {"name": "http", "port": METRICS_HTTP_PORT, "protocol": "TCP"},
            ],
            "selector": {"app": metrics_name(settings)},
            "type": settings.metrics_service_type,
        },
    }


# --- DaemonSet --------------------------------------------------------------------------------------------------------


def fetch_args(settings: Settings) -> list[str]:
    """The `fetch` command line: upstream's flags in upstream's order, then ours when not at their default."""
    socket_name = posixpath.basename(settings.cri_socket)
    args = ["fetch"]
    if settings.secret:
        args.append(f"--docker-config={PULL_SECRET_MOUNT}/.dockerconfigjson")
    args.append(f"--image-list-file={IMAGE_LIST_MOUNT}/{IMAGE_LIST_KEY}")
    args.append(f"--cri-socket={CRI_MOUNT}/{socket_name}")
    if settings.collect_metrics:
        args.append(f"--metrics-endpoint={metrics_name(settings)}:{METRICS_GRPC_PORT}")
    if settings.credential_provider == "GKE":
        args.append(f"--image-credential-provider-config={GKE_CONFIG_MOUNT}/{GKE_CONFIG_FILE}")
        args.append(f"--image-credential-provider-bin-dir={GKE_BIN_MOUNT}")
    if settings.pull_policy != "Always":
        args.append(f"--pull-policy={settings.pull_policy}")
    if settings.max_parallel_pulls != AGENT_MAX_PARALLEL_PULLS:
        args.append(f"--max-parallel-pulls={settings.max_parallel_pulls}")
    if settings.not_found != "retry":
        args.append(f"--not-found={settings.not_found}")
    if settings.publishes_progress:
        args.append(f"--progress-interval={settings.agent_progress_interval}")
    if settings.parallel_nodes:
        args.append(f"--parallel-nodes={settings.parallel_nodes}")
        if settings.canary:
            args.append("--canary")
    for option, flag in DURATION_FLAGS.items():
        if option in settings.durations:
            args.append(f"{flag}={settings.durations[option]}")
    if settings.agent_debug:
        args.append("--debug")
    return args


def _prefetch_mounts(settings: Settings) -> list[Obj]:
    mounts: list[Obj] = [
        {"name": "cri-socket-dir", "mountPath": CRI_MOUNT, "readOnly": True},
        {"name": "image-list", "mountPath": IMAGE_LIST_MOUNT, "readOnly": True},
        {"name": TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True},
    ]
    if settings.secret:
        mounts.append({"mountPath": PULL_SECRET_MOUNT, "name": "pull-secret", "readOnly": True})
    if settings.credential_provider == "GKE":
        mounts.append({"mountPath": GKE_CONFIG_MOUNT, "name": "credential-provider-config", "readOnly": True})
        mounts.append({"mountPath": GKE_BIN_MOUNT, "name": "credential-provider-bin", "readOnly": True})
    return mounts


def _token_volume() -> Obj:
    """What the kubelet would mount into every container of the pod, for the prefetch container alone.

    The agent labels its node with the token; the `sleep` container, which runs for the pod's whole life, needs
    none, so the pod turns the automatic mount off and this projects the same three files (token, CA, namespace).
    """
    namespace_field = {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": namespace_field}]}},
            ]
        },
    }


def _volumes(settings: Settings) -> list[Obj]:
    volumes: list[Obj] = [
        {"name": "cri-socket-dir", "hostPath": {"path": posixpath.dirname(settings.cri_socket)}},
        {"name": "image-list", "configMap": {"name": settings.name}},
        _token_volume(),
    ]
    if settings.secret:
        volumes.append({"name": "pull-secret", "secret": {"secretName": settings.secret}})
    if settings.credential_provider == "GKE":
        volumes.append(
            {"name": "credential-provider-config", "hostPath": {"path": GKE_CONFIG_HOST_DIR, "type": "Directory"}}
        )
        volumes.append({"name": "credential-provider-bin", "hostPath": {"path": GKE_BIN_HOST_DIR, "type": "Directory"}})
    return volumes


def _prefetch_container(settings: Settings) -> Obj:
    return {
        "name": "prefetch",
        "image": settings.image,
        "args": fetch_args(settings),
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "INSTANCE_NAME", "value": settings.name},
        ],
        "resources": settings.resources["prefetch"],
        "volumeMounts": _prefetch_mounts(settings),
        "securityContext": _prefetch_security_context(settings),
    }


def _sleep_container(settings: Settings) -> Obj:
    return {
        "name": "sleep",
        "image": settings.image,
        "args": ["sleep"],
        "resources": settings.resources["sleep"],
        "securityContext": _non_root_security_context(),
    }


def _pod_annotations(settings: Settings) -> dict[str, str]:
    annotations = {}
    if settings.flavor_spec.openshift:
        annotations[REQUIRED_SCC_ANNOTATION] = "privileged"
    annotations[CONFIG_HASH_ANNOTATION] = config_hash(settings)
    return annotations


def _pod_spec(settings: Settings) -> Obj:
    spec: Obj = {
        "serviceAccountName": settings.name,
        "automountServiceAccountToken": False,  # the prefetch container alone mounts it (_token_volume)
        "securityContext": _pod_security_context(),
        "tolerations": [dict(item) for item in settings.tolerations],
    }
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.priority_class_name:
        spec["priorityClassName"] = settings.priority_class_name
    spec["initContainers"] = [_prefetch_container(settings)]
    spec["containers"] = [_sleep_container(settings)]
    spec["volumes"] = _volumes(settings)
    return spec


def _daemon_set(settings: Settings) -> Obj:
    selector = {"app": settings.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _metadata(settings, settings.name, annotations=KUBE_LINTER_ANNOTATIONS),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": settings.max_unavailable},
            },
            "template": {
                "metadata": {
                    "labels": agent_pod_labels(settings),
                    "annotations": _pod_annotations(settings),
                },
                "spec": _pod_spec(settings),
            },
        },
    }


def render(settings: Settings) -> list[Obj]:
    """Every object of the instance, in apply order."""
    objects = [_service_account(settings), _cluster_role(settings), _cluster_role_binding(settings)]
    if settings.flavor_spec.openshift:
        objects += [_scc_role(settings), _role_binding(settings, scc_rbac_name(settings))]
    if settings.parallel_nodes:
        objects += [_node_slots_role(settings), _role_binding(settings, node_slots_rbac_name(settings))]
    if settings.publishes_progress:
        objects += [_progress_role(settings), _role_binding(settings, progress_rbac_name(settings))]
    objects.append(_config_map(settings))
    if settings.network_policy:
        objects.append(_agent_network_policy(settings))
        if settings.collect_metrics:
            objects.append(_aggregator_network_policy(settings))
    if settings.collect_metrics:
        objects += [_metrics_deployment(settings), _metrics_service(settings)]
    objects.append(_daemon_set(settings))
    # Deep copies through JSON so callers can never alias the settings' dicts.
    return t.cast("list[Obj]", json.loads(json.dumps(objects)))


# Characters a YAML reader normalises to '\n' (or drops) inside a literal block scalar.
_BLOCK_UNSAFE = ("\r", "\x85", "\u2028", "\u2029")


def to_yaml(objects: t.Sequence[Obj]) -> str:
    """A multi-document YAML stream (`---` before each object); multi-line strings as literal blocks."""
    if not HAS_YAML:
        raise RuntimeError("PyYAML is required to write YAML")

    class _Dumper(yaml.SafeDumper):
        pass

    def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = None
        if "\n" in value:
            # A literal block keeps its text only when no other character reads as a line break: a YAML
            # reader turns a raw NEL (U+0085) or CR into '\n'. Such text is double-quoted, with escapes.
            style = '"' if any(char in value for char in _BLOCK_UNSAFE) else "|"
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _string)
    return t.cast(
        str,
        yaml.dump_all(
            objects,
            Dumper=_Dumper,
            explicit_start=True,
            sort_keys=False,
            default_flow_style=False,
            width=4096,
            allow_unicode=True,
        ),
    )
