"""Pure functions of the simulated API server: selectors, patches, server-side apply bookkeeping, Pod Security."""

from __future__ import annotations

from typing import Any

import pytest

from simcluster.apiserver import admission, apply, patch
from simcluster.apiserver.errors import ApiError
from simcluster.apiserver.selectors import make_matcher, parse_label_selector


def obj(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "o", "labels": labels}}


def test_label_selector_grammar() -> None:
    m = make_matcher("a in (x, y),!b,c!=z", None, "configmaps")
    assert m(obj({"a": "x"}))
    assert m(obj({"a": "y", "c": "q"}))
    assert not m(obj({"a": "x", "b": ""}))
    assert not m(obj({"a": "w"}))
    assert not m(obj({"a": "x", "c": "z"}))
    assert [r.op for r in parse_label_selector("k notin (a),k2,k3==v")] == ["notin", "exists", "="]
    with pytest.raises(ApiError) as e:
        parse_label_selector("a b c")
    assert e.value.code == 400


def test_strategic_merge_directives() -> None:
    live: dict[str, Any] = {"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]},
                                    {"name": "b", "image": "1"}],
                     "tolerations": [{"key": "t1"}]},
            "metadata": {"finalizers": ["f1", "f2"], "labels": {"k": "v", "drop": "me"}}}
    p = {"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "env": [{"name": "Y",
                                                                                          "value": "2"}]}],
                  "$setElementOrder/containers": [{"name": "a"}], "tolerations": [{"key": "t2"}]},
         "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"], "labels": {"drop": None}}}
    out = patch.strategic_merge_patch(live, p)
    assert [c["name"] for c in out["spec"]["containers"]] == ["a"]
    assert [e["name"] for e in out["spec"]["containers"][0]["env"]] == ["X", "Y"]
    assert out["spec"]["tolerations"] == [{"key": "t2"}]  # no merge key: replaced
    assert out["metadata"] == {"finalizers": ["f2"], "labels": {"k": "v"}}
    assert patch.strategic_merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"$patch": "replace", "d": 3}}) == {
        "a": {"d": 3}}
    # service ports merge by "port", container ports by "containerPort"
    svc: dict[str, Any] = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
    out = patch.strategic_merge_patch(svc, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}})
    assert out["spec"]["ports"][1] == {"port": 443, "name": "https", "targetPort": 8443}
    assert live["spec"]["containers"][1]["name"] == "b"  # the input is not modified


def test_json_patch_errors() -> None:
    doc = {"a": [1, 2]}
    assert patch.json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                                  {"op": "move", "from": "/a/0", "path": "/b"}]) == {"a": [2, 3], "b": 1}
    with pytest.raises(ApiError) as e:
        patch.json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert e.value.code == 422
    with pytest.raises(ApiError):
        patch.json_patch(doc, [{"op": "test", "path": "/a/0", "value": 9}])


def test_field_sets_round_trip_fieldsv1() -> None:
    cfg = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "labels": {"a": "b"}},
           "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {
               "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
               "tolerations": [{"operator": "Exists"}]}}}}
    fs = apply.field_set(cfg, "DaemonSet")
    v1 = apply.to_fields_v1(fs)
    assert apply.from_fields_v1(v1) == fs
    containers = v1["f:spec"]["f:template"]["f:spec"]["f:containers"]
    item = containers['k:{"name":"c"}']
    assert "." in item and 'k:{"containerPort":80,"protocol":"TCP"}' in item["f:ports"]
    assert v1["f:spec"]["f:selector"] == {}  # atomic
    assert v1["f:spec"]["f:template"]["f:spec"]["f:tolerations"] == {}  # atomic
    assert "f:name" not in v1.get("f:metadata", {})
    assert apply.path_string(("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:name")) == \
        '.spec.ports[port=80,protocol="TCP"].name'


def test_apply_ownership_transfer_and_multi_conflict_message() -> None:
    live = apply.server_side_apply(None, {"data": {"a": "1", "b": "1"}}, "first", False, "v1", "ConfigMap")
    with pytest.raises(apply.ApplyConflict) as e:
        apply.server_side_apply(live, {"data": {"a": "2", "b": "2"}}, "second", False, "v1", "ConfigMap")
    assert e.value.message() == 'Apply failed with 2 conflicts: conflicts with "first":\n- .data.a\n- .data.b'
    forced = apply.server_side_apply(live, {"data": {"a": "2"}}, "second", True, "v1", "ConfigMap")
    owners = {m.manager: m.fields for m in apply.read_managers(forced)}
    assert owners["first"] == {("f:data", "f:b")}
    assert owners["second"] == {("f:data", "f:a")}
    # "first" gives up b: nobody owns it any more, so it is removed
    after = apply.server_side_apply(forced, {"metadata": {"labels": {"x": "y"}}}, "first", False, "v1", "ConfigMap")
    assert after["data"] == {"a": "2"}
    owners = {m.manager: m.fields for m in apply.read_managers(after)}
    assert owners == {"first": {("f:metadata", "f:labels", "f:x")}, "second": {("f:data", "f:a")}}


def test_record_update_takes_changed_fields_only() -> None:
    old = apply.server_side_apply(None, {"data": {"a": "1", "b": "1"}}, "applier", False, "v1", "ConfigMap")
    new = {"data": {"a": "1", "b": "9"}, "metadata": dict(old["metadata"])}
    apply.record_update(old, new, "editor", "v1", "ConfigMap")
    owners = {m.manager: (m.operation, m.fields) for m in apply.read_managers(new)}
    assert owners["editor"] == ("Update", {("f:data", "f:b")})
    assert owners["applier"] == ("Apply", {("f:data", "f:a")})


def test_pod_security_levels() -> None:
    spec = {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    assert admission.evaluate("privileged", spec) == []
    assert admission.evaluate("baseline", spec) == [
        "host namespaces (hostNetwork=true)",
        'privileged (container "c" must not set securityContext.privileged=true)']
    reject, warnings = admission.check("Pod", {"spec": spec}, {"pod-security.kubernetes.io/enforce": "baseline",
                                                               "pod-security.kubernetes.io/warn": "restricted"})
    assert reject is not None and reject.startswith('violates PodSecurity "baseline:latest": host namespaces')
    assert warnings and warnings[0].startswith('would violate PodSecurity "restricted:latest": '
                                               "allowPrivilegeEscalation != false")
    reject, warnings = admission.check("DaemonSet", {"spec": {"template": {"spec": spec}}},
                                       {"pod-security.kubernetes.io/enforce": "baseline"})
    assert reject is None and warnings[0].startswith('would violate PodSecurity "baseline:latest"')


def test_duplicate_keys_in_applied_lists_are_found() -> None:
    cfg = {"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b", "env": [
        {"name": "X"}, {"name": "X"}]}]}}}}
    dup = apply.first_duplicate(cfg, "DaemonSet")
    assert dup is not None
    assert apply.path_string(dup[0]) == '.spec.template.spec.containers[name="b"].env'
    assert apply.path_string((dup[1],)) == '[name="X"]'
    assert apply.first_duplicate({"spec": {"tolerations": [{"k": 1}, {"k": 1}]}}, "DaemonSet") is None
