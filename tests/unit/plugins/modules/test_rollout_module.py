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
    AnsibleExitJson,
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
        (
            {"name": "imgs", "namespace": "p", "progress_interval": -1},
            "progress_interval must be 0 (none) or a number of seconds, got -1",
        ),
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


def node_entry(node: str, status: str, warnings: list[str], message: str = "") -> dict[str, t.Any]:
    return {"node": node, "pod": f"p-{node}", "status": status, "ok": 1, "failed": 0, "skipped": 0, "attempts": 1,
            "bytes": 1, "seconds": 1.0, "errors": {}, "retries": {}, "warnings": warnings, "message": message}


def test_one_warning_per_node_whose_agent_reported_warnings(no_cluster: mock.MagicMock) -> None:
    denied = 'node labels: failed to patch node n2: 403 Forbidden: nodes "n2" is forbidden'
    nodes = [
        node_entry("n1", "succeeded", []),
        node_entry("n2", "succeeded", [denied, "metrics submission: gave up"]),
        node_entry("n3", "unknown", [], "no summary in the termination message"),
    ]
    report = {"nodes": nodes, "totals": {"nodes_failed": 0}, "daemonset": {}}
    waiter = mock.MagicMock()
    waiter.report.return_value = report
    no_cluster.side_effect = None
    with module_args({"name": "imgs", "namespace": "p"}):
        module = basic.AnsibleModule(argument_spec=rollout.argument_spec(), supports_check_mode=True)
    # run() itself: main() turns any exception, the patched exit_json's too, into a failure.
    with mock.patch.object(rollout, "Cluster"), mock.patch.object(rollout, "RolloutWaiter", return_value=waiter), \
            mock.patch.object(module, "warn") as warn, pytest.raises(AnsibleExitJson) as exited:
        rollout.run(module)
    result = exited.value.args[0]
    assert [call.args[0] for call in warn.call_args_list] == [
        "node n3: no summary in the termination message",
        f"node n2: {denied}; metrics submission: gave up",
    ]
    assert result["nodes"][1]["warnings"] == [denied, "metrics submission: gave up"]
    assert result["changed"] is False and "failed" not in result


@pytest.mark.parametrize(
    ("extra", "hooked"),
    [({"progress_file": "/p.json"}, True), ({}, False), ({"progress_file": "/p.json", "progress_interval": 0}, False)],
)
def test_a_progress_file_from_the_action_plugin_hooks_the_snapshot_writer(
    no_cluster: mock.MagicMock, extra: dict[str, t.Any], hooked: bool
) -> None:
    waiter = mock.MagicMock(on_progress=None)
    waiter.report.return_value = {"nodes": [], "totals": {"nodes_failed": 0}, "daemonset": {}}
    no_cluster.side_effect = None
    with module_args({"name": "imgs", "namespace": "p", **extra}):
        module = basic.AnsibleModule(argument_spec=rollout.argument_spec(), supports_check_mode=True)
    with mock.patch.object(rollout, "Cluster"), mock.patch.object(rollout, "RolloutWaiter", return_value=waiter), \
            pytest.raises(AnsibleExitJson):
        rollout.run(module)
    assert isinstance(waiter.on_progress, rollout.SnapshotWriter) is hooked
    if hooked:
        assert waiter.on_progress.path == "/p.json"


WAVES = "timeout 600s is likely too short for 6 nodes at parallel_nodes=2: 3 waves of ~250s each need ~750s"


@pytest.mark.parametrize("timed_out", [False, True], ids=["completed", "timed-out"])
def test_the_waiters_waves_warning_is_a_module_warning(no_cluster: mock.MagicMock, timed_out: bool) -> None:
    from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import RolloutError

    report = {"nodes": [], "totals": {"nodes_failed": 0}, "daemonset": {}}
    waiter = mock.MagicMock(warnings=[WAVES])
    waiter.report.return_value = report
    if timed_out:
        waiter.wait.side_effect = RolloutError("timed out after 600s waiting for DaemonSet p/imgs", report)
    no_cluster.side_effect = None
    with module_args({"name": "imgs", "namespace": "p"}):
        module = basic.AnsibleModule(argument_spec=rollout.argument_spec(), supports_check_mode=True)
    expected: type[BaseException] = RolloutError if timed_out else AnsibleExitJson
    with mock.patch.object(rollout, "Cluster"), mock.patch.object(rollout, "RolloutWaiter", return_value=waiter), \
            mock.patch.object(module, "warn") as warn, pytest.raises(expected):
        rollout.run(module)
    assert [call.args[0] for call in warn.call_args_list] == [WAVES]
