# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The apply module's main() when the cluster fails or a signal arrives part-way: one message naming the failure and
what was and was not written, the same in ``objects`` and ``not_written``."""

from __future__ import annotations

import os
import signal
import typing as t
from unittest import mock

import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import ResourceInfo
from ansible_collections.stackrox.prefetch.plugins.modules import apply
from ansible_collections.stackrox.prefetch.tests.unit.plugins.module_utils.test_apply import (
    FailingServer,
    namespace_obj,
    rendered,
)
from ansible_collections.stackrox.prefetch.tests.unit.plugins.modules.utils import fail_main, patched_exits


def run_against(server: t.Any, **args: t.Any) -> dict[str, t.Any]:
    with patched_exits(), mock.patch.object(apply, "build_api_client"), \
            mock.patch.object(apply, "Cluster", side_effect=lambda *_a, **_k: server):
        return fail_main(apply.main, {"objects": rendered(), **args})


def test_a_failed_write_names_what_was_written_and_what_was_not() -> None:
    server = FailingServer("ConfigMap", outcome_unknown=True)
    server.put(namespace_obj(None))
    result = run_against(server)
    assert result["msg"] == (
        "cannot apply ConfigMap imgs: HTTP 500; written: ServiceAccount prefetch/imgs (created), ClusterRole "
        "imgs-node-labeler (created); not written: ConfigMap prefetch/imgs (to be created, maybe created all the "
        "same: the request may have reached the server), DaemonSet prefetch/imgs (to be created); run the task "
        "again to finish: it writes only what is missing or differs"
    )
    assert result["changed"] is True
    written = [(e["kind"], e["action"]) for e in result["objects"]]
    assert written == [("ServiceAccount", "created"), ("ClusterRole", "created")]
    missing = [(e["kind"], e["maybe_done"]) for e in result["not_written"]]
    assert missing == [("ConfigMap", True), ("DaemonSet", False)]
    assert "exception" not in result


def test_a_failure_in_the_checks_keeps_its_message() -> None:
    """Every check comes before the first write (the module's documentation says so): nothing to add."""
    server = FailingServer("ConfigMap")
    server.put(namespace_obj(None))
    with mock.patch.object(server, "get", side_effect=apply.ClusterError("cannot get Namespace prefetch: HTTP 503")):
        result = run_against(server)
    assert result["msg"] == "cannot get Namespace prefetch: HTTP 503"
    assert result["objects"] == [] and result["not_written"] == [] and result["changed"] is False


def test_a_failure_on_the_first_write_says_nothing_was_written() -> None:
    server = FailingServer("ServiceAccount")
    server.put(namespace_obj(None))
    result = run_against(server)
    assert result["msg"].startswith("cannot apply ServiceAccount imgs: HTTP 500; nothing was written; not written: "
                                    "ServiceAccount prefetch/imgs (to be created), ClusterRole imgs-node-labeler")


class InterruptingServer(FailingServer):
    """SIGINT arrives while the ConfigMap is written (as Ctrl-C, or ansible-playbook passing its SIGINT on)."""

    def apply(self, info: ResourceInfo, obj: dict[str, t.Any], dry_run: bool, force: bool) -> dict[str, t.Any]:
        if info.kind == "ConfigMap" and not dry_run:
            os.kill(os.getpid(), signal.SIGINT)
        return super().apply(info, obj, dry_run, force)


def test_sigint_part_way_reports_the_writes_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    server = InterruptingServer("none")
    server.put(namespace_obj(None))
    result = run_against(server)
    assert result["msg"].startswith("interrupted by SIGINT while applying instance prefetch/imgs; written: ")
    assert "ClusterRole imgs-node-labeler (created)" in result["msg"]
    assert "DaemonSet prefetch/imgs (to be created)" in result["msg"]
    assert result["not_written"][-1]["kind"] == "DaemonSet"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("state", ["present", "absent"])
def test_the_deadline_is_the_wait_timeout(state: str) -> None:
    seen: dict[str, float] = {}

    def make(_client: t.Any, deadline: float) -> t.Any:
        seen["deadline"] = deadline
        raise apply.ClusterError("stop here")

    args = {"state": state, "name": "imgs", "namespace": "prefetch", "wait_timeout": 45}
    with patched_exits(), mock.patch.object(apply, "build_api_client"), \
            mock.patch.object(apply, "Cluster", side_effect=make), \
            mock.patch.object(apply.time, "monotonic", return_value=1000.0):
        result = fail_main(apply.main, args if state == "absent" else {**args, "objects": rendered()})
    assert seen["deadline"] == 1045.0 and result["msg"] == "stop here"
