"""End to end on what only a real cluster shows: server-side apply against objects kubectl wrote, real Pod Security
admission, real RBAC for the agent's token, and ``kubectl rollout status`` agreeing with our report.

Every test uses its own instance (name = namespace) and its own images on the shared cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from e2e.support import Cluster, PlayResult, ref, role_vars, run_playbook

HOST = "local"
LABEL_PREFIX = "image-prefetcher.stackrox.io/"


def play(cluster: Cluster, collections_path: Path, workdir: Path, name: str, images: list[str],
         **extra: object) -> PlayResult:
    return run_playbook(workdir, collections_path, {HOST: role_vars(cluster, name, images, **extra)})


def assert_ok(result: PlayResult) -> None:
    assert result.rc == 0, result.stdout[-6000:]


def configmap_images(cluster: Cluster, name: str) -> str:
    configmap = cluster.raw_get(f"/api/v1/namespaces/{name}/configmaps/{name}")
    assert configmap is not None
    return str(configmap["data"]["images.txt"])


def test_kubectl_rollout_status_agrees_with_the_report(cluster: Cluster, collections_path: Path,
                                                        workdir: Path) -> None:
    name = "e2e-status"
    result = play(cluster, collections_path, workdir, name, [ref("e2e/status")])
    assert_ok(result)
    status = cluster.kubectl("-n", name, "rollout", "status", f"daemonset/{name}", "--timeout=60s")
    assert f'daemon set "{name}" successfully rolled out' in status.stdout, status.stdout + status.stderr
    daemonset = cluster.raw_get(f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}")
    assert daemonset is not None
    nodes = result.results[HOST]["nodes"]
    assert all(n["status"] == "succeeded" for n in nodes), nodes
    counters = daemonset["status"]
    assert counters["desiredNumberScheduled"] == counters["numberReady"] == counters["updatedNumberScheduled"] \
        == len(nodes) == len(cluster.node_names)
    assert result.results[HOST]["daemonset"]["numberReady"] == counters["numberReady"]


def _kubectl_edit(cluster: Cluster, name: str, old: str, new: str) -> None:
    """``kubectl edit`` for real, with an editor that is a sed script (no terminal needed)."""
    editor = f"sed -i 's#{old}#{new}#'"
    edited = cluster.kubectl("-n", name, "edit", f"configmap/{name}", env={"KUBE_EDITOR": editor})
    assert "edited" in edited.stdout, edited.stdout + edited.stderr


def test_fields_taken_by_kubectl_edit_conflict_until_forced(cluster: Cluster, collections_path: Path,
                                                            workdir: Path) -> None:
    name = "e2e-edit"
    image = ref("e2e/edit")
    assert_ok(play(cluster, collections_path, workdir / "1", name, [image]))
    _kubectl_edit(cluster, name, "e2e/edit:v1", "e2e/edit:by-hand")
    assert "e2e/edit:by-hand" in configmap_images(cluster, name)

    seq = cluster.request_seq()
    refused = play(cluster, collections_path, workdir / "2", name, [image])
    assert refused.rc != 0
    assert f"ConfigMap {name}/{name}" in refused.stdout and '"kubectl-edit"' in refused.stdout, refused.stdout[-3000:]
    assert "force_conflicts" in refused.stdout
    assert [w for w in cluster.writes_since(seq) if w["resource"] == "configmaps"] == []
    assert "e2e/edit:by-hand" in configmap_images(cluster, name)

    forced = play(cluster, collections_path, workdir / "3", name, [image], images_force_conflicts=True)
    assert_ok(forced)
    assert "e2e/edit:v1" in configmap_images(cluster, name)
    configmap = cluster.raw_get(f"/api/v1/namespaces/{name}/configmaps/{name}")
    assert configmap is not None
    managers = [m["manager"] for m in configmap["metadata"]["managedFields"]
                if "f:data" in json.dumps(m.get("fieldsV1", {}))]
    assert managers == ["stackrox.prefetch"], managers

    seq = cluster.request_seq()
    again = play(cluster, collections_path, workdir / "4", name, [image])
    assert_ok(again)
    assert again.changed_total == 0, again.stdout[-3000:]
    assert cluster.writes_since(seq) == []


def test_objects_first_written_by_kubectl_apply(cluster: Cluster, collections_path: Path, workdir: Path) -> None:
    name = "e2e-kubectl"
    image = ref("e2e/kubectl")
    cluster.kubectl("create", "namespace", name)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": name},
                 "data": {"images.txt": "registry.test:5000/e2e/other:v1\n"}}
    applied = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(configmap))
    assert "created" in applied.stdout, applied.stdout + applied.stderr

    refused = play(cluster, collections_path, workdir / "1", name, [image])
    assert refused.rc != 0
    assert f"ConfigMap {name}/{name}" in refused.stdout and "kubectl-client-side-apply" in refused.stdout, \
        refused.stdout[-3000:]
    assert cluster.raw_get(f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}") is None, \
        "the DaemonSet was written although an object before it could not be"

    assert_ok(play(cluster, collections_path, workdir / "2", name, [image], images_force_conflicts=True))
    assert configmap_images(cluster, name).strip() == image
    seq = cluster.request_seq()
    again = play(cluster, collections_path, workdir / "3", name, [image])
    assert_ok(again)
    assert again.changed_total == 0 and cluster.writes_since(seq) == []


def test_pod_security_message_matches_the_real_admission(cluster: Cluster, collections_path: Path,
                                                          workdir: Path) -> None:
    """The real admission rejects the rendered pods where our check says it would, for the reason it gives."""
    name = "e2e-psa"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=baseline")
    rendered = play(cluster, collections_path, workdir / "render", name, [ref("e2e/psa")], images_state="rendered",
                    images_dest=str(workdir / "rendered.yaml"))
    assert_ok(rendered)
    docs = [d for d in yaml.safe_load_all((workdir / "rendered.yaml").read_text()) if d]
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    cluster.kubectl("-n", name, "create", "serviceaccount", name)  # the ServiceAccount admission wants it
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-probe", "namespace": name},
           "spec": {**daemonset["spec"]["template"]["spec"], "nodeName": cluster.node_names[-1]}}
    real = cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    assert real.returncode != 0 and "violates PodSecurity" in real.stderr, real.stderr
    seq = cluster.request_seq()
    ours = play(cluster, collections_path, workdir / "apply", name, [ref("e2e/psa")])
    assert ours.rc != 0
    assert cluster.writes_since(seq) == []
    # The real server names hostPath volumes among the violations; our message names the level and the hostPath.
    assert "hostPath volumes" in real.stderr, real.stderr
    assert "'baseline'" in ours.stdout and "hostPath" in ours.stdout, ours.stdout[-3000:]
    assert cluster.raw_get(f"/apis/apps/v1/namespaces/{name}/daemonsets/{name}") is None


def _can_i_list(cluster: Cluster, namespace: str, service_account: str) -> set[tuple[str, ...]]:
    """``kubectl auth can-i --list`` rows (resource, non-resource URLs, resource names, verbs) as a ServiceAccount,
    with the groups its token carries."""
    listing = cluster.kubectl(
        "-n", namespace, "auth", "can-i", "--list", f"--as=system:serviceaccount:{namespace}:{service_account}",
        "--as-group=system:serviceaccounts", f"--as-group=system:serviceaccounts:{namespace}",
        "--as-group=system:authenticated")
    rows: set[tuple[str, ...]] = set()
    for line in listing.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4:
            rows.add((fields[0], fields[1], fields[2], " ".join(fields[3:])))
        elif len(fields) == 3:  # a non-resource URL row: no resource
            rows.add(("", fields[0], fields[1], fields[2]))
    return rows


def test_agent_label_patch_is_authorised_by_real_rbac(cluster: Cluster, collections_path: Path,
                                                      workdir: Path) -> None:
    """The agent's node-label PATCH goes through real RBAC with its projected ServiceAccount token."""
    name = "e2e-rbac"
    result = play(cluster, collections_path, workdir, name, [ref("e2e/rbac")])
    assert_ok(result)
    labels = cluster.node_labels()
    assert all(labels[n].get(LABEL_PREFIX + name) == "succeeded" for n in cluster.node_names), labels
    sa_user = f"system:serviceaccount:{name}:{name}"
    can = cluster.kubectl("auth", "can-i", "patch", "nodes", f"--as={sa_user}", check=False)
    assert can.stdout.strip() == "yes", can.stdout + can.stderr
    # Exactly what it needs: beyond what any ServiceAccount of the namespace may do, nodes: patch (its node label)
    # and pods: patch in its own namespace (its progress annotation), and nothing else.
    granted = _can_i_list(cluster, name, name) - _can_i_list(cluster, name, "someone-else")
    assert granted == {("nodes", "[]", "[]", "[patch]"), ("pods", "[]", "[]", "[patch]")}, granted
    patches = [r for r in cluster._records_since(0) if r["user"] == sa_user and r["resource"] == "nodes"
               and r["verb"] == "patch"]
    assert {r["name"] for r in patches} == set(cluster.node_names), patches
    assert all(r["code"] == 200 for r in patches), patches
