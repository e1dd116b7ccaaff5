# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin ``stackrox.prefetch.manifest``: renders on the controller, in this worker process, when the module
would run on this machine anyway; else runs the module as Ansible would.

Rendering is pure (``_manifest.manifest_result``, the module's own code), so the result is the module's; what this
saves is a module process (an interpreter, ansible's module_utils, the module's upload and clean-up: about a third
of a second of CPU per run, docs/performance.md). The in-process path is taken only for the common case: a local
connection without become or async, no ``dest`` (writing a file stays the module's, with its atomic move) and an
absolute or no ``images_file`` (the module resolves a relative one against its own working directory). Any
validation error, warning or deprecation of the options also goes to the module, so its messages stay the ones users
see.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.stackrox.prefetch.plugins.module_utils._manifest import (
    ManifestError,
    manifest_argument_spec,
    manifest_result,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._render import HAS_YAML


def renders_in_process(args: dict[str, Any], transport: str, become: bool, is_async: bool) -> bool:
    """Whether the controller may render these arguments itself with the module's exact result."""
    images_file = args.get("images_file")
    return (
        HAS_YAML
        and transport == "local"
        and not become
        and not is_async
        and not args.get("dest")
        and (images_file is None or (isinstance(images_file, str) and os.path.isabs(images_file)))
    )


def render_in_process(args: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The module's result for ``args``, or None when the module must run (to report a problem in its own words)."""
    validation = ArgumentSpecValidator(manifest_argument_spec()).validate(args)
    if validation.error_messages or validation._warnings or validation._deprecations:
        return None
    params = validation.validated_parameters
    try:
        result, warnings = manifest_result(params)
    except ManifestError:
        return None
    result["invocation"] = {"module_args": params}
    if warnings:
        result["warnings"] = warnings
    return result


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp: Any = None, task_vars: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        task_vars = task_vars or {}
        wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
        rendered = None
        if renders_in_process(dict(self._task.args), getattr(self._connection, "transport", ""),
                              bool(self._play_context.become), bool(self._task.async_val)):
            rendered = render_in_process(dict(self._task.args))
        if rendered is not None:
            return merge_hash(result, rendered)
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
