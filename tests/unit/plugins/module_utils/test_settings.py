# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Settings validation: defaults, every error, Go durations (TESTCASES §8), image tags (TESTCASES §13)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
import yaml

from ansible_collections.stackrox.prefetch.plugins.doc_fragments.settings import ModuleDocFragment
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import PrefetchError, ValidationError
from ansible_collections.stackrox.prefetch.plugins.module_utils._settings import (
    COLLECTION_VERSION,
    DEFAULT_RESOURCES,
    MAX_NAME_LENGTH,
    SETTINGS_ARGUMENT_SPEC,
    agent_image,
    format_go_duration,
    image_tag,
    parse_go_duration,
    validate_settings,
)

UPSTREAM_CASES = Path(__file__).parent / "fixtures" / "upstream" / "testcases.jsonl"
ROWS = [json.loads(line) for line in UPSTREAM_CASES.read_text(encoding="utf-8").splitlines()]
DURATION_ROWS = [row for row in ROWS if row["section"] == "dur"]
VERSION_ROWS = [row for row in ROWS if row["section"] == "version"]


def settings(**overrides: t.Any):
    params = {"name": "my-images", "images": ["registry.test:5000/team/app:v1"], **overrides}
    return validate_settings(params, read_images_file=_no_file_expected)


def _no_file_expected(path: str) -> list[str]:
    raise AssertionError(f"unexpected read of {path}")


# --- Go durations --------------------------------------------------------------------------------------------------


def test_upstream_duration_rows_are_all_there() -> None:
    assert len(DURATION_ROWS) == 29


@pytest.mark.parametrize("row", DURATION_ROWS, ids=[repr(row["input"]) for row in DURATION_ROWS])
def test_parse_go_duration_matches_upstream(row: dict) -> None:
    if row["err"]:
        with pytest.raises(ValueError) as caught:
            parse_go_duration(row["input"])
        assert str(caught.value) == row["err"]
    else:
        assert parse_go_duration(row["input"]) == row["ns"]


@pytest.mark.parametrize("row", [row for row in DURATION_ROWS if not row["err"]], ids=lambda row: repr(row["input"]))
def test_format_go_duration_is_go_string_with_ascii_micro(row: dict) -> None:
    assert format_go_duration(row["ns"]) == row["str"].replace("\u00b5s", "us")


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("-9223372036854775808ns", -(1 << 63)),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("1.0000000000000000000001h", 3_600_000_000_000),
        ("-.5m", -30_000_000_000),
    ],
)
def test_go_duration_edges(text: str, nanoseconds: int) -> None:
    assert parse_go_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["9223372036854775808ns", "9223372037s", "2562048h", ".s", "-", "+", "s", "1s.", "."])
def test_go_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"^time: "):
        parse_go_duration(text)


def test_format_negative_and_sub_second() -> None:
    assert format_go_duration(-1_500_000_000) == "-1.5s"
    assert format_go_duration(1_234_567) == "1.234567ms"
    assert format_go_duration(3_601_000_000_000) == "1h0m1s"


# --- Image tags ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", VERSION_ROWS, ids=[f"{row['input']!r}-{row['distro']}" for row in VERSION_ROWS])
def test_image_tag_is_upstream_process_version_without_distro(row: dict) -> None:
    expected = row["output"]
    if row["distro"]:
        # Deliberate difference: one image for everything, never a `-distro` variant.
        expected = expected[: -len("-distro")]
    assert image_tag(row["input"]) == expected


def test_agent_image_forms() -> None:
    assert agent_image("quay.io/stackrox-io/prefetch-agent", "0.1.0") == "quay.io/stackrox-io/prefetch-agent:0.1.0"
    assert agent_image("localhost:5000/prefetch", "v0.4.2-0.20251126115717-559dd9fd402f") == (
        "localhost:5000/prefetch:sha-559dd9f"
    )
    digest = "sha256:" + "a" * 64
    assert agent_image("registry.example.com/a/b", digest) == f"registry.example.com/a/b@{digest}"
    # A tag and a digest: pulled by the digest, the tag stays readable (pseudo-versions mapped as for a tag alone).
    assert agent_image("registry.example.com/a/b", f"0.1.0@{digest}") == f"registry.example.com/a/b:0.1.0@{digest}"
    assert agent_image("r/p", f"v0.4.2-0.20251126115717-559dd9fd402f@{digest}") == f"r/p:sha-559dd9f@{digest}"


