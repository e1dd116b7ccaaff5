# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster wrapper: error translation into one-line typed errors, discovery, paths and watch-line parsing."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.rest import ApiException

from ansible_collections.stackrox.prefetch.plugins.module_utils import _cluster
from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import (
    Cluster,
    ResourceInfo,
    WatchExpiredError,
    conflict_owners,
    parse_watch_line,
    translate_api_error,
    translate_transport_error,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ClusterUnreachableError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)

HOST = "https://127.0.0.1:6443"
DAEMONSETS = ResourceInfo("apps/v1", "DaemonSet", "daemonsets", True)


def status_body(code: int, message: str, causes: Any = None) -> str:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
    if causes is not None:
        body["details"] = {"causes": causes}
    return json.dumps(body)


class TestTranslateApiError:
    def test_unauthorized_names_host_verb_and_object(self) -> None:
        error = translate_api_error(
            401, "Unauthorized", status_body(401, "Unauthorized"), "apply", "DaemonSet p/x", HOST
        )
        assert isinstance(error, UnauthorizedError)
        assert str(error) == (
            f"the API server at {HOST} rejected the credentials (401 Unauthorized) when trying to apply DaemonSet p/x"
        )

    def test_forbidden_keeps_the_servers_user_and_resource(self) -> None:
        message = (
            'daemonsets.apps "x" is forbidden: User "dev" cannot patch resource "daemonsets" in API group "apps" '
            'in the namespace "p"'
        )
        error = translate_api_error(403, "Forbidden", status_body(403, message), "apply", "DaemonSet p/x", HOST)
        assert isinstance(error, ForbiddenError)
        assert str(error) == f"forbidden to apply DaemonSet p/x: {message}"

    def test_not_found(self) -> None:
        error = translate_api_error(404, "Not Found", status_body(404, 'namespaces "p" not found'), "get", "ns p", HOST)
        assert isinstance(error, NotFoundError) and 'namespaces "p" not found' in str(error)

    def test_conflict_from_causes_names_managers_fields_and_the_hint(self) -> None:
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "kubectl-edit" using apps/v1',
                "field": '.spec.template.spec.containers[name="sleep"].image',
            },
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "kubectl-edit" using apps/v1',
                "field": ".spec.updateStrategy",
            },
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "helm" using apps/v1',
                "field": ".metadata.labels.a",
            },
        ]
        body = status_body(409, "Apply failed with 3 conflicts", causes)
        error = translate_api_error(409, "Conflict", body, "apply", "DaemonSet p/x", HOST)
        assert isinstance(error, ConflictError)
        text = str(error)
        assert text.startswith("conflict applying DaemonSet p/x: ")
        assert 'field manager "helm" owns .metadata.labels.a' in text
        assert (
            'field manager "kubectl-edit" owns .spec.template.spec.containers[name="sleep"].image, .spec.updateStrategy'
            in text
        )
        assert text.endswith("set force_conflicts: true to take these fields over")

    def test_conflict_from_the_message_only(self) -> None:
        message = 'Apply failed with 2 conflicts: conflicts with "kubectl" using v1:\n- .data.a\n- .data.b'
        assert conflict_owners(status_body(409, message)) == {"kubectl": [".data.a", ".data.b"]}
        single = 'Apply failed with 1 conflict: conflict with "kubectl" using v1: .data.a'
        assert conflict_owners(status_body(409, single)) == {"kubectl": [".data.a"]}

    def test_invalid_object(self) -> None:
        body = status_body(422, 'DaemonSet.apps "x" is invalid: spec.selector: Required value')
        error = translate_api_error(422, "Unprocessable Entity", body, "apply", "DaemonSet p/x", HOST)
        assert error.__class__.__name__ == "ClusterError" and "as invalid: DaemonSet.apps" in str(error)

    def test_other_status_is_one_line_without_the_raw_body(self) -> None:
        error = translate_api_error(500, "Internal Server Error", "boom\nline2", "list", "pods", HOST)
        assert str(error) == "cannot list pods: HTTP 500 Internal Server Error: boom line2"


