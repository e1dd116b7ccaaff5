"""Self-tests of the shared test infrastructure (tests/infra): if these fail, every other integration test lies."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest

from infra._util import wait_until
from infra.containerd import ContainerdNode
from infra.faultproxy import FaultProxy, ProxyClient, Rule
from infra.images import TestImage, build_test_image, push_test_image
from infra.registry import Registry
from infra.runtime import make_node

pytestmark = pytest.mark.timeout(120)


def http_get(host: str, target: str, headers: dict[str, str] | None = None, timeout_s: float = 10,
             method: str = "GET") -> tuple[int, bytes]:
    hostname, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout_s)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def blob_target(image: TestImage, index: int = 0) -> str:
    return f"/v2/{image.repo}/blobs/{image.layers[index].digest}"


def test_same_seed_gives_same_digests_and_layers_are_incompressible() -> None:
    first = build_test_image("a/b", "v1", size_mib=0.5, layers=2, seed="s")
    again = build_test_image("a/b", "v1", size_mib=0.5, layers=2, seed="s")
    other = build_test_image("a/b", "v1", size_mib=0.5, layers=2, seed="t")
    assert first.digest == again.digest
    assert first.digest != other.digest
    assert len(first.layers) == 2
    assert first.size > 0.5 * (1 << 20)  # random data does not shrink under gzip


def test_registry_serves_pushed_image_through_proxy_with_range_and_query(
        registry: Registry, images: dict[str, TestImage], proxy: FaultProxy) -> None:
    image = images["alpha"]
    status, body = http_get(proxy.host, blob_target(image) + "?ns=registry.test%3A5000")
    assert status == 200 and len(body) == len(image.layers[0].data)
    status, body = http_get(proxy.host, blob_target(image), {"Range": "bytes=100-199"})
    assert status == 206 and body == image.layers[0].data[100:200]
    record = proxy.requests[0]
    assert (record.method, record.query, record.status) == ("GET", "ns=registry.test%3A5000", 200)
    assert proxy.requests[1].range == "bytes=100-199"


def test_status_rule_applies_times_then_passes(images: dict[str, TestImage], proxy: FaultProxy) -> None:
    proxy.add_rule(Rule(path=r"/manifests/", action="status", status=500, times=2))
    target = f"/v2/{images['beta'].repo}/manifests/v1"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    assert [http_get(proxy.host, target, accept)[0] for _ in range(3)] == [500, 500, 200]
    assert [r.action for r in proxy.requests] == ["status", "status", "pass"]


def test_close_mid_body_truncates_and_close_no_body_sends_headers_only(
        images: dict[str, TestImage], proxy: FaultProxy) -> None:
    proxy.add_rule(Rule(path=r"/blobs/", action="close_mid_body", after_bytes=1000, times=1))
    proxy.add_rule(Rule(path=r"/blobs/", action="close_no_body", times=1))
    for expected_partial in (1000, 0):
        with pytest.raises(http.client.IncompleteRead) as caught:
            http_get(proxy.host, blob_target(images["alpha"]))
        assert len(caught.value.partial) == expected_partial
    assert http_get(proxy.host, blob_target(images["alpha"]))[0] == 200


@pytest.mark.parametrize("action", ["stall_accept", "stall_headers", "stall_mid_body"])
def test_stalls_hold_until_released_or_stopped(registry: Registry, images: dict[str, TestImage], action: str) -> None:
    rule = Rule(action=action) if action == "stall_accept" else Rule(path="/blobs/", action=action)
    with FaultProxy(upstream=registry.host) as px:
        px.add_rule(rule)
        with pytest.raises(TimeoutError):
            http_get(px.host, blob_target(images["alpha"]), timeout_s=0.5)
        px.release_stalls()
        outcome: list[BaseException] = []
        hostname, _, port = px.host.rpartition(":")
        client = socket.create_connection((hostname, int(port)), timeout=30)
        client.sendall(f"GET {blob_target(images['alpha'])} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        def read_all() -> None:
            try:
                while client.recv(65536):
                    pass
            except OSError as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read_all)
        reader.start()
        # Once the proxy has taken the request (and, mid body, sent its part) the stall holds it until stop().
        held = (lambda r: r.bytes > 0) if action == "stall_mid_body" else (lambda r: True)
        assert wait_until(lambda: len(px.requests) == 2 and held(px.requests[1]), 30), px.requests
        assert reader.is_alive(), "the stall must hold the connection"
        started = time.monotonic()
        px.stop()
        reader.join(10)
        assert not reader.is_alive() and time.monotonic() - started < 10
        client.close()


def test_then_answers_401_twice_then_stalls(images: dict[str, TestImage], proxy: FaultProxy) -> None:
    proxy.add_rule(Rule(path=r"/manifests/", action="status", status=401, times=2, then="stall_headers"))
    target = f"/v2/{images['beta'].repo}/manifests/v1"
    assert [http_get(proxy.host, target)[0] for _ in range(2)] == [401, 401]
    with pytest.raises(TimeoutError):  # the stall never answers: the client's own timeout ends it
        http_get(proxy.host, target, timeout_s=0.5)
    assert [r.action for r in proxy.requests] == ["status", "status", "stall_headers"]
    assert http_get(proxy.host, f"/v2/{images['beta'].repo}/blobs/{images['beta'].layers[0].digest}")[0] == 200
    with pytest.raises(ValueError, match="then needs times"):
        Rule(path="/x", action="status", then="stall_headers")


def test_hold_waits_for_release_then_forwards(images: dict[str, TestImage], proxy: FaultProxy) -> None:
    proxy.add_rule(Rule(path=r"/manifests/", action="hold", times=1))
    target = f"/v2/{images['alpha'].repo}/manifests/v1"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    answers: list[int] = []
    client = threading.Thread(target=lambda: answers.append(http_get(proxy.host, target, accept, timeout_s=60)[0]))
    client.start()
    assert wait_until(lambda: [r.action for r in proxy.requests] == ["hold"], 30), proxy.requests
    assert answers == [] and proxy.requests[0].status is None  # held, unanswered
    proxy.release_stalls()
    client.join(30)
    assert answers == [200] and proxy.requests[0].status == 200


def test_bandwidth_limit_and_slow_rule(images: dict[str, TestImage], proxy: FaultProxy) -> None:
    layer = images["gamma"].layers[0]
    proxy.add_rule(Rule(path="/blobs/", action="slow", bandwidth_bps=len(layer.data) * 2, times=1))
    started = time.monotonic()
    status, body = http_get(proxy.host, blob_target(images["gamma"]))
    assert status == 200 and body == layer.data
    assert time.monotonic() - started >= 0.4  # half a second at the configured rate, minus the initial burst
    hostname, _, port = proxy.host.rpartition(":")
    conn = http.client.HTTPConnection(hostname, int(port), timeout=10)
    try:
        conn.request("GET", blob_target(images["gamma"]))
        assert conn.getresponse().read() == layer.data
        proxy.configure(bandwidth_bps=len(layer.data) * 4, latency_s=0.2)  # applies to this kept-alive connection
        started = time.monotonic()
        conn.request("GET", blob_target(images["gamma"]))
        assert conn.getresponse().read() == layer.data
        assert time.monotonic() - started >= 0.2 + 0.2
    finally:
        conn.close()
    assert len({r.conn for r in proxy.requests[1:]}) == 1


def test_control_endpoint_sets_rules_and_reads_records(images: dict[str, TestImage], proxy: FaultProxy) -> None:
    client = ProxyClient(proxy.control_url)
    added = client.add_rule(Rule(path="/manifests/", action="status", status=404, times=1))
    assert added["id"] > 0 and client.rules()[0]["action"] == "status"
    assert http_get(proxy.host, f"/v2/{images['alpha'].repo}/manifests/v1")[0] == 404
    assert [r["status"] for r in client.requests()] == [404]
    client.clear_rules()
    client.clear_requests()
    assert client.rules() == [] and client.requests() == []
    with pytest.raises(Exception, match="400"):
        client.add_rule.__self__._call("POST", "rules", {"action": "explode"})  # type: ignore[attr-defined]


def test_registry_with_htpasswd_requires_the_password(workdir: Path) -> None:
    with Registry(workdir, htpasswd={"u": "pw"}, name="selftest-auth") as reg:
        with pytest.raises(RuntimeError, match="401"):
            push_test_image(reg.host, "x/y", "v1", size_mib=0.1, layers=1, seed="x", auth=("u", "wrong"))
        digest = push_test_image(reg.host, "x/y", "v1", size_mib=0.1, layers=1, seed="x", auth=("u", "pw"),
                                 chunked=True, oci=True)
        oci_accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        status, _ = http_get(reg.host, f"/v2/x/y/manifests/{digest}", {**reg.auth_header(), **oci_accept},
                             method="HEAD")
        assert status == 200
        assert http_get(reg.host, f"/v2/x/y/manifests/{digest}", oci_accept, method="HEAD")[0] == 401
        assert (reg.workdir / "htpasswd").read_text().startswith("u:$2")  # bcrypt, never the plain password


def test_runtime_node_pulls_through_mapping_survives_restart(
        testdir: Path, images: dict[str, TestImage], proxy: FaultProxy, registry: Registry, runtime: str) -> None:
    ref = "registry.test:5000/it/alpha:v1"
    with make_node(runtime, testdir) as node:
        assert node.socket.is_socket() and node.address.startswith("unix:///")
        with node.cri() as cri, pytest.raises(grpc.RpcError):
            cri.pull_image(ref, timeout_s=20)  # unmapped made-up name: no such host (CRI-O: a closed port)
        node.set_registry("registry.test:5000", proxy.host)
        with node.cri() as cri:
            cri.pull_image(ref, timeout_s=60)
        assert node.image_present(ref)
        size = node.image_size(ref)
        assert size is not None and size > 0
        if isinstance(node, ContainerdNode):  # CRI-O reports its storage's (unpacked) size
            assert size == images["alpha"].size
            assert ref in node.ctr("images", "ls", "-q").stdout
        assert any(r.path.endswith(images["alpha"].layers[0].digest) for r in proxy.requests)
        pid = node.pid
        node.restart()
        assert node.pid != pid and node.image_present(ref)
        node.remove_image(ref)
        assert not node.image_present(ref)
        node.remove_image(ref)
        assert not node.image_present(ref)
    assert node.pid is None


class _ChunkedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    chunks = [b"a" * 70_000, b"b" * 5, b"c" * 123_456]

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in self.chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


def test_chunked_bodies_and_keep_alive_pass_through() -> None:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedHandler)
    serving = threading.Thread(target=upstream.serve_forever, daemon=True)
    serving.start()
    try:
        with FaultProxy(upstream=f"127.0.0.1:{upstream.server_address[1]}") as px:
            hostname, _, port = px.host.rpartition(":")
            conn = http.client.HTTPConnection(hostname, int(port), timeout=10)
            for _ in range(2):  # the same client connection twice: keep-alive through the proxy
                conn.request("GET", "/chunked")
                assert conn.getresponse().read() == b"".join(_ChunkedHandler.chunks)
            conn.close()
            assert [r.conn for r in px.requests] == [px.requests[0].conn] * 2
            px.add_rule(Rule(path="/chunked", action="close_mid_body", after_bytes=80_000, times=1))
            with pytest.raises(http.client.IncompleteRead):
                http_get(px.host, "/chunked")
    finally:
        upstream.shutdown()
        upstream.server_close()