# --- Defaults --------------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    result = settings()
    assert result.namespace == "default"
    assert result.flavor == "vanilla"
    assert result.image == "quay.io/stackrox-io/prefetch-agent:0.1.0"
    assert result.images == ("registry.test:5000/team/app:v1",)
    assert result.secret is None
    assert result.collect_metrics is False
    assert result.metrics_service_type == "ClusterIP"
    assert result.credential_provider is None
    assert result.cri_socket == "/var/run/containerd/containerd.sock"
    assert result.node_selector == {}
    assert result.tolerations == [{"operator": "Exists"}]
    assert result.priority_class_name is None
    assert result.resources == DEFAULT_RESOURCES
    assert result.pull_policy == "Always"
    assert result.max_parallel_pulls == 32
    assert result.not_found == "retry"
    assert result.durations == {}
    assert result.agent_debug is False
    assert result.max_unavailable == "100%"
    assert result.network_policy is True


def test_default_version_is_the_collections() -> None:
    # The agent image's default tag follows the collection's version: bump both together.
    root = Path(__file__).resolve().parents[4]
    if (root / "galaxy.yml").exists():
        version = yaml.safe_load((root / "galaxy.yml").read_text(encoding="utf-8"))["version"]
    else:  # an installed collection has MANIFEST.json instead
        version = json.loads((root / "MANIFEST.json").read_text(encoding="utf-8"))["collection_info"]["version"]
    assert version == COLLECTION_VERSION


@pytest.mark.parametrize(
    ("flavor", "socket"),
    [
        ("vanilla", "/var/run/containerd/containerd.sock"),
        ("ocp", "/var/run/crio/crio.sock"),
        ("crio", "/var/run/crio/crio.sock"),
        ("k3s", "/run/k3s/containerd/containerd.sock"),
        ("rke2", "/run/k3s/containerd/containerd.sock"),
        ("microk8s", "/var/snap/microk8s/common/run/containerd.sock"),
    ],
)
def test_flavor_sockets(flavor: str, socket: str) -> None:
    assert settings(flavor=flavor).cri_socket == socket


def test_cri_socket_override_is_normalised() -> None:
    assert settings(cri_socket="/run//custom/cri.sock").cri_socket == "/run/custom/cri.sock"


def test_durations_are_canonical() -> None:
    result = settings(overall_timeout="90s", initial_pull_attempt_delay="0", max_pull_attempt_delay="100us")
    assert result.durations == {
        "overall_timeout": "1m30s",
        "initial_pull_attempt_delay": "0s",
        "max_pull_attempt_delay": "100us",
    }


def test_images_file_then_images() -> None:
    result = validate_settings(
        {"name": "x", "images_file": "/list.txt", "images": ["c"]},
        read_images_file=lambda path: ["a", "b"] if path == "/list.txt" else [],
    )
    assert result.images == ("a", "b", "c")


def test_allow_empty() -> None:
    assert settings(images=None, allow_empty=True).images == ()


def test_resources_replace_defaults_per_container() -> None:
    result = settings(resources={"prefetch": {"limits": {"memory": "1Gi", "cpu": 2}}, "sleep": None})
    assert result.resources["prefetch"] == {"limits": {"memory": "1Gi", "cpu": "2"}}
    assert result.resources["sleep"] == DEFAULT_RESOURCES["sleep"]


def test_tolerations_are_cleaned() -> None:
    result = settings(
        tolerations=[{"key": "gpu", "operator": "Equal", "value": 1, "effect": "NoExecute", "tolerationSeconds": 60}]
    )
    assert result.tolerations == [
        {"key": "gpu", "operator": "Equal", "value": "1", "effect": "NoExecute", "tolerationSeconds": 60}
    ]
    assert settings(tolerations=[]).tolerations == []


def test_node_selector_values_become_strings() -> None:
    assert settings(node_selector={"node-role.kubernetes.io/worker": "", "gpu": True}).node_selector == {
        "node-role.kubernetes.io/worker": "",
        "gpu": "true",
    }


@pytest.mark.parametrize(("value", "expected"), [("100%", "100%"), ("5%", "5%"), (1, 1), ("3", 3), ("007%", "7%")])
def test_max_unavailable_forms(value: t.Any, expected: t.Any) -> None:
    assert settings(max_unavailable=value).max_unavailable == expected


def test_longest_name_is_accepted() -> None:
    name = "a" * MAX_NAME_LENGTH
    assert MAX_NAME_LENGTH == 55
    assert settings(name=name, collect_metrics=True).name == name


def test_name_may_start_with_a_digit_without_metrics() -> None:
    assert settings(name="1st").name == "1st"


# --- Every validation error ------------------------------------------------------------------------------------------

