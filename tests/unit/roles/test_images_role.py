# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistency of the images role: argument specs vs defaults vs tasks, and the per-node report template."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.mathstuff import human_readable

ROLE = Path(__file__).resolve().parents[3] / "roles" / "images"
# Variables the role sets itself (register / set_fact / task vars); everything else must be in the argument specs.
INTERNAL_VARS = {
    "images_rendered",
    "images_applied",
    "images_removed",
    "images_rollout",
    "images_result",
    "images_wait",
    "images_deleted",
    "images_reports",
}


def load(path: Path) -> t.Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def options() -> dict[str, dict[str, t.Any]]:
    return load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


def test_defaults_match_argument_specs() -> None:
    """defaults/main.yml sets exactly the documented variables, with the documented defaults."""
    defaults = load(ROLE / "defaults" / "main.yml")
    spec = options()
    assert sorted(defaults) == sorted(spec)
    mismatched = {
        name: (defaults[name], opt.get("default")) for name, opt in spec.items() if defaults[name] != opt.get("default")
    }
    assert mismatched == {}


def test_every_option_is_prefixed_typed_and_described() -> None:
    for name, opt in options().items():
        assert name.startswith("images_"), name
        assert opt.get("type"), name
        assert opt.get("description"), name
        if opt.get("type") == "list":
            assert opt.get("elements"), name


def test_secrets_are_not_logged() -> None:
    spec = options()
    assert spec["images_api_key"].get("no_log") is True
    assert spec["images_password"].get("no_log") is True


def test_tasks_only_use_documented_variables() -> None:
    used: set[str] = set()
    for path in [*sorted((ROLE / "tasks").glob("*.yml")), *sorted((ROLE / "templates").glob("*.j2"))]:
        # Attribute accesses (totals.images_ok) are keys of a result, not variables.
        used |= set(re.findall(r"(?<![.\w])images_[a-z0-9_]+\b", path.read_text(encoding="utf-8")))
    undocumented = used - set(options()) - INTERNAL_VARS
    assert undocumented == set()


def test_every_documented_variable_is_used() -> None:
    text = "".join(p.read_text(encoding="utf-8") for p in (ROLE / "tasks").glob("*.yml"))
    unused = {name for name in options() if not re.search(rf"\b{name}\b", text)}
    assert unused == set()


