# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout module's main(): argument and validation paths, which must fail before any client is built."""

from __future__ import annotations

import json
import typing as t
from unittest import mock

import pytest
from ansible.module_utils import basic

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ClusterUnreachableError
from ansible_collections.stackrox.prefetch.plugins.modules import rollout
from ansible_collections.stackrox.prefetch.tests.unit.plugins.modules.utils import (
    REAL_EXIT,
    REAL_FAIL,
    fail_main,
    module_args,
    patched_exits,
)


@pytest.fixture(autouse=True)
def no_cluster() -> t.Iterator[mock.MagicMock]:
    exits = patched_exits()
    client = mock.patch.object(rollout, "build_api_client", side_effect=AssertionError("client built"))
    with exits, client as build:
        yield build


def fail(args: dict[str, t.Any]) -> dict[str, t.Any]:
    return fail_main(rollout.main, args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "imgs", "namespace": "p", "timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"name": "imgs", "namespace": "p", "timeout": -5}, "timeout must be a positive number of seconds, got -5"),
        ({"name": " ", "namespace": "p"}, "name must not be empty"),
        ({"name": "imgs", "namespace": "p", "metrics_port": ""}, "metrics_port must not be empty"),
    ],
)
def test_invalid_options_fail_before_any_connection(args: dict[str, t.Any], message: str) -> None:
    result = fail(args)
    assert result["msg"] == message and result["changed"] is False


def test_name_and_namespace_are_required() -> None:
    assert "missing required arguments: name, namespace" in fail({})["msg"]


def test_metrics_port_accepts_a_number() -> None:
    spec = rollout.argument_spec()
    assert spec["metrics_port"] == {"type": "str", "default": "http"}


def test_unreachable_cluster_is_one_line(no_cluster: mock.MagicMock) -> None:
    no_cluster.side_effect = ClusterUnreachableError("cannot reach the Kubernetes API server at https://h: refused")
    result = fail({"name": "imgs", "namespace": "p"})
    assert result["msg"] == "cannot reach the Kubernetes API server at https://h: refused"
    assert "exception" not in result


TOKEN = "s3cr3t-token-value-rollout"
KUBECONFIG: dict[str, t.Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://h:6443", "certificate-authority": "/etc/ca.crt"}}],
    "users": [
        {"name": "u", "user": {"token": TOKEN, "client-key-data": "S0VZREFUQQ==", "password": "pw-value-x"}},
        {
            "name": "o",
            "user": {"auth-provider": {"name": "oidc", "config": {"id-token": "idtok-1", "idp-url": "iss-1"}}},
        },
        {"name": "e", "user": {"exec": {"command": "/bin/get", "env": [{"name": "SECRET_ENV", "value": "envval-1"}]}}},
    ],
    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "ctx",
}
SECRETS = (TOKEN, "S0VZREFUQQ==", "pw-value-x", "idtok-1", "iss-1", "envval-1")


def real_output(args: dict[str, t.Any], capsys: pytest.CaptureFixture[str]) -> str:
    """main() with the real exit_json/fail_json: the JSON Ansible would get."""
    exits = mock.patch.multiple(basic.AnsibleModule, exit_json=REAL_EXIT, fail_json=REAL_FAIL)
    with module_args(args), exits, pytest.raises(SystemExit):
        rollout.main()
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [{"timeout": 0}, {}],
    ids=["validation-failure", "error-message-quoting-the-token"],
)
def test_dict_kubeconfig_secrets_are_masked(
    extra: dict[str, t.Any], no_cluster: mock.MagicMock, capsys: pytest.CaptureFixture[str]
) -> None:
    no_cluster.side_effect = ClusterUnreachableError(f"cannot use token {TOKEN}")
    output = real_output({"name": "imgs", "namespace": "p", "kubeconfig": KUBECONFIG, **extra}, capsys)
    result = json.loads(output)
    assert result["failed"] is True
    for secret in SECRETS:
        assert secret not in output
    shown = result["invocation"]["module_args"]["kubeconfig"]
    assert shown["clusters"][0]["cluster"]["certificate-authority"] == "/etc/ca.crt"
    assert shown["users"][2]["user"]["exec"]["command"] == "/bin/get"