ERRORS: list[tuple[dict[str, t.Any], str]] = [
    ({"name": ""}, r"^name is required$"),
    ({"name": "My-Images"}, r"^name 'My-Images' must be a DNS-1123 label"),
    ({"name": "-x"}, r"must be a DNS-1123 label"),
    ({"name": "a" * 56}, r"is 56 characters long; at most 55 keep '<name>-metrics' a valid Service name"),
    ({"name": "1st", "collect_metrics": True}, r"must start with a letter when collect_metrics is true"),
    ({"namespace": "Kube_System"}, r"^namespace 'Kube_System' is not a valid namespace name"),
    ({"namespace": "a" * 64}, r"is not a valid namespace name"),
    ({"flavor": "openshift"}, r"^flavor must be one of \['vanilla', 'ocp', 'crio', 'k3s', 'rke2', 'microk8s'\]"),
    ({"metrics_service_type": "NodePort"}, r"^metrics_service_type must be one of"),
    ({"credential_provider": "ECR"}, r"^credential_provider must be one of \['GKE'\]"),
    ({"pull_policy": "Never"}, r"^pull_policy must be one of"),
    ({"not_found": "ignore"}, r"^not_found must be one of"),
    ({"image": "quay.io/stackrox-io/prefetch-agent:1.0"}, r"must be an image repository without tag or digest"),
    ({"image": "Quay.io/UPPER/case"}, r"must be an image repository"),
    ({"image": ""}, r"must be an image repository"),
    ({"version": ""}, r"^version '' is not a valid image tag"),
    ({"version": "-bad"}, r"^version '-bad' is not a valid image tag"),
    ({"version": "a" * 129}, r"is not a valid image tag"),
    ({"version": "0.1.0@sha256:abc"}, r"^version '0.1.0@sha256:abc': 'sha256:abc' after '@' is not a sha256: digest"),
    ({"version": "0.1.0@"}, r"after '@' is not a sha256: digest"),
    ({"version": "@sha256:" + "a" * 64}, r"is not a valid image tag"),
    ({"images": []}, r"^no images to prefetch: give images or images_file \(or set allow_empty: true\)$"),
    ({"images": None}, r"^no images to prefetch"),
    ({"images": ["ok", " "]}, r"^images\[1\] is empty$"),
    ({"images": "nginx"}, r"^images must be a list"),
    ({"secret": "My_Secret"}, r"^secret 'My_Secret' is not a valid Secret name"),
    ({"priority_class_name": "High!"}, r"^priority_class_name 'High!' is not a valid PriorityClass name"),
    ({"cri_socket": "run/crio.sock"}, r"^cri_socket 'run/crio.sock' must be an absolute path on the nodes$"),
    ({"cri_socket": "/run/../etc/x.sock"}, r"must name the socket file itself, without '\.\.'"),
    ({"cri_socket": "/run/crio/"}, r"must name the socket file itself"),
    ({"cri_socket": "/crio.sock"}, r"lies in '/': mounting the node's root directory is refused"),
    ({"node_selector": ["a"]}, r"^node_selector must be a mapping"),
    ({"node_selector": {"bad key!": "x"}}, r"^node_selector key 'bad key!' is not a valid label key"),
    ({"node_selector": {"a/b/c": "x"}}, r"not a valid label key"),
    ({"node_selector": {"zone": "not valid"}}, r"^node_selector\['zone'\] value 'not valid' is not a valid"),
    ({"tolerations": {"operator": "Exists"}}, r"^tolerations must be a list"),
    ({"tolerations": ["Exists"]}, r"^tolerations\[0\] must be a mapping"),
    ({"tolerations": [{"operator": "Exists", "colour": "red"}]}, r"^tolerations\[0\] has unknown keys \['colour'\]"),
    ({"tolerations": [{"operator": "Maybe"}]}, r"^tolerations\[0\]\.operator must be Exists or Equal"),
    ({"tolerations": [{"value": "x"}]}, r"a toleration without key needs operator Exists"),
    ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, r"operator Exists takes no value"),
    ({"tolerations": [{"key": "bad key", "operator": "Exists"}]}, r"\.key 'bad key' is not a valid label key"),
    ({"tolerations": [{"operator": "Exists", "effect": "Evict"}]}, r"\.effect must be one of"),
    (
        {"tolerations": [{"operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        r"tolerationSeconds needs effect NoExecute",
    ),
    (
        {"tolerations": [{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": "5"}]},
        r"tolerationSeconds must be an integer",
    ),
    ({"resources": "big"}, r"^resources must be a mapping"),
    ({"resources": {"main": {}}}, r"^resources has unknown containers \['main'\]"),
    ({"resources": {"prefetch": "1Gi"}}, r"^resources\.prefetch must be a mapping with 'requests' and/or 'limits'"),
    ({"resources": {"prefetch": {"claims": []}}}, r"^resources\.prefetch has unsupported keys \['claims'\]"),
    ({"resources": {"sleep": {"limits": ["cpu"]}}}, r"^resources\.sleep\.limits must be a mapping"),
    ({"resources": {"sleep": {"limits": {"cpu": "lots"}}}}, r"^resources\.sleep\.limits\.cpu 'lots' is not a Kub"),
    ({"resources": {"sleep": {"limits": {"cpu": True}}}}, r"^resources\.sleep\.limits\.cpu must be a Kubernetes"),
    ({"resources": {"sleep": {"limits": {"cpu": "-1"}}}}, r"is not a Kubernetes quantity"),
    ({"resources": {"sleep": {"limits": {"bad name!": "1"}}}}, r"has an invalid resource name 'bad name!'"),
    (
        {"resources": {"prefetch": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}},
        r"^resources\.prefetch: the memory request is above its limit$",
    ),
    ({"max_parallel_pulls": -1}, r"^max_parallel_pulls must be an integer >= 0, got -1$"),
    ({"agent_progress_interval": "-1s"}, r"^agent_progress_interval must not be negative, got '-1s'$"),
    ({"agent_progress_interval": "soon"}, r"^agent_progress_interval: "),
    ({"max_parallel_pulls": True}, r"^max_parallel_pulls must be an integer"),
    ({"parallel_nodes": -1}, r"^parallel_nodes must be an integer >= 0, got -1$"),
    ({"parallel_nodes": True}, r"^parallel_nodes must be an integer"),
    ({"canary": True}, r"^canary needs parallel_nodes > 0 "),
    ({"canary": True, "parallel_nodes": 0}, r"^canary needs parallel_nodes > 0 "),
    ({"canary": "yes", "parallel_nodes": 2}, r"^canary must be a boolean, got 'yes'$"),
    ({"overall_timeout": "1d"}, r'^overall_timeout: time: unknown unit "d" in duration "1d"$'),
    ({"initial_pull_attempt_timeout": "30"}, r'^initial_pull_attempt_timeout: time: missing unit in duration "30"$'),
    ({"max_pull_attempt_timeout": "0"}, r"^max_pull_attempt_timeout must be a positive duration, got '0'$"),
    ({"overall_timeout": "-5m"}, r"^overall_timeout must be a positive duration"),
    ({"initial_pull_attempt_delay": "-1s"}, r"^initial_pull_attempt_delay must not be negative, got '-1s'$"),
    ({"max_pull_attempt_delay": ""}, r'^max_pull_attempt_delay: time: invalid duration ""$'),
    ({"max_unavailable": 0}, r"^max_unavailable must be a positive integer or a percentage"),
    ({"max_unavailable": "0%"}, r"^max_unavailable must be"),
    ({"max_unavailable": "101%"}, r"^max_unavailable must be"),
    ({"max_unavailable": True}, r"^max_unavailable must be"),
    ({"max_unavailable": "half"}, r"^max_unavailable must be"),
    ({"colour": "red"}, r"^unknown settings \['colour'\]$"),
]


@pytest.mark.parametrize(("overrides", "message"), ERRORS, ids=[str(case[0])[:60] for case in ERRORS])
def test_validation_errors(overrides: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        settings(**overrides)
    # One line, and part of the collection's error hierarchy.
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, PrefetchError)


def test_images_file_errors_propagate() -> None:
    def unreadable(path: str) -> list[str]:
        raise ValidationError(f"images_file {path!r} cannot be read: Permission denied")

    with pytest.raises(ValidationError, match=r"^images_file '/root/list' cannot be read: Permission denied$"):
        validate_settings({"name": "x", "images_file": "/root/list"}, read_images_file=unreadable)


# --- The doc fragment documents exactly the argument spec ------------------------------------------------------------


def _documented_options() -> dict[str, dict[str, t.Any]]:
    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]


def test_doc_fragment_documents_every_option_and_nothing_else() -> None:
    assert set(_documented_options()) == set(SETTINGS_ARGUMENT_SPEC)


@pytest.mark.parametrize("option", sorted(SETTINGS_ARGUMENT_SPEC))
def test_doc_fragment_matches_spec(option: str) -> None:
    documented = _documented_options()[option]
    spec = SETTINGS_ARGUMENT_SPEC[option]
    assert documented["type"] == spec["type"]
    assert documented.get("default") == spec.get("default")
    assert documented.get("choices") == spec.get("choices")
    assert documented.get("elements") == spec.get("elements")
    assert documented.get("required", False) == spec.get("required", False)
    assert set(documented.get("suboptions", {})) == set(spec.get("options", {}))


def test_parallel_nodes_and_canary() -> None:
    default = settings()
    assert (default.parallel_nodes, default.canary) == (0, False)
    slots = settings(parallel_nodes=2, canary=True)
    assert (slots.parallel_nodes, slots.canary) == (2, True)
    assert settings(parallel_nodes=3).canary is False