def render_report(result: dict[str, t.Any]) -> list[str]:
    """Render templates/report.j2 as report.yml does (lookup('template') uses trim_blocks)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True, undefined=jinja2.StrictUndefined
    )
    env.filters["ansible.builtin.human_readable"] = human_readable
    text = env.get_template("report.j2").render(images_result=result)
    return text.strip().split("\n")


NODE_OK = {
    "node": "sim-node-1",
    "pod": "p1",
    "status": "succeeded",
    "ok": 3,
    "failed": 0,
    "skipped": 1,
    "attempts": 3,
    "bytes": 3 << 20,
    "seconds": 1.5,
    "errors": {},
    "retries": {},
    "message": "",
}
NODE_FAILED = {
    "node": "sim-node-2",
    "pod": "p2",
    "status": "failed",
    "ok": 2,
    "failed": 1,
    "skipped": 0,
    "attempts": 9,
    "bytes": 2 << 20,
    "seconds": 20.0,
    "errors": {"registry.test:5000/missing:v1": "not_found: manifest unknown"},
    "retries": {"registry.test:5000/missing:v1": 7},
    "message": "",
}


TOTALS_OK = {
    "nodes": 1,
    "nodes_succeeded": 1,
    "nodes_failed": 0,
    "images_ok": 3,
    "images_failed": 0,
    "images_skipped": 1,
    "bytes": 3 << 20,
}


def result(**overrides: t.Any) -> dict[str, t.Any]:
    base: dict[str, t.Any] = {
        "cluster": "prod-east",
        "state": "present",
        "name": "img",
        "namespace": "prefetch",
        "changed": True,
        "failed": False,
        "msg": "",
        "nodes": [NODE_OK],
        "totals": TOTALS_OK,
        "daemonset": {},
        "metrics": None,
    }
    base.update(overrides)
    return base


def test_report_lists_every_node_and_totals() -> None:
    lines = render_report(result())
    assert lines[0].startswith(
        "prod-east: prefetch/img succeeded: 1 nodes (1 succeeded, 0 failed), images ok=3 failed=0 skipped=1"
    )
    assert "3.00 MB" in lines[0]
    assert len(lines) == 2
    assert re.match(r"sim-node-1 +succeeded +ok=3 +failed=0 +skipped=1 +attempts=3 +1.5s$", lines[1])


def test_report_names_node_image_and_reason_of_each_failure() -> None:
    lines = render_report(
        result(
            failed=True,
            nodes=[NODE_OK, NODE_FAILED],
            totals={
                "nodes": 2,
                "nodes_succeeded": 1,
                "nodes_failed": 1,
                "images_ok": 5,
                "images_failed": 1,
                "images_skipped": 1,
                "bytes": 5 << 20,
            },
        )
    )
    assert lines[0].startswith("prod-east: prefetch/img FAILED: 2 nodes (1 succeeded, 1 failed), images ok=5 failed=1")
    assert lines[3] == "  sim-node-2: registry.test:5000/missing:v1: not_found: manifest unknown"
    assert len(lines) == 4


def test_report_shows_why_a_node_is_not_done() -> None:
    node = dict(
        NODE_FAILED,
        status="pending",
        message="ImagePullBackOff of the agent image",
        errors={"a:1": "timeout: deadline"},
    )
    lines = render_report(result(failed=True, nodes=[node], totals={}))
    assert lines[0] == "prod-east: prefetch/img FAILED"
    assert lines[1].endswith("ImagePullBackOff of the agent image")
    assert lines[2] == "  sim-node-2: a:1: timeout: deadline"


@pytest.mark.parametrize(
    "msg, expected",
    [("no node runs the DaemonSet", "no node reported: no node runs the DaemonSet"), ("", "no node reported")],
)
def test_report_without_nodes_says_so(msg: str, expected: str) -> None:
    lines = render_report(result(failed=True, nodes=[], totals={}, msg=msg))
    assert lines == ["prod-east: prefetch/img FAILED", expected]


def test_report_shows_the_warnings_of_a_node_whose_agent_had_some() -> None:
    denied = 'node labels: failed to patch node sim-node-2: 403 Forbidden: nodes "sim-node-2" is forbidden'
    node = dict(NODE_FAILED, status="succeeded", failed=0, errors={}, warnings=[denied])
    totals = dict(TOTALS_OK, nodes=2, nodes_succeeded=2, nodes_with_warnings=1)
    lines = render_report(result(nodes=[dict(NODE_OK, warnings=[]), node], totals=totals))
    assert lines[0].startswith("prod-east: prefetch/img succeeded: 2 nodes (2 succeeded, 0 failed, 1 with warnings)")
    assert re.match(r"sim-node-2 +succeeded ", lines[2])
    assert lines[3] == f"  sim-node-2: warning: {denied}"
    assert len(lines) == 4


def report_task_images(variables: dict[str, t.Any]) -> t.Any:
    """The report task's ``images`` expression, templated by Ansible as the play does."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    task = next(task for task in load(ROLE / "tasks" / "report.yml") if "stackrox.prefetch.report" in task)
    expression = task["stackrox.prefetch.report"]["images"]
    try:  # ansible-core 2.19 renders only trusted templates (task files are trusted when loaded by a play)
        from ansible.template import trust_as_template

        expression = trust_as_template(expression)
    except ImportError:
        pass
    return Templar(loader=DataLoader(), variables=variables).template(expression)


def test_report_task_takes_the_image_list_from_the_rendered_configmap() -> None:
    objects = [
        {"kind": "ServiceAccount", "metadata": {"name": "img"}},
        {"kind": "ConfigMap", "metadata": {"name": "img"}, "data": {"images.txt": "r.test/a:1\nr.test/b:2\n"}},
        {"kind": "DaemonSet", "metadata": {"name": "img"}},
    ]
    assert report_task_images({"images_rendered": {"objects": objects}}) == ["r.test/a:1", "r.test/b:2"]
    assert report_task_images({"images_rendered": {"objects": objects[:1]}}) == []
    assert report_task_images({}) == []
