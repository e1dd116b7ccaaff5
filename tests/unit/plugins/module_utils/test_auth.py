# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options: the kubernetes.core contract (names, aliases, no_log, K8S_AUTH_*) and how a client is built."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from ansible_collections.stackrox.prefetch.plugins.module_utils import _auth
from ansible_collections.stackrox.prefetch.plugins.module_utils._auth import (
    AUTH_ARG_SPEC,
    build_api_client,
    build_configuration,
    collect_auth_settings,
    impersonation_headers,
    needs_config_loading,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ClusterError

# kubernetes.core's args_common.AUTH_ARG_SPEC: option -> (type, aliases, no_log). Compatibility is the point.
KUBERNETES_CORE_OPTIONS = {
    "kubeconfig": ("raw", [], False),
    "context": ("str", [], False),
    "host": ("str", [], False),
    "api_key": ("str", [], True),
    "username": ("str", [], False),
    "password": ("str", [], True),
    "validate_certs": ("bool", ["verify_ssl"], False),
    "ca_cert": ("path", ["ssl_ca_cert"], False),
    "client_cert": ("path", ["cert_file"], False),
    "client_key": ("path", ["key_file"], False),
    "proxy": ("str", [], False),
    "no_proxy": ("str", [], False),
    "proxy_headers": ("dict", [], False),
    "persist_config": ("bool", [], False),
    "impersonate_user": ("str", [], False),
    "impersonate_groups": ("list", [], False),
}

FRAGMENT = Path(__file__).parents[3].parent / "plugins" / "doc_fragments" / "k8s_auth.py"


def kubeconfig_dict(server: str = "https://10.0.0.1:6443", token: str = "kubeconfig-token") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }


def bearer(configuration: Any) -> str:
    """The Authorization header value the client will send."""
    return str(configuration.auth_settings()["BearerToken"]["value"])


def test_spec_matches_kubernetes_core() -> None:
    actual = {
        name: (spec["type"], spec.get("aliases", []), spec.get("no_log", False)) for name, spec in AUTH_ARG_SPEC.items()
    }
    assert actual == KUBERNETES_CORE_OPTIONS
    assert AUTH_ARG_SPEC["impersonate_groups"]["elements"] == "str"
    assert {key: value.get("no_log", False) for key, value in AUTH_ARG_SPEC["proxy_headers"]["options"].items()} == {
        "proxy_basic_auth": True,
        "basic_auth": True,
        "user_agent": False,
    }


def test_doc_fragment_documents_the_spec() -> None:
    tree = ast.parse(FRAGMENT.read_text())
    text = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION"
    )
    options = yaml.safe_load(text)["options"]
    assert set(options) == set(AUTH_ARG_SPEC)
    for name, spec in AUTH_ARG_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert options[name].get("aliases", []) == spec.get("aliases", []), name
    assert set(options["proxy_headers"]["suboptions"]) == set(AUTH_ARG_SPEC["proxy_headers"]["options"])


class TestCollectSettings:
    def test_parameters_win_over_the_environment(self) -> None:
        settings = collect_auth_settings({"host": "https://a/", "api_key": "p"}, {"K8S_AUTH_HOST": "https://b"})
        assert settings == {"host": "https://a", "api_key": "p"}

    def test_environment_by_option_and_by_client_name(self) -> None:
        environ = {
            "K8S_AUTH_KUBECONFIG": "/k",
            "K8S_AUTH_CONTEXT": "ctx",
            "K8S_AUTH_VERIFY_SSL": "no",
            "K8S_AUTH_SSL_CA_CERT": "/ca",
            "K8S_AUTH_CERT_FILE": "/crt",
            "K8S_AUTH_KEY_FILE": "/key",
            "K8S_AUTH_PERSIST_CONFIG": "true",
            "K8S_AUTH_NO_PROXY": "localhost",
        }
        assert collect_auth_settings({}, environ) == {
            "kubeconfig": "/k",
            "context": "ctx",
            "verify_ssl": False,
            "ssl_ca_cert": "/ca",
            "cert_file": "/crt",
            "key_file": "/key",
            "persist_config": True,
            "no_proxy": "localhost",
        }

    def test_option_named_environment_variables_work_too(self) -> None:
        settings = collect_auth_settings({}, {"K8S_AUTH_VALIDATE_CERTS": "1", "K8S_AUTH_CA_CERT": "/ca"})
        assert settings == {"verify_ssl": True, "ssl_ca_cert": "/ca"}

    @pytest.mark.parametrize(("text", "expected"), [("0", False), ("false", False), ("No", False), ("yes", True)])
    def test_boolean_words(self, text: str, expected: bool) -> None:
        assert collect_auth_settings({}, {"K8S_AUTH_VERIFY_SSL": text})["verify_ssl"] is expected

    def test_proxy_headers_from_environment(self) -> None:
        settings = collect_auth_settings({}, {"K8S_AUTH_PROXY_HEADERS_USER_AGENT": "me/1.0"})
        assert settings == {"proxy_headers": {"user_agent": "me/1.0"}}

    def test_impersonation_from_parameters_and_environment(self) -> None:
        assert impersonation_headers({"impersonate_user": "alice", "impersonate_groups": ["g1", "g2"]}, {}) == {
            "Impersonate-User": ["alice"],
            "Impersonate-Group": ["g1", "g2"],
        }
        environ = {"K8S_AUTH_IMPERSONATE_USER": "bob", "K8S_AUTH_IMPERSONATE_GROUPS": "a,,b"}
        assert impersonation_headers({}, environ) == {"Impersonate-User": ["bob"], "Impersonate-Group": ["a", "b"]}
        assert impersonation_headers({}, {}) == {}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"host": "h", "api_key": "t"}, False),
        ({"host": "h", "username": "u", "password": "p"}, False),
        ({"host": "h", "cert_file": "c", "key_file": "k"}, False),
        ({"host": "h"}, True),
        ({"api_key": "t"}, True),
        ({}, True),
    ],
)
def test_when_configuration_is_loaded(settings: dict[str, Any], expected: bool) -> None:
    assert needs_config_loading(settings) is expected


