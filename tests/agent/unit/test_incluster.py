"""In-cluster config: client-go's environment and file rules, token re-read per request, short error texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_prefetcher.incluster import ApiResponse, InClusterError, load_incluster_config

ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("tok-1\n")
    (tmp_path / "ca.crt").write_text("not checked until a request is made\n")
    (tmp_path / "namespace").write_text("prefetch\n")
    return tmp_path


def test_loads_the_service_account(sa_dir: Path) -> None:
    config = load_incluster_config(ENV, sa_dir)
    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "prefetch"
    assert config.read_token() == "tok-1"


def test_the_token_is_read_again_each_time(sa_dir: Path) -> None:
    config = load_incluster_config(ENV, sa_dir)
    (sa_dir / "token").write_text("tok-2")
    assert config.read_token() == "tok-2"


def test_ipv6_service_host_is_bracketed(sa_dir: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert load_incluster_config(env, sa_dir).server == "https://[fd00::1]:6443"


@pytest.mark.parametrize("env", [{}, {"KUBERNETES_SERVICE_HOST": "h"}, {"KUBERNETES_SERVICE_PORT": "443"}])
def test_outside_a_cluster_is_client_gos_error(env: dict[str, str], sa_dir: Path) -> None:
    with pytest.raises(InClusterError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"):
        load_incluster_config(env, sa_dir)


@pytest.mark.parametrize("port", ["https", "0", "70000"])
def test_bad_port(port: str, sa_dir: Path) -> None:
    with pytest.raises(InClusterError, match="KUBERNETES_SERVICE_PORT"):
        load_incluster_config({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": port}, sa_dir)


def test_missing_token_names_the_file(sa_dir: Path) -> None:
    (sa_dir / "token").unlink()
    with pytest.raises(InClusterError, match=r"open .*/token: no such file or directory"):
        load_incluster_config(ENV, sa_dir)


def test_missing_ca_is_an_error(sa_dir: Path) -> None:
    (sa_dir / "ca.crt").unlink()
    with pytest.raises(InClusterError, match=r"ca.crt: no such file or directory"):
        load_incluster_config(ENV, sa_dir)


def test_unreadable_ca_content_is_an_error_at_request_time(sa_dir: Path) -> None:
    config = load_incluster_config(ENV, sa_dir)
    with pytest.raises(InClusterError, match="cannot load CA"):
        config.ssl_context()


def test_error_text_prefers_the_status_message() -> None:
    status = b'{"kind":"Status","status":"Failure","message":"nodes \\"n\\" is forbidden","code":403}'
    assert ApiResponse(403, status).error_text() == 'nodes "n" is forbidden'
    assert ApiResponse(502, b"<html>").error_text() == "the server responded with status 502 Bad Gateway"
