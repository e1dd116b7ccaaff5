# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every golden render is valid against the Kubernetes OpenAPI schemas (offline, kubernetes-validate), strictly:
an unknown or misspelt field fails, as the API server's strict field validation would."""

from __future__ import annotations

import copy
import typing as t

import kubernetes_validate
import pytest

from ansible_collections.stackrox.prefetch.plugins.module_utils._render import render
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import validate_settings

# The oldest and the newest Kubernetes release the schemas cover.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# One render per flavor, and every option at once, so every field the render can emit is checked.
SCHEMA_CASES: dict[str, dict[str, t.Any]] = {
    **{flavor: {"flavor": flavor} for flavor in ("vanilla", "ocp", "crio", "k3s", "rke2", "microk8s")},
    "everything": {
        "flavor": "ocp",
        "secret": "my-secret",
        "collect_metrics": True,
        "metrics_service_type": "LoadBalancer",
        "credential_provider": "GKE",
        "cri_socket": "/run/custom/cri.sock",
        "node_selector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}
        ],
        "priority_class_name": "system-node-critical",
        "resources": {"aggregator": {"requests": {"cpu": "1m"}}},
        "pull_policy": "IfNotPresent",
        "max_parallel_pulls": 2,
        "not_found": "fail",
        "overall_timeout": "1h",
        "agent_debug": True,
        "max_unavailable": 3,
    },
    "crio-everything": {"flavor": "crio", "collect_metrics": True, "max_unavailable": "50%"},
}


def objects(case: str) -> list[dict[str, t.Any]]:
    params = {"name": "my-images", "images": ["registry.test:5000/team/app:v1"], **SCHEMA_CASES[case]}
    return render(validate_settings(params))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_render_is_schema_valid(case: str, version: str) -> None:
    for obj in objects(case):
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_check_rejects_a_misspelt_field() -> None:
    daemon_set = copy.deepcopy(objects("crio")[-1])
    daemon_set["spec"]["template"]["spec"]["initContainers"][0]["securityContext"]["seLinuxOption"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemon_set, KUBERNETES_VERSIONS[0], strict=True)