class TestTranslateTransportError:
    @pytest.mark.parametrize(
        ("cause", "expected"),
        [
            (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
            (OSError("[Errno -2] Name or service not known"), "the host name does not resolve"),
            (urllib3.exceptions.ConnectTimeoutError(None, "timed out"), "the connection timed out"),
            (OSError("SSLError: certificate verify failed: self-signed certificate"), "TLS error: "),
        ],
    )
    def test_cause_is_named(self, cause: BaseException, expected: str) -> None:
        error = urllib3.exceptions.MaxRetryError(None, "/api", reason=cause)  # type: ignore[arg-type]
        translated = translate_transport_error(error, HOST)
        assert isinstance(translated, ClusterUnreachableError)
        assert str(translated).startswith(f"cannot reach the Kubernetes API server at {HOST}: {expected}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_gives_one_line_naming_the_host() -> None:
    configuration = Configuration()
    configuration.host = f"https://127.0.0.1:{closed_port()}"
    configuration.retries = 0
    cluster = Cluster(ApiClient(configuration))
    with pytest.raises(ClusterUnreachableError) as raised:
        cluster.get(DAEMONSETS, "x", "p")
    assert str(raised.value) == f"cannot reach the Kubernetes API server at {configuration.host}: connection refused"


class FakeRequest:
    """Stands in for DynamicClient.request: answers by path, or raises the given error."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, _requester: Any, method: str, path: str, body: Any = None, **params: Any) -> Any:
        self.calls.append((method, path, {"body": body, **params}))
        answer = self.answers.get(path)
        if isinstance(answer, BaseException):
            raise answer
        if answer is None:
            raise ApiException(status=404, reason="Not Found")
        return answer


@pytest.fixture
def fake_request(monkeypatch: pytest.MonkeyPatch) -> FakeRequest:
    fake = FakeRequest({})
    monkeypatch.setattr(_cluster.DynamicClient, "request", fake)
    return fake


def make_cluster() -> Cluster:
    configuration = Configuration()
    configuration.host = HOST
    return Cluster(ApiClient(configuration))


class TestClusterCalls:
    def test_discovery_finds_kind_and_scope_and_skips_subresources(self, fake_request: FakeRequest) -> None:
        fake_request.answers["/apis/apps/v1"] = {
            "resources": [
                {"name": "daemonsets/status", "kind": "DaemonSet", "namespaced": True},
                {"name": "daemonsets", "kind": "DaemonSet", "namespaced": True},
            ]
        }
        fake_request.answers["/apis/rbac.authorization.k8s.io/v1"] = {
            "resources": [{"name": "clusterroles", "kind": "ClusterRole", "namespaced": False}]
        }
        cluster = make_cluster()
        assert cluster.resource_for("apps/v1", "DaemonSet") == DAEMONSETS
        assert cluster.resource_for("apps/v1", "DaemonSet") == DAEMONSETS
        assert not cluster.resource_for("rbac.authorization.k8s.io/v1", "ClusterRole").namespaced
        assert [call[1] for call in fake_request.calls] == ["/apis/apps/v1", "/apis/rbac.authorization.k8s.io/v1"]

    def test_unknown_kind_and_unknown_group(self, fake_request: FakeRequest) -> None:
        fake_request.answers["/api/v1"] = {"resources": [{"name": "pods", "kind": "Pod", "namespaced": True}]}
        cluster = make_cluster()
        with pytest.raises(NotFoundError, match="does not serve kind Widget in apiVersion v1"):
            cluster.resource_for("v1", "Widget")
        with pytest.raises(NotFoundError, match=r"kind Route in apiVersion route.openshift.io/v1"):
            cluster.resource_for("route.openshift.io/v1", "Route")

    def test_paths(self) -> None:
        assert Cluster.path(DAEMONSETS, "p", "x") == "/apis/apps/v1/namespaces/p/daemonsets/x"
        assert Cluster.path(ResourceInfo("v1", "Node", "nodes", False), None, "n1") == "/api/v1/nodes/n1"
        assert Cluster.path(ResourceInfo("v1", "Pod", "pods", True), "p") == "/api/v1/namespaces/p/pods"
        assert DAEMONSETS.qualified_plural == "daemonsets.apps"

    def test_apply_is_a_server_side_apply_patch(self, fake_request: FakeRequest) -> None:
        path = "/apis/apps/v1/namespaces/p/daemonsets/x"
        fake_request.answers[path] = {"kind": "DaemonSet"}
        obj = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "namespace": "p"}}
        make_cluster().apply(DAEMONSETS, obj, dry_run=True, force=False)
        method, called_path, params = fake_request.calls[0]
        assert (method, called_path) == ("PATCH", path)
        assert params["content_type"] == "application/apply-patch+yaml"
        assert params["field_manager"] == "stackrox.prefetch"
        assert params["dry_run"] == "All" and params["force_conflicts"] is None
        assert json.loads(params["body"]) == obj

    def test_forced_real_apply(self, fake_request: FakeRequest) -> None:
        fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets/x"] = {}
        obj = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "namespace": "p"}}
        make_cluster().apply(DAEMONSETS, obj, dry_run=False, force=True)
        params = fake_request.calls[0][2]
        assert params["force_conflicts"] is True and params["dry_run"] is None

    def test_get_missing_object_is_none_and_forbidden_is_an_error(self, fake_request: FakeRequest) -> None:
        cluster = make_cluster()
        assert cluster.get(DAEMONSETS, "x", "p") is None
        forbidden = ApiException(status=403, reason="Forbidden")
        forbidden.body = status_body(403, 'User "dev" cannot get resource "daemonsets"')
        fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets/x"] = forbidden
        with pytest.raises(ForbiddenError, match='forbidden to get DaemonSet p/x: User "dev" cannot get'):
            cluster.get(DAEMONSETS, "x", "p")

    def test_delete_reports_whether_something_was_deleted(self, fake_request: FakeRequest) -> None:
        cluster = make_cluster()
        assert cluster.delete(DAEMONSETS, "x", "p", dry_run=False) is False
        fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets/x"] = {"kind": "Status"}
        assert cluster.delete(DAEMONSETS, "x", "p", dry_run=True) is True
        params = fake_request.calls[-1][2]
        assert params["dry_run"] == "All" and params["body"]["propagationPolicy"] == "Background"

    def test_list_fills_kind_and_returns_the_version(self, fake_request: FakeRequest) -> None:
        fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets"] = {
            "metadata": {"resourceVersion": "42"},
            "items": [{"metadata": {"name": "x"}}],
        }
        items, version = make_cluster().list_objects(DAEMONSETS, "p", "app=x")
        assert version == "42" and items[0]["kind"] == "DaemonSet" and items[0]["apiVersion"] == "apps/v1"
        assert fake_request.calls[0][2]["label_selector"] == "app=x"

    def test_transport_failure_is_translated(self, fake_request: FakeRequest) -> None:
        refused = urllib3.exceptions.MaxRetryError(None, "/", reason=ConnectionRefusedError("Connection refused"))  # type: ignore[arg-type]
        fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets/x"] = refused
        with pytest.raises(ClusterUnreachableError, match=f"at {HOST}: connection refused"):
            make_cluster().get(DAEMONSETS, "x", "p")


class TestWatchLines:
    def test_event_line(self) -> None:
        event = parse_watch_line(b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}', "pods")
        assert event is not None and event["type"] == "ADDED"

    def test_blank_line_is_skipped(self) -> None:
        assert parse_watch_line(b"  ", "pods") is None

    def test_gone_means_list_again(self) -> None:
        with pytest.raises(WatchExpiredError):
            parse_watch_line(b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}', "pods")

    def test_other_error_event(self) -> None:
        with pytest.raises(ClusterError, match="watch of pods failed: boom"):
            parse_watch_line(b'{"type":"ERROR","object":{"code":500,"message":"boom"}}', "pods")

    def test_garbage(self) -> None:
        with pytest.raises(ClusterError, match="unreadable watch event for pods"):
            parse_watch_line(b"<html>", "pods")


class StreamingResponse:
    """A urllib3-like response delivering the given chunks (chunked transfer)."""

    chunked = True

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def test_watch_splits_events_across_chunks(fake_request: FakeRequest) -> None:
    response = StreamingResponse(
        [
            b'{"type":"ADDED","object":{"metadata":{"na',
            b'me":"a"}}}\n{"type":"DELETED",',
            b'"object":{"metadata":{"name":"a"}}}\n',
        ]
    )
    fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets"] = response
    events = list(make_cluster().watch(DAEMONSETS, "p", "7", 30))
    assert [event["type"] for event in events] == ["ADDED", "DELETED"]
    params = fake_request.calls[0][2]
    assert (params["watch"], params["resource_version"], params["timeout_seconds"]) == ("true", "7", 30)
    assert response.closed


def test_watch_answered_with_410_means_list_again(fake_request: FakeRequest) -> None:
    fake_request.answers["/apis/apps/v1/namespaces/p/daemonsets"] = ApiException(status=410, reason="Gone")
    with pytest.raises(WatchExpiredError):
        list(make_cluster().watch(DAEMONSETS, "p", "1", 30))
