# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout module's main(): argument and validation paths, which must fail before any client is built."""

from __future__ import annotations

import contextlib
import json
import typing as t
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ClusterUnreachableError
from ansible_collections.stackrox.prefetch.plugins.modules import rollout


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def _exit_json(self: basic.AnsibleModule, **kwargs: t.Any) -> None:
    raise AnsibleExitJson(kwargs)


def _fail_json(self: basic.AnsibleModule, **kwargs: t.Any) -> None:
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


@contextlib.contextmanager
def module_args(args: dict[str, t.Any]) -> t.Iterator[None]:
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        with mock.patch.object(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))):
            yield
        return
    with patch_module_args(args):
        yield


@pytest.fixture(autouse=True)
def no_cluster() -> t.Iterator[mock.MagicMock]:
    exits = mock.patch.multiple(basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json)
    client = mock.patch.object(rollout, "build_api_client", side_effect=AssertionError("client built"))
    with exits, client as build:
        yield build


def fail(args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(AnsibleFailJson) as caught:
        rollout.main()
    return t.cast("dict[str, t.Any]", caught.value.args[0])


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
