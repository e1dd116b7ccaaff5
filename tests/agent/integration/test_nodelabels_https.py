"""Node labelling against a local HTTPS API stub: real TLS with a CA made by `openssl`, real retries, no token leak."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from image_prefetcher.incluster import load_incluster_config
from image_prefetcher.logs import TextFormatter
from image_prefetcher.nodelabels import LabelOutcome, update_node_labels

pytestmark = pytest.mark.timeout(120)

TOKEN = "eyJhbGciOi-sa-token-must-never-be-logged"
KEY = "image-prefetcher.stackrox.io/my-images"


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), made with the openssl command."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class FakeApiServer:
    """PATCH /api/v1/nodes/<name>: merges metadata.labels into the stored node, or answers scripted failures."""

    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)  # status codes answered first, one per request
    requests: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        if self.failures:
            code = self.failures.pop(0)
            return code, {"kind": "Status", "status": "Failure", "message": f"scripted failure {code}", "code": code}
        name = path.rsplit("/", 1)[-1]
        if method != "PATCH" or not path.startswith("/api/v1/nodes/") or name not in self.nodes:
            return 404, {"kind": "Status", "message": f'nodes "{name}" not found', "code": 404}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"kind": "Status", "message": "Unauthorized", "code": 401}
        if headers.get("Content-Type") != "application/strategic-merge-patch+json":
            return 415, {"kind": "Status", "message": "unsupported media type", "code": 415}
        self.nodes[name].update(json.loads(body)["metadata"]["labels"])
        return 200, {"kind": "Node", "metadata": {"name": name, "labels": self.nodes[name]}}

    token: str = TOKEN


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path, "server")


@pytest.fixture
def api(tls: tuple[Path, Path]) -> Iterator[tuple[FakeApiServer, int]]:
    state = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code, answer = state.handle("PATCH", self.path, dict(self.headers), body)
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls[0]), str(tls[1]))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def sa_dir(tmp_path: Path, tls: tuple[Path, Path]) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(TOKEN)
    (directory / "ca.crt").write_bytes(tls[0].read_bytes())
    (directory / "namespace").write_text("prefetch")
    return directory


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every agent log record, formatted as the agent prints it, at DEBUG."""
    lines: list[str] = []
    formatter = TextFormatter()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    logger = logging.getLogger("image_prefetcher")
    handler, old = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def labelled(
    port: int, sa_dir: Path, results: dict[str, bool], complete: bool = True, node: str = "node-1"
) -> LabelOutcome:
    env = {
        "NODE_NAME": node,
        "INSTANCE_NAME": "my images!",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(port),
    }
    return asyncio.run(
        update_node_labels(results, complete, environ=env, load_config=lambda: load_incluster_config(env, sa_dir))
    )


def label(port: int, sa_dir: Path, results: dict[str, bool], complete: bool = True, node: str = "node-1") -> bool:
    return labelled(port, sa_dir, results, complete, node).written


def test_success_keeps_other_labels(api: tuple[FakeApiServer, int], sa_dir: Path, log_lines: list[str]) -> None:
    state, port = api
    state.nodes["node-1"] = {"kubernetes.io/hostname": "my-images", "other-label": "value", KEY: "failed"}
    assert label(port, sa_dir, {"a": True, "b": True}) is True
    assert state.nodes["node-1"] == {"kubernetes.io/hostname": "my-images", "other-label": "value", KEY: "succeeded"}
    (request,) = state.requests
    assert request["path"] == "/api/v1/nodes/node-1"
    assert request["body"] == b'{"metadata":{"labels":{"image-prefetcher.stackrox.io/my-images":"succeeded"}}}'
    assert any("Successfully updated node labels" in line for line in log_lines)
    assert not any(TOKEN in line for line in log_lines)


def test_failed_and_incomplete_runs_write_failed(api: tuple[FakeApiServer, int], sa_dir: Path) -> None:
    state, port = api
    state.nodes["node-1"] = {}
    assert label(port, sa_dir, {"a": True, "b": False}) is True
    assert state.nodes["node-1"][KEY] == "failed"
    assert label(port, sa_dir, {"a": True}) is True
    assert state.nodes["node-1"][KEY] == "succeeded"
    assert label(port, sa_dir, {"a": True}, complete=False) is True  # no stale `succeeded` after an interruption
    assert state.nodes["node-1"][KEY] == "failed"


def test_missing_node_is_tried_four_times(api: tuple[FakeApiServer, int], sa_dir: Path, log_lines: list[str]) -> None:
    state, port = api
    assert label(port, sa_dir, {"a": True}, node="ghost") is False
    assert len(state.requests) == 4
    errors = [line for line in log_lines if "level=ERROR" in line]
    assert len(errors) == 1
    assert 'failed to update node labels: failed to patch node ghost: nodes \\"ghost\\" not found' in errors[0]
    assert not any(TOKEN in line for line in log_lines)


def test_forbidden_is_not_retried_and_the_label_stays(
    api: tuple[FakeApiServer, int], sa_dir: Path, log_lines: list[str]
) -> None:
    state, port = api
    state.nodes["node-1"] = {KEY: "succeeded"}
    state.failures = [403]  # a retry would succeed: there must be none
    outcome = labelled(port, sa_dir, {"a": False})
    assert outcome == LabelOutcome(False, "failed to patch node node-1: 403 Forbidden: scripted failure 403")
    assert len(state.requests) == 1 and state.nodes["node-1"] == {KEY: "succeeded"}
    assert any("scripted failure 403" in line for line in log_lines if "level=ERROR" in line)
    assert not any(TOKEN in line for line in log_lines)
    assert TOKEN not in (outcome.problem or "")


def test_transient_failures_then_success(api: tuple[FakeApiServer, int], sa_dir: Path) -> None:
    state, port = api
    state.nodes["node-1"] = {}
    state.failures = [500, 503]
    assert label(port, sa_dir, {}) is True
    assert len(state.requests) == 3 and state.nodes["node-1"][KEY] == "succeeded"


def test_token_is_read_again_for_every_request(api: tuple[FakeApiServer, int], sa_dir: Path) -> None:
    state, port = api
    state.nodes["node-1"] = {}
    assert label(port, sa_dir, {}) is True
    state.token = "rotated-token"
    (sa_dir / "token").write_text("rotated-token")
    assert label(port, sa_dir, {"a": False}) is True
    assert [r["headers"]["Authorization"] for r in state.requests] == [f"Bearer {TOKEN}", "Bearer rotated-token"]


def test_a_server_the_ca_does_not_vouch_for_gets_nothing(
    api: tuple[FakeApiServer, int], sa_dir: Path, tmp_path: Path, log_lines: list[str]
) -> None:
    state, port = api
    state.nodes["node-1"] = {}
    other_ca, _ = make_cert(tmp_path, "other")
    (sa_dir / "ca.crt").write_bytes(other_ca.read_bytes())
    assert label(port, sa_dir, {}) is False
    assert state.requests == []  # the TLS handshake failed: the token was never sent
    assert any("CERTIFICATE_VERIFY_FAILED" in line for line in log_lines if "level=ERROR" in line)
