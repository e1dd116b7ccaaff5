"""aggregate-metrics: Go encoding/json of Results (TESTCASES.md §12), the store, HTTP paths, listen errors."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest

from image_prefetcher import aggregator
from image_prefetcher._proto import metrics_pb2
from image_prefetcher.errors import CommandError

TWO_RESULTS_JSON = (
    '[{"attempt_id":"7b1f0c2e-0000-4000-8000-000000000001","started_at":1700000000,"image":"quay.io/foo/bar:1",'
    '"duration_ms":1234,"node":"my-images-abcde","size_bytes":5678},'
    '{"attempt_id":"7b1f0c2e-0000-4000-8000-000000000002","started_at":1700000001,"image":"nginx",'
    '"error":"rpc error: code = Unknown desc = failed \\u003cto\\u003e pull \\u0026 \\"x\\"","node":"my-images-abcde"}]'
)


def _two_results() -> list[metrics_pb2.Result]:
    return [
        metrics_pb2.Result(
            attempt_id="7b1f0c2e-0000-4000-8000-000000000001",
            started_at=1700000000,
            image="quay.io/foo/bar:1",
            duration_ms=1234,
            node="my-images-abcde",
            size_bytes=5678,
        ),
        metrics_pb2.Result(
            attempt_id="7b1f0c2e-0000-4000-8000-000000000002",
            started_at=1700000001,
            image="nginx",
            error='rpc error: code = Unknown desc = failed <to> pull & "x"',
            node="my-images-abcde",
        ),
    ]


def test_json_of_two_results_is_byte_identical_to_go() -> None:
    assert aggregator.results_json(_two_results()) == TWO_RESULTS_JSON.encode()


def test_json_of_nothing_is_two_bytes() -> None:
    assert aggregator.results_json([]) == b"[]"


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("a\nb\tc\rd", '"a\\nb\\tc\\rd"'),
        ("\x01\x1f", '"\\u0001\\u001f"'),
        ("\u00fc\u65e5", '"\u00fc\u65e5"'),  # non-ASCII stays UTF-8, as Go
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_string_escaping_follows_go(text: str, encoded: str) -> None:
    assert aggregator.go_json_string(text) == encoded


def test_zero_fields_are_omitted_and_numbers_stay_numbers() -> None:
    big = metrics_pb2.Result(attempt_id="x", started_at=-5, size_bytes=2**64 - 1)
    assert aggregator.result_json(big) == f'{{"attempt_id":"x","started_at":-5,"size_bytes":{2**64 - 1}}}'
    assert aggregator.result_json(metrics_pb2.Result()) == "{}"


def test_duplicates_replace_and_are_reported() -> None:
    store = aggregator.ResultStore()
    first, second = _two_results()
    assert store.add(first) is False
    assert store.add(second) is False
    replacement = metrics_pb2.Result(attempt_id=first.attempt_id, image="again")
    assert store.add(replacement) is True
    assert sorted(r.image for r in store.snapshot()) == ["again", "nginx"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"ignored" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _with_servers(check: Callable[[int, int], Awaitable[None]]) -> int:
    """Run both servers on free ports, call `check(grpc_port, http_port)`, stop them; returns serve()'s code."""

    async def scenario() -> int:
        grpc_port, http_port = _free_port(), _free_port()
        stop, ready = asyncio.Event(), asyncio.Event()
        server = asyncio.ensure_future(aggregator.serve(grpc_port, http_port, stop, ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await check(grpc_port, http_port)
        finally:
            stop.set()
            code = await asyncio.wait_for(server, 15)
        return code

    return asyncio.run(scenario())



def test_submit_then_http_paths(records: list[logging.LogRecord]) -> None:
    import grpc

    from image_prefetcher._proto import metrics_pb2_grpc

    seen: dict[str, tuple[int, dict[str, str], bytes]] = {}

    async def check(grpc_port: int, http_port: int) -> None:
        seen["empty"] = await asyncio.to_thread(_http, http_port, "GET", "/metrics")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = metrics_pb2_grpc.MetricsStub(channel)
            await stub.Submit(iter(_two_results()), timeout=10)
            await stub.Submit(iter(_two_results()[:1]), timeout=10)  # a duplicate attempt id
        for name, method, path in [
            ("get", "GET", "/metrics?x=1"),
            ("post", "POST", "/metrics"),
            ("head", "HEAD", "/metrics"),
            ("health", "GET", "/healthz"),
            ("slash", "GET", "/metrics/"),
            ("root", "GET", "/"),
        ]:
            seen[name] = await asyncio.to_thread(_http, http_port, method, path)

    assert _with_servers(check) == 0
    assert seen["empty"][0] == 200 and seen["empty"][2] == b"[]"
    status, headers, body = seen["get"]
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert sorted(body.decode()[1:-1].split("},{")) == sorted(TWO_RESULTS_JSON[1:-1].split("},{"))
    assert seen["post"][2] == body
    assert seen["head"][0] == 200 and seen["head"][2] == b""
    assert seen["health"][:1] == (200,) and seen["health"][2] == b"ok"
    for name in ("slash", "root"):
        assert seen[name][0] == 404 and seen[name][2] == b"404 page not found\n"
    assert any(r.getMessage() == "duplicate metric submitted" and r.levelname == "INFO" for r in records)


def test_a_port_in_use_names_the_port_and_the_cause() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for grpc_port, http_port in ((port, _free_port()), (_free_port(), port)):
            with pytest.raises(CommandError) as caught:
                asyncio.run(aggregator.serve(grpc_port, http_port, asyncio.Event()))
            assert str(caught.value) == f"failed to listen on :{port}: address already in use"
