# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin ``stackrox.prefetch.report``: writes a run's reports into a directory on the controller.

An action plugin, not a module delegated to localhost: the reports belong where ansible-playbook runs (the CI
workspace) whatever ``images_delegate_to`` says, the controller needs no module transfer or Python of its own for
it, and one task writes every file. The content comes from the pure ``module_utils._reports``; this file only does
the file I/O (documentation: plugins/modules/report.py).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.stackrox.prefetch.plugins.module_utils._reports import report_files, safe_basename

ARGUMENT_SPEC: dict[str, Any] = {
    "result": {"type": "dict", "required": True},
    "images": {"type": "list", "elements": "str", "default": []},
    "dest": {"type": "path", "required": True},
    "basename": {"type": "str"},
}


def _current(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _write_atomically(path: str, content: str) -> None:
    """A reader (a CI step, a browser) never sees half a file: write a temporary file beside it, then rename."""
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix=".report-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(content)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; reports are for whoever reads the workspace
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_files(directory: str, files: dict[str, str], check_mode: bool) -> tuple[bool, list[str]]:
    """(changed, absolute paths): each file written when its content differs; nothing written in check mode."""
    directory = os.path.abspath(directory)
    paths = [os.path.join(directory, name) for name in sorted(files)]
    stale = [path for path in paths if _current(path) != files[os.path.basename(path)]]
    if check_mode or not stale:
        return bool(stale), paths
    os.makedirs(directory, exist_ok=True)
    for path in stale:
        _write_atomically(path, files[os.path.basename(path)])
    return True, paths


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # nothing goes to a remote host
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        run = dict(args["result"])
        if args["images"]:
            run["images"] = list(args["images"])
        basename = safe_basename(args["basename"] or str(run.get("cluster") or ""))
        try:
            changed, paths = write_files(args["dest"], report_files(run, basename), bool(self._task.check_mode))
        except OSError as error:
            raise AnsibleActionFail(f"cannot write the reports to {args['dest']}: {error}") from error
        result.update(changed=changed, files=paths)
        return result
