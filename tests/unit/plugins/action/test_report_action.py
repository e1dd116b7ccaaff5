# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report action plugin: which files it writes, only when changed, never in check mode, and its task args."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.errors import AnsibleActionFail
from junitparser import JUnitXml

from ansible_collections.stackrox.prefetch.plugins.action.report import ActionModule, write_files
from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.report_examples import example_result


def test_write_files_writes_what_changed_and_reports_it(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "nested"
    assert write_files(str(target), {"a.md": "one", "b.json": "{}"}, check_mode=False) == (
        True,
        [str(target / "a.md"), str(target / "b.json")],
    )
    assert (target / "a.md").read_text() == "one"
    assert stat.S_IMODE(os.stat(target / "a.md").st_mode) == 0o644
    before = os.stat(target / "b.json").st_mtime_ns
    assert write_files(str(target), {"a.md": "one", "b.json": "{}"}, check_mode=False)[0] is False
    assert os.stat(target / "b.json").st_mtime_ns == before
    assert write_files(str(target), {"a.md": "two", "b.json": "{}"}, check_mode=False)[0] is True
    assert (target / "a.md").read_text() == "two"
    assert sorted(os.listdir(target)) == ["a.md", "b.json"]  # no temporary file left behind


def test_write_files_in_check_mode_writes_nothing(tmp_path: Path) -> None:
    changed, paths = write_files(str(tmp_path / "r"), {"a.md": "one"}, check_mode=True)
    assert changed is True and paths == [str(tmp_path / "r" / "a.md")]
    assert not (tmp_path / "r").exists()


def action(args: dict[str, Any], check_mode: bool = False) -> ActionModule:
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode)
    return ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock())


def test_run_writes_the_four_files_of_a_run_with_metrics(tmp_path: Path) -> None:
    run = example_result()
    images = run.pop("images")
    outcome = action({"result": run, "images": images, "dest": str(tmp_path)}).run(task_vars={})
    assert outcome["changed"] is True
    assert [Path(p).name for p in outcome["files"]] == [
        "prod-east.json",
        "prod-east.junit.xml",
        "prod-east.md",
        "prod-east.timeline.svg",
    ]
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "prod-east.junit.xml"))))
    assert suite.tests == 15  # the image list given as an option reached the report
    again = action({"result": run, "images": images, "dest": str(tmp_path)}).run(task_vars={})
    assert again["changed"] is False


def test_run_in_check_mode_writes_nothing_and_a_basename_is_made_safe(tmp_path: Path) -> None:
    run = example_result()
    outcome = action({"result": run, "dest": str(tmp_path / "r"), "basename": "../x"}, check_mode=True).run(
        task_vars={}
    )
    assert outcome["changed"] is True
    assert Path(outcome["files"][0]).name == "_x.json"
    assert not (tmp_path / "r").exists()


def test_run_fails_with_the_directory_and_the_cause(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AnsibleActionFail, match=f"cannot write the reports to {blocker}/sub"):
        action({"result": example_result(), "dest": str(blocker / "sub")}).run(task_vars={})


def test_the_documentation_matches_the_argument_spec() -> None:
    """validate-modules skips a documentation-only module, so the options are compared here."""
    import yaml

    from ansible_collections.stackrox.prefetch.plugins.action.report import ARGUMENT_SPEC
    from ansible_collections.stackrox.prefetch.plugins.modules import report

    documented = yaml.safe_load(report.DOCUMENTATION)["options"]
    for document in (report.EXAMPLES, report.RETURN):
        yaml.safe_load(document)
    assert sorted(documented) == sorted(ARGUMENT_SPEC)
    for name, spec in ARGUMENT_SPEC.items():
        doc = documented[name]
        assert (doc.get("type"), doc.get("required", False), doc.get("default"), doc.get("elements")) == (
            spec["type"],
            spec.get("required", False),
            spec.get("default"),
            spec.get("elements"),
        ), name
