"""The simulated API server driven by the real ``kubernetes`` client and raw HTTPS: discovery, CRUD, patches,
server-side apply, dry-run, selectors, validation, status subresources, authentication and authorization."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from simcluster.apiserver import ApiServer
from simcluster.apiserver.testing import call


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    threads_before = set(threading.enumerate())
    server = ApiServer(tmp_path_factory.mktemp("apiserver")).start()
    try:
        yield server
    finally:
        server.stop()
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not leftover, f"threads left after stop(): {leftover}"


@pytest.fixture(scope="module")
def api(srv: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    kc = srv.write_kubeconfig(tmp_path_factory.mktemp("kc") / "kubeconfig")
    c = config.new_client_from_config(config_file=str(kc))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def viewer_api(srv: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    kc = srv.write_kubeconfig(tmp_path_factory.mktemp("kcv") / "kubeconfig", user="viewer")
    c = config.new_client_from_config(config_file=str(kc))
    try:
        yield c
    finally:
        c.close()


_counter = iter(range(1, 10_000))


@pytest.fixture()
def ns(api: client.ApiClient) -> str:
    name = f"t{next(_counter)}"
    v1: Any = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": name}})
    return name


def msg(e: pytest.ExceptionInfo[ApiException]) -> str:
    """The Status message of a failed client call."""
    return str(json.loads(str(e.value.body))["message"])


def ds_body(name: str, ns: str, image: str = "img:v1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


# --- discovery -----------------------------------------------------------------------------------

def test_discovery_documents(srv: ApiServer) -> None:
    assert call(srv, "GET", "/version", token=None).json()["major"] == "1"
    assert call(srv, "GET", "/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g for g in call(srv, "GET", "/apis").json()["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "coordination.k8s.io"} <= set(groups)
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert "security.openshift.io" not in groups
    apps = {r["name"]: r for r in call(srv, "GET", "/apis/apps/v1").json()["resources"]}
    assert apps["daemonsets"]["kind"] == "DaemonSet"
    assert apps["daemonsets"]["shortNames"] == ["ds"]
    assert apps["daemonsets"]["namespaced"] is True
    assert "patch" in apps["daemonsets"]["verbs"]
    assert apps["daemonsets/status"]["verbs"] == ["get", "patch", "update"]
    assert "deployments/status" in apps
    core = {r["name"]: r for r in call(srv, "GET", "/api/v1").json()["resources"]}
    assert core["nodes"]["namespaced"] is False
    assert core["serviceaccounts/token"]["group"] == "authentication.k8s.io"
    assert core["serviceaccounts/token"]["kind"] == "TokenRequest"
    assert "services/proxy" in core and "pods/status" in core


def test_unknown_group_and_resource_404_like_real_server(srv: ApiServer) -> None:
    r = call(srv, "GET", "/apis/security.openshift.io/v1")
    assert r.status == 404
    assert r.raw == b"404 page not found\n"
    r = call(srv, "GET", "/apis/security.openshift.io/v1/securitycontextconstraints")
    assert (r.status, r.raw) == (404, b"404 page not found\n")
    r = call(srv, "GET", "/apis/apps/v1/namespaces/default/statefulsets")
    assert r.status == 404
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "the server could not find the requested resource", "reason": "NotFound",
                        "details": {}, "code": 404}


def test_dynamic_client_unknown_kind(api: client.ApiClient) -> None:
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dyn: Any = DynamicClient(api)
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="security.openshift.io/v1", kind="SecurityContextConstraints")
    assert dyn.resources.get(api_version="v1", kind="Pod").namespaced


# --- CRUD ----------------------------------------------------------------------------------------

def test_crud_and_error_statuses(api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    cm = v1.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.creation_timestamp and int(cm.metadata.resource_version) > 0
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}})
    assert e.value.status == 409
    assert 'configmaps "cfg" already exists' in msg(e)
    # PUT with a stale resourceVersion
    v1.patch_namespaced_config_map("cfg", ns, {"data": {"a": "2"}})
    cm.data = {"a": "3"}
    with pytest.raises(ApiException) as e:
        v1.replace_namespaced_config_map("cfg", ns, cm)
    assert e.value.status == 409
    assert ('Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your '
            "changes to the latest version and try again") in msg(e)
    fresh = v1.read_namespaced_config_map("cfg", ns)
    fresh.data = {"a": "3"}
    assert v1.replace_namespaced_config_map("cfg", ns, fresh).data == {"a": "3"}
    gen = v1.create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert gen.metadata.name.startswith("gen-") and len(gen.metadata.name) == 9
    v1.delete_namespaced_config_map("cfg", ns)
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_config_map("cfg", ns)
    assert e.value.status == 404 and 'configmaps "cfg" not found' in msg(e)
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("nope", {"metadata": {"name": "x"}})
    assert e.value.status == 404 and 'namespaces "nope" not found' in msg(e)


def test_namespaced_defaults_and_apps_not_found(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    assert v1.read_namespaced_service_account("default", ns).metadata.name == "default"
    assert "ca.crt" in v1.read_namespaced_config_map("kube-root-ca.crt", ns).data
    r = call(srv, "GET", f"/apis/apps/v1/namespaces/{ns}/daemonsets/missing")
    assert r.status == 404
    assert r.json()["message"] == 'daemonsets.apps "missing" not found'
    assert r.json()["details"] == {"name": "missing", "group": "apps", "kind": "daemonsets"}


def test_validation_messages(srv: ApiServer, ns: str) -> None:
    body = ds_body("bad", ns)
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    r = call(srv, "POST", f"/apis/apps/v1/namespaces/{ns}/daemonsets", body)
    assert r.status == 422
    st = r.json()
    assert st["reason"] == "Invalid"
    assert st["message"] == ('DaemonSet.apps "bad" is invalid: spec.template.metadata.labels: Invalid value: '
                             'map[string]string{"app":"other"}: `selector` does not match template `labels`')
    assert st["details"]["causes"][0]["field"] == "spec.template.metadata.labels"
    r = call(srv, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}})
    assert r.status == 422
    assert r.json()["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: '
                                          '"Bad_Name": a lowercase RFC 1123 subdomain')
    r = call(srv, "POST", f"/apis/apps/v1/namespaces/{ns}/daemonsets", ds_body("ok", ns))
    assert r.status == 201
    r = call(srv, "PATCH", f"/apis/apps/v1/namespaces/{ns}/daemonsets/ok",
             {"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}}}},
             "application/merge-patch+json")
    assert r.status == 422
    assert "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}" in \
        r.json()["message"]
    assert "field is immutable" in r.json()["message"]
    r = call(srv, "PATCH", "/api/v1/nodes/whatever", {"metadata": {"labels": {"bad key!": "v"}}},
             "application/merge-patch+json")
    assert r.status == 404


def test_label_validation_on_nodes(srv: ApiServer) -> None:
    assert call(srv, "POST", "/api/v1/nodes", {"metadata": {"name": "lv-node"}}).status == 201
    r = call(srv, "PATCH", "/api/v1/nodes/lv-node",
             {"metadata": {"labels": {"image-prefetcher.stackrox.io/x": "v" * 64}}}, "application/merge-patch+json")
    assert r.status == 422
    assert "must be no more than 63 characters" in r.json()["message"]
    r = call(srv, "PATCH", "/api/v1/nodes/lv-node",
             {"metadata": {"labels": {"image-prefetcher.stackrox.io/x": "succeeded"}}},
             "application/strategic-merge-patch+json")
    assert r.status == 200
    assert r.json()["metadata"]["labels"]["image-prefetcher.stackrox.io/x"] == "succeeded"


# --- patches -------------------------------------------------------------------------------------

def test_strategic_merge_json_patch_and_merge_patch(srv: ApiServer, ns: str) -> None:
    base = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
    body = ds_body("p", ns)
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:v1",
                                                           "env": [{"name": "A", "value": "1"}]})
    assert call(srv, "POST", base, body).status == 201
    smp = {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "side:v2", "env": [{"name": "B", "value": "2"}]}]}}},
        "metadata": {"labels": {"extra": "yes", "app": None}}}
    r = call(srv, "PATCH", f"{base}/p", smp, "application/strategic-merge-patch+json")
    assert r.status == 200, r.raw
    obj = r.json()
    containers = {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}
    assert containers["main"]["image"] == "img:v1"  # merged by name, not replaced
    assert containers["side"]["image"] == "side:v2"
    assert [e["name"] for e in containers["side"]["env"]] == ["A", "B"]
    assert obj["metadata"]["labels"] == {"extra": "yes"}
    # merge patch replaces lists
    r = call(srv, "PATCH", f"{base}/p", {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "o:1"}]}}}}, "application/merge-patch+json")
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["only"]
    r = call(srv, "PATCH", f"{base}/p", [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
                                         {"op": "replace", "path": "/spec/template/spec/containers/0/image",
                                          "value": "o:2"}], "application/json-patch+json")
    assert r.status == 200
    assert r.json()["metadata"]["annotations"] == {"a": "b"}
    assert r.json()["spec"]["template"]["spec"]["containers"][0]["image"] == "o:2"
    r = call(srv, "PATCH", f"{base}/p", {"a": 1}, "application/xml")
    assert r.status == 415 and r.json()["reason"] == "UnsupportedMediaType"


def test_generation_and_status_subresource_separation(srv: ApiServer, ns: str) -> None:
    base = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
    created = call(srv, "POST", base, ds_body("s", ns)).json()
    assert created["metadata"]["generation"] == 1
    # a main-resource write ignores status
    r = call(srv, "PATCH", f"{base}/s", {"status": {"numberReady": 5}, "metadata": {"labels": {"l": "1"}}},
             "application/merge-patch+json").json()
    assert r["status"]["numberReady"] == 0
    assert r["metadata"]["generation"] == 1  # metadata change: no new generation
    # a status write ignores spec and metadata
    r = call(srv, "PATCH", f"{base}/s/status",
             {"status": {"numberReady": 3, "observedGeneration": 1}, "metadata": {"labels": {"l": "2"}},
              "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "changed"}]}}}},
             "application/merge-patch+json").json()
    assert r["status"]["numberReady"] == 3
    assert r["metadata"]["labels"]["l"] == "1"
    assert r["spec"]["template"]["spec"]["containers"][0]["image"] == "img:v1"
    status_managers = [m for m in r["metadata"]["managedFields"] if m.get("subresource") == "status"]
    assert status_managers and "f:status" in status_managers[0]["fieldsV1"]
    # spec change bumps generation
    r = call(srv, "PATCH", f"{base}/s", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "img:v2"}]}}}}, "application/strategic-merge-patch+json").json()
    assert r["metadata"]["generation"] == 2
    assert r["status"]["numberReady"] == 3
    got = call(srv, "GET", f"{base}/s/status").json()
    assert got["status"]["observedGeneration"] == 1


# --- server-side apply -------------------------------------------------------------------------------

def test_server_side_apply_lifecycle(api: client.ApiClient, ns: str) -> None:
    dyn: Any = DynamicClient(api)
    res: Any = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    body = ds_body("ssa", ns, labels={"app": "ssa", "tier": "x"})
    first = res.server_side_apply(body=body, name="ssa", namespace=ns, field_manager="mgr-a")
    rv = first.metadata.resourceVersion
    fields = first.to_dict()["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in fields] == [("mgr-a", "Apply")]
    assert 'k:{"name":"main"}' in fields[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    # no-op re-apply: nothing written
    again = res.server_side_apply(body=body, name="ssa", namespace=ns, field_manager="mgr-a")
    assert again.metadata.resourceVersion == rv
    # another manager setting a different value conflicts
    other = ds_body("ssa", ns, image="img:v9", labels={"app": "ssa"})
    with pytest.raises(ApiException) as e:
        res.server_side_apply(body=other, name="ssa", namespace=ns, field_manager="mgr-b")
    assert e.value.status == 409
    st = json.loads(str(e.value.body))
    assert st["reason"] == "Conflict"
    assert st["message"] == ('Apply failed with 1 conflict: conflict with "mgr-a": '
                             '.spec.template.spec.containers[name="main"].image')
    assert st["details"]["causes"][0]["field"] == '.spec.template.spec.containers[name="main"].image'
    # the same value is shared, not a conflict
    same = ds_body("ssa", ns, labels={"app": "ssa"})
    shared = res.server_side_apply(body=same, name="ssa", namespace=ns, field_manager="mgr-b")
    assert {m["manager"] for m in shared.to_dict()["metadata"]["managedFields"]} == {"mgr-a", "mgr-b"}
    # force takes ownership
    forced = res.server_side_apply(body=other, name="ssa", namespace=ns, field_manager="mgr-b", force_conflicts=True)
    assert forced.spec.template.spec.containers[0].image == "img:v9"
    # mgr-a stops applying the "tier" label: it is removed (nobody else owns it)
    body_a = ds_body("ssa", ns, labels={"app": "ssa"})
    body_a["spec"]["template"]["spec"]["containers"][0]["image"] = "img:v9"
    after = res.server_side_apply(body=body_a, name="ssa", namespace=ns, field_manager="mgr-a")
    assert dict(after.metadata.labels) == {"app": "ssa"}


def test_apply_conflict_with_update_manager_and_removal_of_list_items(srv: ApiServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps/c1?fieldManager=ansible"
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "1", "b": "2"}}
    r = call(srv, "PATCH", path, cfg, "application/apply-patch+yaml")
    assert r.status == 201
    r = call(srv, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/c1?fieldManager=editor", {"data": {"a": "9"}},
             "application/merge-patch+json")
    assert r.status == 200
    r = call(srv, "PATCH", path, cfg, "application/apply-patch+yaml")
    assert r.status == 409
    assert r.json()["message"] == 'Apply failed with 1 conflict: conflict with "editor" using v1: .data.a'
    # YAML body, dropping key b: removed
    yaml_cfg = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: '9'\n"
    r = call(srv, "PATCH", path, yaml_cfg, "application/apply-patch+yaml")
    assert r.status == 200, r.raw
    assert r.json()["data"] == {"a": "9"}
    r = call(srv, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/c1", cfg, "application/apply-patch+yaml")
    assert r.status == 400 and "fieldManager" in r.json()["message"]


def test_apply_removes_container_no_longer_applied(srv: ApiServer, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/daemonsets/two?fieldManager=me"
    body = ds_body("two", ns)
    body["spec"]["template"]["spec"]["containers"].append({"name": "extra", "image": "e:1"})
    assert call(srv, "PATCH", path, body, "application/apply-patch+yaml").status == 201
    r = call(srv, "PATCH", path, ds_body("two", ns), "application/apply-patch+yaml")
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["main"]


# --- dry run -------------------------------------------------------------------------------------

def test_dry_run_stores_nothing(srv: ApiServer, ns: str) -> None:
    start = max((r.seq for r in srv.requests), default=0)
    rv_before = srv.store.rv
    base = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
    r = call(srv, "POST", base + "?dryRun=All", ds_body("dry", ns))
    assert r.status == 201 and r.json()["metadata"]["name"] == "dry"
    r = call(srv, "PATCH", f"{base}/dry2?dryRun=All&fieldManager=x", ds_body("dry2", ns),
             "application/apply-patch+yaml")
    assert r.status == 201
    assert call(srv, "GET", f"{base}/dry").status == 404
    assert call(srv, "GET", f"{base}/dry2").status == 404
    assert srv.store.rv == rv_before
    created = call(srv, "POST", base, ds_body("real", ns)).json()
    rv = created["metadata"]["resourceVersion"]
    r = call(srv, "PATCH", f"{base}/real?dryRun=All", {"metadata": {"labels": {"z": "1"}}},
             "application/merge-patch+json")
    assert r.json()["metadata"]["labels"]["z"] == "1"
    r = call(srv, "DELETE", f"{base}/real?dryRun=All")
    assert r.status == 200
    got = call(srv, "GET", f"{base}/real").json()
    assert got["metadata"]["resourceVersion"] == rv and "z" not in got["metadata"]["labels"]
    # invalid objects fail in dry run too
    bad = ds_body("bad", ns)
    bad["spec"]["selector"] = {"matchLabels": {"app": "nomatch"}}
    assert call(srv, "POST", base + "?dryRun=All", bad).status == 422
    recs = [r for r in srv.requests if r.seq > start]
    dry = [r for r in recs if r.dry_run]
    assert len(dry) == 5 and not any(r.is_write for r in dry)
    assert [r.verb for r in recs if r.is_write] == ["create"]
    # the log is readable over HTTP by the admin only
    log = call(srv, "GET", f"/_sim/requests?since={start}").json()["requests"]
    assert [r["verb"] for r in log if r["is_write"]] == ["create"]
    assert call(srv, "GET", "/_sim/requests", token="viewer").status == 403


# --- selectors -------------------------------------------------------------------------------------

def test_label_and_field_selectors(api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    for name, labels in (("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev"}), ("c", {"tier": "db"})):
        v1.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(sel: str = "", fsel: str = "") -> list[str]:
        return sorted(i.metadata.name for i in v1.list_namespaced_config_map(
            ns, label_selector=sel, field_selector=fsel).items if i.metadata.name != "kube-root-ca.crt")

    assert names("env=prod") == ["a"]
    assert names("env==prod") == ["a"]
    assert names("env!=prod") == ["b", "c"]
    assert names("env in (prod,dev)") == ["a", "b"]
    assert names("env notin (prod)") == ["b", "c"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b"]
    assert names("env=prod,tier=web") == ["a"]
    assert names(fsel="metadata.name=b") == ["b"]
    assert names(fsel="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as e:
        v1.list_namespaced_config_map(ns, field_selector="data.x=1")
    assert e.value.status == 400 and "field label not supported: data.x" in msg(e)


def test_events_and_pods_field_selectors(api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    v1.create_namespaced_event(ns, {"metadata": {"name": "e1"}, "involvedObject": {"kind": "DaemonSet", "name": "x",
                                                                                   "namespace": ns},
                                    "reason": "SuccessfulCreate", "message": "m", "type": "Normal"})
    v1.create_namespaced_event(ns, {"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "y"},
                                    "reason": "Pulled", "message": "m"})
    got = v1.list_namespaced_event(ns, field_selector="involvedObject.kind=DaemonSet,involvedObject.name=x").items
    assert [e.metadata.name for e in got] == ["e1"]
    for name, node in (("p1", "n1"), ("p2", "n2")):
        v1.create_namespaced_pod(ns, {"metadata": {"name": name},
                                      "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
    got = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2").items
    assert [p.metadata.name for p in got] == ["p2"]
    pod = v1.read_namespaced_pod("p1", ns)
    assert pod.status.phase == "Pending"
    assert pod.spec.service_account_name == "default"


def test_list_pagination(srv: ApiServer, ns: str) -> None:
    for i in range(5):
        call(srv, "POST", f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": f"s{i}"}})
    page = call(srv, "GET", f"/api/v1/namespaces/{ns}/secrets?limit=2").json()
    assert [i["metadata"]["name"] for i in page["items"]] == ["s0", "s1"]
    assert "kind" not in page["items"][0]  # list items carry no TypeMeta, as on a real server
    seen = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"].get("continue"):
        page = call(srv, "GET", f"/api/v1/namespaces/{ns}/secrets?limit=2&continue={page['metadata']['continue']}"
                    ).json()
        seen += [i["metadata"]["name"] for i in page["items"]]
    assert seen == [f"s{i}" for i in range(5)]


# --- authentication / authorization -------------------------------------------------------------------

def test_unauthenticated_and_forbidden(srv: ApiServer, viewer_api: client.ApiClient, ns: str) -> None:
    r = call(srv, "GET", "/api/v1/namespaces", token=None)
    assert r.status == 401
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert call(srv, "GET", "/api/v1/namespaces", token="not-a-token").status == 401
    call(srv, "POST", f"/apis/apps/v1/namespaces/{ns}/daemonsets", ds_body("v", ns))
    apps: Any = client.AppsV1Api(viewer_api)
    assert apps.read_namespaced_daemon_set("v", ns).metadata.name == "v"
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_daemon_set("v", ns, {"metadata": {"labels": {"a": "b"}}})
    assert e.value.status == 403
    st = json.loads(str(e.value.body))
    assert st["message"] == (f'daemonsets.apps "v" is forbidden: User "viewer" cannot patch resource "daemonsets" '
                             f'in API group "apps" in the namespace "{ns}"')
    assert st["reason"] == "Forbidden"
    with pytest.raises(ApiException) as e:
        rbac: Any = client.RbacAuthorizationV1Api(viewer_api)
        rbac.create_cluster_role({"metadata": {"name": "r"}})
    assert ('clusterroles.rbac.authorization.k8s.io is forbidden: User "viewer" cannot create resource '
            '"clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope') in msg(e)
    authz: Any = client.AuthorizationV1Api(viewer_api)
    review = authz.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "create", "resource": "daemonsets", "group": "apps",
                                         "namespace": ns}}})
    assert review.status.allowed is False


def test_service_account_token_request(srv: ApiServer, api: client.ApiClient, ns: str) -> None:
    v1: Any = client.CoreV1Api(api)
    v1.create_namespaced_service_account(ns, {"metadata": {"name": "agent"}})
    tr = v1.create_namespaced_service_account_token("agent", ns, {"spec": {"audiences": ["x"],
                                                                           "expirationSeconds": 3600}})
    token = tr.status.token
    assert token.count(".") == 2
    r = call(srv, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
             {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, token=token)
    assert r.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:agent"
    r = call(srv, "PATCH", "/api/v1/nodes/none", {"metadata": {}}, "application/merge-patch+json", token=token)
    assert r.status == 404  # authenticated and allowed (RBAC is not evaluated for service accounts)
    assert call(srv, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/ghost/token", {"spec": {}}).status == 404


def test_kubeconfig_is_accepted_with_verification(srv: ApiServer, tmp_path: Path) -> None:
    import yaml

    kc = yaml.safe_load(srv.write_kubeconfig(tmp_path / "kc").read_text())
    assert kc["clusters"][0]["cluster"]["server"] == srv.url
    assert "insecure-skip-tls-verify" not in kc["clusters"][0]["cluster"]
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(tmp_path / "kc"), client_configuration=cfg)
    assert cfg.verify_ssl is True
    with client.ApiClient(cfg) as c:
        assert client.VersionApi(c).get_code().major == "1"


def test_go_style_booleans_and_dry_run_in_delete_options(srv: ApiServer, ns: str) -> None:
    """The Python client sends ``force=True``/``watch=True``; DeleteOptions may carry ``dryRun`` in the body."""
    path = f"/api/v1/namespaces/{ns}/configmaps/b1"
    cfg: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b1"}, "data": {"a": "1"}}
    assert call(srv, "PATCH", path + "?fieldManager=one", cfg, "application/apply-patch+yaml").status == 201
    cfg["data"]["a"] = "2"
    assert call(srv, "PATCH", path + "?fieldManager=two", cfg, "application/apply-patch+yaml").status == 409
    r = call(srv, "PATCH", path + "?fieldManager=two&force=True", cfg, "application/apply-patch+yaml")
    assert r.status == 200 and r.json()["data"] == {"a": "2"}
    r = call(srv, "GET", f"/api/v1/namespaces/{ns}/configmaps?watch=True&timeoutSeconds=1")
    assert json.loads(r.raw.splitlines()[0])["type"] == "ADDED"
    start = max(x.seq for x in srv.requests)
    r = call(srv, "DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"],
                                   "propagationPolicy": "Background"})
    assert r.status == 200
    assert call(srv, "GET", path).status == 200
    assert [x.dry_run for x in srv.requests if x.seq > start and x.method == "DELETE"] == [True]


def test_apply_rejects_managed_fields_and_duplicate_keys(srv: ApiServer, ns: str) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/daemonsets/dup?fieldManager=m"
    body = ds_body("dup", ns)
    body["metadata"]["managedFields"] = [{"manager": "x", "operation": "Apply"}]
    r = call(srv, "PATCH", path, body, "application/apply-patch+yaml")
    assert (r.status, r.json()["message"]) == (400, "metadata.managedFields must be nil")
    body = ds_body("dup", ns)
    body["spec"]["template"]["spec"]["containers"].append({"name": "main", "image": "other"})
    r = call(srv, "PATCH", path, body, "application/apply-patch+yaml")
    assert r.status == 500
    assert r.json()["message"].endswith('.spec.template.spec.containers: duplicate entries for key [name="main"]')
    assert call(srv, "GET", f"/apis/apps/v1/namespaces/{ns}/daemonsets/dup").status == 404
