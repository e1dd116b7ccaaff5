# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared harness for the modules' main() tests: module arguments in, exit_json/fail_json out as exceptions."""

from __future__ import annotations

import contextlib
import json
import typing as t
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

REAL_EXIT = basic.AnsibleModule.exit_json
REAL_FAIL = basic.AnsibleModule.fail_json


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def _exit_json(self: basic.AnsibleModule, **kwargs: t.Any) -> None:
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self: basic.AnsibleModule, **kwargs: t.Any) -> None:
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


def patched_exits() -> t.Any:
    """exit_json/fail_json raise instead of printing and exiting."""
    return mock.patch.multiple(basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json)


@contextlib.contextmanager
def module_args(args: dict[str, t.Any]) -> t.Iterator[None]:
    """ansible-core >= 2.19 has patch_module_args; older ones read basic._ANSIBLE_ARGS."""
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:
        with mock.patch.object(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))):
            yield
        return
    with patch_module_args(args):
        yield


def run_main(main: t.Callable[[], None], args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(AnsibleExitJson) as caught:
        main()
    return t.cast("dict[str, t.Any]", caught.value.args[0])


def fail_main(main: t.Callable[[], None], args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(AnsibleFailJson) as caught:
        main()
    return t.cast("dict[str, t.Any]", caught.value.args[0])
