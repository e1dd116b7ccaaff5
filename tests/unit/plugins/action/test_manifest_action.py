# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest action plugin: when it renders on the controller, and that its result is the module's own."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from ansible_collections.stackrox.prefetch.plugins.action.manifest import render_in_process, renders_in_process
from ansible_collections.stackrox.prefetch.plugins.modules import manifest
from ansible_collections.stackrox.prefetch.tests.unit.plugins.modules.utils import patched_exits, run_main

IMAGES = ["registry.test:5000/team/app:v1", "registry.test:5000/team/db:v2"]


def module_result(args: dict[str, t.Any]) -> dict[str, t.Any]:
    with patched_exits():
        return run_main(manifest.main, args)


@pytest.mark.parametrize(
    "args",
    [
        {"name": "my-images", "images": IMAGES},
        {"name": "my-images", "namespace": "ns", "images": IMAGES, "flavor": "ocp", "collect_metrics": True,
         "secret": "pull", "parallel_nodes": 2, "initial_pull_attempt_timeout": "10s"},
        {"name": "my-images", "images": ["registry.test:5000/team/app"]},  # a warning (no tag)
    ],
)
def test_the_in_process_result_is_the_modules(args: dict[str, t.Any]) -> None:
    rendered = render_in_process(dict(args))
    assert rendered is not None
    expected = module_result(dict(args))
    for key in ("changed", "objects", "yaml", "checksum"):
        assert rendered[key] == expected[key]
    assert rendered.get("warnings", []) == expected.get("warnings", [])
    assert rendered["invocation"]["module_args"]["name"] == "my-images"


def test_an_images_file_is_read_in_process(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(IMAGES) + "\n")
    args = {"name": "my-images", "images_file": str(listing)}
    rendered = render_in_process(dict(args))
    assert rendered is not None and rendered["yaml"] == module_result(dict(args))["yaml"]


@pytest.mark.parametrize(
    "args",
    [
        {"name": "my-images", "images": IMAGES, "flavor": "nope"},  # the module's own choices message
        {"name": "my-images", "images": IMAGES, "unknown_option": 1},
        {"name": "my-images", "images": IMAGES, "max_parallel_pulls": -1},  # validate_settings fails
        {"images": IMAGES},  # name is required
    ],
)
def test_problems_are_left_to_the_module(args: dict[str, t.Any]) -> None:
    assert render_in_process(dict(args)) is None


@pytest.mark.parametrize(
    ("args", "transport", "become", "is_async", "expected"),
    [
        ({"name": "a"}, "local", False, False, True),
        ({"name": "a", "images_file": "/abs/images.txt"}, "local", False, False, True),
        ({"name": "a"}, "ssh", False, False, False),
        ({"name": "a"}, "local", True, False, False),
        ({"name": "a"}, "local", False, True, False),
        ({"name": "a", "dest": "/tmp/out.yaml"}, "local", False, False, False),
        ({"name": "a", "images_file": "images.txt"}, "local", False, False, False),
    ],
)
def test_renders_in_process_only_where_the_module_would_run_here_without_io(
    args: dict[str, t.Any], transport: str, become: bool, is_async: bool, expected: bool
) -> None:
    assert renders_in_process(args, transport, become, is_async) is expected
