# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest module's main(): results, dest writing, idempotence, check mode, diff mode, errors."""

from __future__ import annotations

import typing as t
from pathlib import Path
from unittest import mock

import pytest
import yaml
from ansible.module_utils import basic

from ansible_collections.stackrox.prefetch.plugins.modules import manifest
from ansible_collections.stackrox.prefetch.tests.unit.plugins.modules.utils import (
    fail_main,
    patched_exits,
    run_main,
)

IMAGES = ["registry.test:5000/team/app:v1", "registry.test:5000/team/db:v2"]


@pytest.fixture(autouse=True)
def patched_module() -> t.Iterator[None]:
    with patched_exits():
        yield


def run(args: dict[str, t.Any]) -> dict[str, t.Any]:
    return run_main(manifest.main, args)


def fail(args: dict[str, t.Any]) -> dict[str, t.Any]:
    return fail_main(manifest.main, args)


def base_args(**extra: t.Any) -> dict[str, t.Any]:
    return {"name": "my-images", "images": list(IMAGES), **extra}


def test_render_without_dest_changes_nothing() -> None:
    result = run(base_args())
    assert result["changed"] is False
    assert [obj["kind"] for obj in result["objects"]] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "NetworkPolicy",
        "DaemonSet",
    ]
    assert list(yaml.safe_load_all(result["yaml"])) == result["objects"]
    daemon_set = result["objects"][-1]
    assert (
        daemon_set["spec"]["template"]["metadata"]["annotations"]["prefetch.stackrox.io/config-hash"]
        == (result["checksum"])
    )
    assert "dest" not in result and "diff" not in result


def test_dest_is_written_then_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "prefetch.yaml"
    first = run(base_args(dest=str(dest)))
    assert first["changed"] is True
    assert first["dest"] == str(dest)
    assert dest.read_text(encoding="utf-8") == first["yaml"]
    second = run(base_args(dest=str(dest)))
    assert second["changed"] is False
    assert dest.read_text(encoding="utf-8") == first["yaml"]


def test_changed_settings_rewrite_dest(tmp_path: Path) -> None:
    dest = tmp_path / "prefetch.yaml"
    first = run(base_args(dest=str(dest)))
    second = run(base_args(dest=str(dest), images=[*IMAGES, "registry.test:5000/team/new:v3"]))
    assert second["changed"] is True
    assert second["checksum"] != first["checksum"]
    assert "registry.test:5000/team/new:v3" in dest.read_text(encoding="utf-8")


def test_check_mode_reports_but_does_not_write(tmp_path: Path) -> None:
    dest = tmp_path / "prefetch.yaml"
    result = run(base_args(dest=str(dest), _ansible_check_mode=True))
    assert result["changed"] is True
    assert not dest.exists()
    dest.write_text("old\n", encoding="utf-8")
    assert run(base_args(dest=str(dest), _ansible_check_mode=True))["changed"] is True
    assert dest.read_text(encoding="utf-8") == "old\n"


def test_check_mode_on_an_up_to_date_file_is_unchanged(tmp_path: Path) -> None:
    dest = tmp_path / "prefetch.yaml"
    run(base_args(dest=str(dest)))
    assert run(base_args(dest=str(dest), _ansible_check_mode=True))["changed"] is False


def test_diff_shows_old_and_new_content(tmp_path: Path) -> None:
    dest = tmp_path / "prefetch.yaml"
    dest.write_text("old: content\n", encoding="utf-8")
    result = run(base_args(dest=str(dest), _ansible_diff=True, _ansible_check_mode=True))
    assert result["diff"] == {
        "before": "old: content\n",
        "after": result["yaml"],
        "before_header": str(dest),
        "after_header": str(dest),
    }


def test_diff_of_a_new_file(tmp_path: Path) -> None:
    dest = tmp_path / "new.yaml"
    result = run(base_args(dest=str(dest), _ansible_diff=True))
    assert result["diff"]["before"] == ""
    assert result["diff"]["before_header"] == f"{dest} (absent)"
    assert result["diff"]["after"] == dest.read_text(encoding="utf-8")


def test_images_file_then_images(tmp_path: Path) -> None:
    images_file = tmp_path / "images.txt"
    images_file.write_text("# from the file\nregistry.test:5000/a:1\n\n", encoding="utf-8")
    result = run({"name": "my-images", "images_file": str(images_file), "images": ["registry.test:5000/b:2"]})
    config_map = next(obj for obj in result["objects"] if obj["kind"] == "ConfigMap")
    assert config_map["data"]["images.txt"] == "registry.test:5000/a:1\nregistry.test:5000/b:2\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"name": "Bad_Name", "images": IMAGES},
            "prefetch instance 'Bad_Name': name 'Bad_Name' must be a DNS-1123 label",
        ),
        ({"name": "my-images"}, "prefetch instance 'my-images': no images to prefetch"),
        (
            {"name": "my-images", "images": IMAGES, "overall_timeout": "1d"},
            'prefetch instance \'my-images\': overall_timeout: time: unknown unit "d" in duration "1d"',
        ),
    ],
)
def test_validation_errors_fail_naming_the_instance(args: dict[str, t.Any], message: str) -> None:
    result = fail(args)
    assert result["msg"].startswith(message)
    assert "\n" not in result["msg"]


def test_unreadable_images_file_fails(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    result = fail({"name": "my-images", "images_file": str(missing)})
    assert result["msg"] == (
        f"prefetch instance 'my-images': images_file {str(missing)!r} cannot be read: No such file or directory"
    )


def test_ansible_rejects_unknown_choices() -> None:
    assert "flavor" in fail(base_args(flavor="eks"))["msg"]


def test_dest_in_a_missing_directory_fails(tmp_path: Path) -> None:
    dest = tmp_path / "no" / "such" / "dir.yaml"
    result = fail(base_args(dest=str(dest)))
    assert result["msg"] == f"dest {str(dest)!r}: the directory {str(dest.parent)!r} does not exist"


def test_dest_that_is_a_directory_fails(tmp_path: Path) -> None:
    result = fail(base_args(dest=str(tmp_path)))
    assert result["msg"] == f"dest {str(tmp_path)!r} is a directory, not a file"


def test_missing_pyyaml_fails_cleanly() -> None:
    with mock.patch.object(manifest, "HAS_YAML", False):
        result = fail(base_args())
    assert "PyYAML" in result["msg"]


def test_invalid_references_warn_but_render() -> None:
    # QA: the entry still goes to the nodes (the agent reports it per node), but the user hears of it at once.
    with mock.patch.object(basic.AnsibleModule, "warn") as warn:
        result = run(base_args(images=[*IMAGES, "registry.test:5000/team/App:v1"]))
    config_map = next(o for o in result["objects"] if o["kind"] == "ConfigMap")
    assert "registry.test:5000/team/App:v1" in config_map["data"]["images.txt"]
    (message,), _kwargs = warn.call_args
    assert message.startswith("prefetch instance 'my-images': 1 image list entry is not a valid image reference")
    assert "'registry.test:5000/team/App:v1' (the repository must be lower-case)" in message


def test_valid_references_do_not_warn() -> None:
    with mock.patch.object(basic.AnsibleModule, "warn") as warn:
        run(base_args())
    warn.assert_not_called()