class TestBuildConfiguration:
    def test_host_and_token_need_no_kubeconfig(self) -> None:
        configuration = build_configuration({"host": "https://h:6443", "api_key": "tok", "verify_ssl": False})
        assert configuration.host == "https://h:6443"
        assert bearer(configuration) == "Bearer tok"
        assert configuration.verify_ssl is False

    def test_kubeconfig_given_as_a_dict(self) -> None:
        configuration = build_configuration({"kubeconfig": kubeconfig_dict()})
        assert configuration.host == "https://10.0.0.1:6443"
        assert bearer(configuration) == "Bearer kubeconfig-token"

    def test_kubeconfig_file_and_context_then_overrides(self, tmp_path: Path) -> None:
        config = kubeconfig_dict()
        config["contexts"].append({"name": "other", "context": {"cluster": "c2", "user": "u"}})
        config["clusters"].append({"name": "c2", "cluster": {"server": "https://10.0.0.2:6443"}})
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        configuration = build_configuration({"kubeconfig": str(path), "context": "other", "api_key": "override"})
        assert configuration.host == "https://10.0.0.2:6443"
        assert bearer(configuration) == "Bearer override"

    def test_without_options_in_cluster_comes_first(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        token, cert = tmp_path / "token", tmp_path / "ca.crt"
        token.write_text("sa-token")
        cert.write_text("not used until a request is made")
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
        monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(cert))
        configuration = build_configuration({})
        assert configuration.host == "https://10.96.0.1:443"

    def test_without_options_outside_a_cluster_the_default_kubeconfig(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        path = tmp_path / "config"
        path.write_text(yaml.safe_dump(kubeconfig_dict(server="https://default:6443")))
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
        assert build_configuration({}).host == "https://default:6443"

    def test_missing_kubeconfig_file_is_named(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope"
        with pytest.raises(ClusterError) as raised:
            build_configuration({"kubeconfig": str(missing)})
        assert str(raised.value) == f"kubeconfig file {missing} does not exist"

    @pytest.mark.parametrize(
        ("text", "detail"),
        [
            ("a: [b\n  c: }\n", "while parsing a flow sequence"),
            ("just words\n", "the file is a str, not a mapping"),
            ("", "the file is empty"),
        ],
    )
    def test_garbage_kubeconfig_is_one_line(self, tmp_path: Path, text: str, detail: str) -> None:
        path = tmp_path / "garbage"
        path.write_text(text)
        with pytest.raises(ClusterError) as raised:
            build_configuration({"kubeconfig": str(path)})
        assert str(raised.value) == f"kubeconfig {path} is not valid YAML/kubeconfig: {detail}"
        assert "\n" not in str(raised.value)

    def test_a_kubeconfig_without_the_context_keeps_the_loader_reason(self, tmp_path: Path) -> None:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_dict()))
        with pytest.raises(ClusterError, match=f"cannot load the Kubernetes client configuration from {path}: "):
            build_configuration({"kubeconfig": str(path), "context": "no-such-context"})

    def test_the_process_wide_default_configuration_is_untouched(self) -> None:
        before = kubernetes.client.Configuration.get_default_copy().host
        build_configuration({"kubeconfig": kubeconfig_dict(server="https://elsewhere:1")})
        assert kubernetes.client.Configuration.get_default_copy().host == before


def test_api_client_carries_one_header_per_impersonated_group() -> None:
    client = build_api_client(
        {"host": "https://h", "api_key": "t", "impersonate_user": "alice", "impersonate_groups": ["g1", "g2"]}, {}
    )
    headers = [(str(name), value) for name, value in client.default_headers.items() if str(name).startswith("Imp")]
    assert sorted(headers) == [("Impersonate-Group", "g1"), ("Impersonate-Group", "g2"), ("Impersonate-User", "alice")]


def test_module_utils_report_a_missing_kubernetes_client_instead_of_crashing() -> None:
    assert _auth.HAS_KUBERNETES is True and _auth.KUBERNETES_IMPORT_ERROR is None
