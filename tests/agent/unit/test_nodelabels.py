"""Node labels: sanitising (TESTCASES.md §6, every row), label value (§10), the exact PATCH, retries and skips."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from image_prefetcher import nodelabels
from image_prefetcher.incluster import ApiResponse

# TESTCASES.md §6 (origin U and X rows), input -> sanitised label name suffix.
SANITISE_ROWS = [
    ("my-images", "my-images"),
    ("my_images", "my_images"),
    ("my.images", "my.images"),
    ("my images", "my-images"),
    ("-my-images", "my-images"),
    ("my-images-", "my-images"),
    (
        "this-is-a-very-long-instance-name-that-exceeds-sixty-three-characters-and-should-be-truncated",
        "this-is-a-very-long-instance-name-that-exceeds-sixty-three-char",
    ),
    ("my@images!", "my-images"),
    ("", "prefetcher"),
    ("!!!", "prefetcher"),
    ("my images!", "my-images"),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    ("__init__", "init"),
    ("..a..", "a"),
    ("a//b", "a-b"),
    ("\u00fcmlaut", "mlaut"),
    ("\u65e5\u672c", "prefetcher"),
    ("a  b   c", "a-b-c"),
    (
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx!",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ),
    ("My.Images_1", "My.Images_1"),
    ("-_.", "prefetcher"),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b",
    ),
    ("a\tb\nc", "a-b-c"),
]


@pytest.mark.parametrize(("name", "expected"), SANITISE_ROWS)
def test_sanitize_matches_upstream(name: str, expected: str) -> None:
    assert nodelabels.sanitize_label_name(name) == expected
    assert nodelabels.label_key(name) == "image-prefetcher.stackrox.io/" + expected


def test_sanitize_rows_cover_the_table() -> None:
    assert len(SANITISE_ROWS) == 27


@pytest.mark.parametrize(
    ("results", "complete", "expected"),
    [
        ({"image1": True, "image2": True, "image3": True}, True, "succeeded"),
        ({"image1": True, "image2": False, "image3": True}, True, "failed"),
        ({}, True, "succeeded"),  # empty results show success, as upstream
        ({"image1": True}, False, "failed"),  # an interrupted run never leaves `succeeded`
        ({}, False, "failed"),
    ],
)
def test_label_value(results: dict[str, bool], complete: bool, expected: str) -> None:
    assert nodelabels.label_value(results, complete) == expected


def test_patch_body_and_headers_are_upstreams() -> None:
    body = nodelabels.patch_body({"image-prefetcher.stackrox.io/my-images": "succeeded"})
    assert body == b'{"metadata":{"labels":{"image-prefetcher.stackrox.io/my-images":"succeeded"}}}'
    assert nodelabels.patch_headers() == {"Content-Type": "application/strategic-merge-patch+json"}


def test_backoff_is_client_go_default_backoff() -> None:
    assert nodelabels.backoff_delays(lambda: 0.0) == pytest.approx([0.010, 0.050, 0.250])
    assert nodelabels.backoff_delays(lambda: 1.0) == pytest.approx([0.011, 0.055, 0.275])


class FakeConfig:
    """Stands in for InClusterConfig: request() answers from a script instead of the network."""

    server = "https://10.0.0.1:443"

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, bytes | None, dict[str, str], float]] = []

    def request(self, method: str, path: str, body: bytes | None, headers: Any, timeout: float) -> ApiResponse:
        self.calls.append((method, path, body, dict(headers), timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, ApiResponse)
        return answer



def _messages(records: list[logging.LogRecord]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r.levelname, r.getMessage(), getattr(r, "attrs", {})) for r in records]


def _run(
    results: dict[str, bool], config: FakeConfig, complete: bool = True, env: dict[str, str] | None = None
) -> nodelabels.LabelOutcome:
    environ = {"NODE_NAME": "node-1", "INSTANCE_NAME": "my images!"} if env is None else env
    return asyncio.run(
        nodelabels.update_node_labels(results, complete, environ=environ, load_config=lambda: config, deadline_s=5)
    )


def test_success_sends_one_exact_patch(records: list[logging.LogRecord]) -> None:
    config = FakeConfig([ApiResponse(200, b"{}")])
    assert _run({"a": True}, config) == nodelabels.LabelOutcome(True)
    assert len(config.calls) == 1
    method, path, body, headers, _ = config.calls[0]
    assert (method, path) == ("PATCH", "/api/v1/nodes/node-1")
    assert body == b'{"metadata":{"labels":{"image-prefetcher.stackrox.io/my-images":"succeeded"}}}'
    assert headers["Content-Type"] == "application/strategic-merge-patch+json"
    logged = _messages(records)
    assert (
        "INFO",
        "Successfully updated node labels",
        {"node": "node-1", "labels": "map[image-prefetcher.stackrox.io/my-images:succeeded]"},
    ) in logged


def test_not_found_is_tried_four_times_then_logged(records: list[logging.LogRecord]) -> None:
    status = b'{"kind":"Status","message":"nodes \\"node-1\\" not found","code":404}'
    config = FakeConfig([ApiResponse(404, status)])
    outcome = _run({"a": True}, config)
    problem = 'failed to patch node node-1: 404 Not Found: nodes "node-1" not found'
    assert outcome == nodelabels.LabelOutcome(False, problem)
    assert len(config.calls) == 4
    errors = [m for m in _messages(records) if m[0] == "ERROR"]
    assert errors == [
        (
            "ERROR",
            "failed to update node labels",
            {"error": 'failed to update node labels: failed to patch node node-1: nodes "node-1" not found'},
        )
    ]


def test_transient_errors_are_retried_until_success() -> None:
    config = FakeConfig([OSError("connection refused"), ApiResponse(500, b""), ApiResponse(200, b"{}")])
    assert _run({"a": False}, config).written is True
    calls = config.calls
    assert len(calls) == 3
    assert calls[-1][2] == b'{"metadata":{"labels":{"image-prefetcher.stackrox.io/my-images":"failed"}}}'


def test_incomplete_run_writes_failed() -> None:
    config = FakeConfig([ApiResponse(200, b"{}")])
    assert _run({"a": True}, config, complete=False).written is True
    body = config.calls[0][2]
    assert body is not None and body.endswith(b':"failed"}}}')


def test_the_retries_stop_at_the_label_deadline() -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    config = FakeConfig([ApiResponse(503, b"")])
    with pytest.raises(nodelabels.LabelError):
        asyncio.run(nodelabels.patch_node_labels(config, "n", {"k": "v"}, deadline_s=0.0, sleep=fake_sleep))
    assert config.calls == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INSTANCE_NAME": "x"}, "NODE_NAME environment variable not set, skipping node labeling"),
        ({"NODE_NAME": "", "INSTANCE_NAME": "x"}, "NODE_NAME environment variable not set, skipping node labeling"),
        ({"NODE_NAME": "n"}, "INSTANCE_NAME environment variable not set, skipping node labeling"),
        ({}, "NODE_NAME environment variable not set, skipping node labeling"),
    ],
)
def test_skips_are_logged_in_upstreams_order(
    env: dict[str, str], message: str, records: list[logging.LogRecord]
) -> None:
    config = FakeConfig([ApiResponse(200, b"{}")])
    assert _run({}, config, env=env) == nodelabels.LabelOutcome(False)  # a skip is no failure: no warning
    assert config.calls == []
    assert ("INFO", message, {}) in _messages(records)


def test_no_incluster_config_is_a_warning(records: list[logging.LogRecord]) -> None:
    environ = {"NODE_NAME": "n", "INSTANCE_NAME": "x"}
    outcome = asyncio.run(nodelabels.update_node_labels({}, environ=environ))
    assert not outcome.written and outcome.problem is not None
    assert outcome.problem.startswith("failed to create Kubernetes client, node n not labelled: unable to load")
    warnings = [m for m in _messages(records) if m[0] == "WARNING"]
    assert warnings and warnings[0][1] == "failed to create Kubernetes client, skipping node labeling"
    assert "KUBERNETES_SERVICE_HOST" in warnings[0][2]["error"]


FORBIDDEN = (
    b'{"kind":"Status","status":"Failure","reason":"Forbidden","code":403,"message":"nodes \\"node-1\\" is '
    b'forbidden: User \\"system:serviceaccount:ns:sa\\" cannot patch resource \\"nodes\\" in API group '
    b'\\"\\" at the cluster scope"}'
)


@pytest.mark.parametrize(("status", "body"), [(403, FORBIDDEN), (401, b'{"message":"Unauthorized"}')])
def test_a_denial_is_not_retried_and_says_its_status(
    status: int, body: bytes, records: list[logging.LogRecord]
) -> None:
    config = FakeConfig([ApiResponse(status, body), ApiResponse(200, b"{}")])
    outcome = _run({"a": True}, config)
    assert len(config.calls) == 1, "the API server's denial is final: no second PATCH"
    assert not outcome.written and outcome.problem is not None
    said = "403 Forbidden" if status == 403 else "401 Unauthorized"
    assert outcome.problem.startswith(f"failed to patch node node-1: {said}: ")
    logged = [m[2]["error"] for m in _messages(records) if m[0] == "ERROR"]
    assert len(logged) == 1 and said not in logged[0]  # the log keeps upstream's text: the Status message alone


def test_the_denial_is_the_servers_message() -> None:
    config = FakeConfig([ApiResponse(403, FORBIDDEN)])
    assert _run({"a": True}, config).problem == (
        'failed to patch node node-1: 403 Forbidden: nodes "node-1" is forbidden: User "system:serviceaccount:ns:sa" '
        'cannot patch resource "nodes" in API group "" at the cluster scope'
    )


def test_a_status_without_a_message_is_said_once() -> None:
    config = FakeConfig([ApiResponse(403, b"")])
    assert _run({"a": True}, config).problem == (
        "failed to patch node node-1: the server responded with status 403 Forbidden"
    )


def test_no_answer_keeps_the_transport_error() -> None:
    config = FakeConfig([OSError("connection refused")])
    problem = _run({"a": True}, config).problem
    assert problem == "failed to patch node node-1: PATCH https://10.0.0.1:443/api/v1/nodes/node-1: connection refused"
    assert len(config.calls) == 4
