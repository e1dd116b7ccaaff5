"""Credential provider plugins end to end: a real `fetch` pulls from a registry that requires a login, through the
credentials of a fake plugin (tests/agent/integration/fake_plugin/registry-auth), and the plugin cache is honoured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.agentrun import TEST_REGISTRY_NAME as REGISTRY_NAME
from infra.agentrun import image_ref as ref
from infra.images import build_test_image, push_image
from infra.registry import Registry
from infra.runtime import RuntimeNode, make_node

pytestmark = pytest.mark.timeout(300)

PLUGIN_DIR = Path(__file__).resolve().parent / "fake_plugin"
PRIVATE = [ref("private/app"), ref("private/two"), ref("private/three")]


@pytest.fixture(scope="module")
def private_registry(auth_registry: Registry, credentials: tuple[str, str]) -> Registry:
    """The session's htpasswd registry (it holds private/app:v1) plus two more private images."""
    for name in ("two", "three"):
        image = build_test_image(f"private/{name}", "v1", size_mib=0.5, layers=1, seed=f"private-{name}")
        push_image(auth_registry.host, image, auth=credentials)
    return auth_registry


@pytest.fixture
def auth_node(testdir: Path, private_registry: Registry, runtime: str) -> Iterator[RuntimeNode]:
    with make_node(runtime, testdir, registries={REGISTRY_NAME: private_registry.host}) as node:
        yield node


def write_config(testdir: Path, credentials: tuple[str, str], **env: str) -> tuple[Path, Path]:
    """A CredentialProviderConfig (YAML) for the fake plugin; returns (config path, the plugin's exec log)."""
    exec_log = testdir / "plugin-execs.log"
    environment = {
        "EXEC_LOG": str(exec_log),
        "AUTH_KEY": REGISTRY_NAME,
        "PLUGIN_USERNAME": credentials[0],
        "PLUGIN_PASSWORD": credentials[1],
        **env,
    }
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [
            {
                "name": "registry-auth",
                "matchImages": ["*.test:5000"],
                "defaultCacheDuration": "1m",
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "env": [{"name": k, "value": v} for k, v in environment.items()],
            }
        ],
    }
    path = testdir / "credential-provider.yaml"
    # JSON is YAML: also proves the JSON form parses; the unit tests cover block-style YAML.
    path.write_text(json.dumps(config, indent=2))
    return path, exec_log


def plugin_flags(config: Path) -> list[str]:
    return [f"--image-credential-provider-config={config}", f"--image-credential-provider-bin-dir={PLUGIN_DIR}"]


def execs(exec_log: Path) -> list[dict[str, Any]]:
    if not exec_log.exists():
        return []
    return [json.loads(line) for line in exec_log.read_text().splitlines()]


def test_pulls_succeed_only_through_the_plugin_with_one_exec_per_registry(
    auth_node: RuntimeNode, testdir: Path, run_agent: Any, credentials: tuple[str, str]
) -> None:
    config, exec_log = write_config(testdir, credentials)
    result = run_agent(auth_node.socket, PRIVATE, *plugin_flags(config), "--overall-timeout=120s", timeout_s=150)
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["ok"] == 3 and result.summary["failed"] == 0, result.describe()
    assert all(auth_node.image_present(image) for image in PRIVATE)
    requests = execs(exec_log)
    assert len(requests) == 1, requests  # cacheKeyType Registry: one exec for the three images
    assert requests[0]["kind"] == "CredentialProviderRequest" and requests[0]["image"] in PRIVATE
    assert "initialized credential provider plugins" in result.stderr
    assert credentials[1] not in result.output


def test_image_cache_key_type_execs_once_per_image(
    auth_node: RuntimeNode, testdir: Path, run_agent: Any, credentials: tuple[str, str]
) -> None:
    config, exec_log = write_config(testdir, credentials, CACHE_KEY_TYPE="Image")
    result = run_agent(auth_node.socket, PRIVATE, *plugin_flags(config), "--overall-timeout=120s", timeout_s=150)
    assert result.rc == 0 and result.summary is not None and result.summary["ok"] == 3, result.describe()
    assert sorted(r["image"] for r in execs(exec_log)) == sorted(PRIVATE)


def test_without_the_plugin_the_registry_refuses(
    auth_node: RuntimeNode, testdir: Path, run_agent: Any, credentials: tuple[str, str]
) -> None:
    """The plugin fails: a WARN, the image is pulled anonymously and refused; the run still ends normally (exit 0)."""
    config, exec_log = write_config(testdir, credentials, FAIL_WITH="metadata server unreachable")
    result = run_agent(
        auth_node.socket,
        PRIVATE[:1],
        *plugin_flags(config),
        "--overall-timeout=6s",
        "--initial-pull-attempt-delay=500ms",
        timeout_s=60,
    )
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["failed"] == 1, result.describe()
    assert "unauthorized" in result.summary["errors"][PRIVATE[0]], result.describe()
    warn = [line for line in result.stderr.splitlines() if "credential provider plugin failed" in line]
    assert warn and "level=WARN" in warn[0] and "metadata server unreachable" in warn[0]
    assert len(execs(exec_log)) == 1
    assert not auth_node.image_present(PRIVATE[0])


def test_a_missing_plugin_binary_is_fatal_at_start(
    auth_node: RuntimeNode, testdir: Path, run_agent: Any, credentials: tuple[str, str]
) -> None:
    config, _ = write_config(testdir, credentials)
    empty = testdir / "empty-bin"
    empty.mkdir()
    result = run_agent(
        auth_node.socket,
        PRIVATE[:1],
        f"--image-credential-provider-config={config}",
        f"--image-credential-provider-bin-dir={empty}",
        timeout_s=60,
    )
    assert result.rc == 1, result.describe()
    assert (
        f"Error: failed to initialize credential provider plugins: plugin binary registry-auth not found in {empty}"
        in result.stderr
    )
    summary = result.summary  # DESIGN.md: complete:false, zero counts and the printed error as `fatal`
    assert summary is not None and summary["complete"] is False, result.describe()
    assert (summary["ok"], summary["failed"], summary["attempts"]) == (0, 0, 0), result.describe()
    assert "Error: " + summary["fatal"] in result.stderr, result.describe()
    assert credentials[1] not in json.dumps(summary)


def test_plugin_credentials_are_tried_before_the_pull_secrets(
    auth_node: RuntimeNode, testdir: Path, run_agent: Any, credentials: tuple[str, str]
) -> None:
    """A pull secret with a wrong password for the same registry: the plugin's (right) login is tried first."""
    config, exec_log = write_config(testdir, credentials)
    docker_config = testdir / "config.json"
    wrong = {"auths": {REGISTRY_NAME: {"username": credentials[0], "password": "wrong-password"}}}
    docker_config.write_text(json.dumps(wrong))
    result = run_agent(
        auth_node.socket,
        PRIVATE[:1],
        *plugin_flags(config),
        f"--docker-config={docker_config}",
        "--overall-timeout=60s",
        timeout_s=90,
    )
    assert result.rc == 0, result.describe()
    assert result.summary is not None and result.summary["ok"] == 1, result.describe()
    assert result.summary["attempts"] == 1, result.describe()  # the first credential (the plugin's) worked
    assert len(execs(exec_log)) == 1
    assert "authNum=0" in result.stderr and "authNum=1" not in result.stderr
