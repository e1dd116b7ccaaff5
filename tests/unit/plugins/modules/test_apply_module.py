# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The apply module's main(): argument and validation paths, which must fail before any client is built."""

from __future__ import annotations

import json
import typing as t
from unittest import mock

import pytest
from ansible.module_utils import basic

from ansible_collections.stackrox.prefetch.plugins.modules import apply
from ansible_collections.stackrox.prefetch.tests.unit.plugins.modules.utils import (
    REAL_EXIT,
    REAL_FAIL,
    fail_main,
    module_args,
    patched_exits,
)

LABELS = {
    "app.kubernetes.io/name": "image-prefetcher",
    "app.kubernetes.io/instance": "imgs",
    "app.kubernetes.io/managed-by": "stackrox.prefetch",
}
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "imgs", "namespace": "p", "labels": LABELS}}


@pytest.fixture(autouse=True)
def no_cluster() -> t.Iterator[mock.MagicMock]:
    """Validation failures must happen before a client exists; building one fails the test."""
    exits = patched_exits()
    client = mock.patch.object(apply, "build_api_client", side_effect=AssertionError("client built"))
    with exits, client as build:
        yield build


def fail(args: dict[str, t.Any]) -> dict[str, t.Any]:
    return fail_main(apply.main, args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "state=present needs objects (the objects of stackrox.prefetch.manifest)"),
        ({"objects": []}, "state=present needs objects"),
        ({"objects": [CONFIG_MAP], "name": "other"}, "instance name 'other' does not match the objects' instance name"),
        ({"objects": [CONFIG_MAP], "namespace": "q"}, "namespace 'q' does not match the objects' namespace 'p'"),
        ({"objects": [CONFIG_MAP], "remove_node_labels": True}, "remove_node_labels applies to state=absent only"),
        ({"objects": [{"kind": "ConfigMap"}]}, "objects[0] (ConfigMap ?): apiVersion must be a non-empty string"),
        ({"state": "absent"}, "state=absent needs name and namespace, or the instance's objects"),
        ({"state": "absent", "name": "imgs"}, "state=absent needs name and namespace"),
        (
            {"state": "absent", "name": "x", "namespace": "p", "objects": [CONFIG_MAP]},
            "instance name 'x' does not match",
        ),
        ({"objects": [CONFIG_MAP], "wait_timeout": -1}, "wait_timeout must be 0 or more, got -1"),
    ],
)
def test_invalid_requests_fail_before_any_connection(args: dict[str, t.Any], message: str) -> None:
    result = fail(args)
    assert result["msg"].startswith(message)
    assert result["objects"] == [] and result["changed"] is False


def test_unknown_state_is_refused_by_the_argument_spec() -> None:
    result = fail({"state": "rendered"})
    assert "value of state must be one of: present, absent" in result["msg"]


def test_password_and_token_are_no_log() -> None:
    spec = apply.argument_spec()
    assert spec["api_key"]["no_log"] and spec["password"]["no_log"]
    assert spec["proxy_headers"]["options"]["proxy_basic_auth"]["no_log"]


def test_unreachable_cluster_is_one_line(no_cluster: mock.MagicMock) -> None:
    from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ClusterUnreachableError

    no_cluster.side_effect = ClusterUnreachableError("cannot reach the Kubernetes API server at https://h: refused")
    result = fail({"objects": [CONFIG_MAP]})
    assert result["msg"] == "cannot reach the Kubernetes API server at https://h: refused"
    assert "exception" not in result


TOKEN = "s3cr3t-token-value-apply"
KUBECONFIG: dict[str, t.Any] = {
    "clusters": [{"name": "c", "cluster": {"server": "https://h:6443", "certificate-authority": "/etc/ca.crt"}}],
    "users": [{"name": "u", "user": {"token": TOKEN, "client-certificate": "/etc/cert.pem"}}],
    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "ctx",
}


def test_dict_kubeconfig_token_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    exits = mock.patch.multiple(basic.AnsibleModule, exit_json=REAL_EXIT, fail_json=REAL_FAIL)
    with module_args({"state": "present", "kubeconfig": KUBECONFIG}), exits, pytest.raises(SystemExit):
        apply.main()
    output = capsys.readouterr().out
    result = json.loads(output)
    assert result["failed"] is True and "needs objects" in result["msg"]
    assert TOKEN not in output
    assert (
        result["invocation"]["module_args"]["kubeconfig"]["users"][0]["user"]["client-certificate"] == "/etc/cert.pem"
    )
