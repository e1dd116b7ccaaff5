"""Self-tests of the API fault proxy (tests/infra/apiproxy.py): its rule matching (pure), then each action against
the real API server of the session cluster, through the modules' own client (``_cluster.Cluster``): if these fail,
tests/e2e/test_api_faults.py lies."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.faults import collection_module, module_cluster
from e2e.support import Cluster
from infra.apiproxy import ApiProxy, ApiRule, gone_event, is_watch, status_object


# ---- rule matching (pure) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "watching"), [
    ("watch=true", True), ("labelSelector=a%3Db&watch=1&timeoutSeconds=30", True), ("watch=false", False),
    ("", False), ("watcher=true", False), ("resourceVersion=7", False)])
def test_is_watch(query: str, watching: bool) -> None:
    assert is_watch(query) is watching


def test_a_rule_matches_method_path_and_query() -> None:
    rule = ApiRule(path=r"/daemonsets/", method="patch", query=r"^(?!.*dryRun=)")
    assert rule.matches("PATCH", "/apis/apps/v1/namespaces/a/daemonsets/a", "fieldManager=x")
    assert not rule.matches("PATCH", "/apis/apps/v1/namespaces/a/daemonsets/a", "dryRun=All&fieldManager=x")
    assert not rule.matches("GET", "/apis/apps/v1/namespaces/a/daemonsets/a", "")
    assert not rule.matches("PATCH", "/api/v1/namespaces/a/configmaps/a", "")


def test_watch_selection() -> None:
    watches_only = ApiRule(path="/pods", watch=True)
    no_watches = ApiRule(path="/pods", watch=False)
    assert watches_only.matches("GET", "/api/v1/namespaces/a/pods", "watch=true")
    assert not watches_only.matches("GET", "/api/v1/namespaces/a/pods", "")
    assert no_watches.matches("GET", "/api/v1/namespaces/a/pods", "")
    assert not no_watches.matches("GET", "/api/v1/namespaces/a/pods", "watch=true")
    # A watch action needs a watch, whatever ``watch`` says.
    assert not ApiRule(path="/pods", action="close_watch").matches("GET", "/api/v1/namespaces/a/pods", "")


def test_times_counts_matches() -> None:
    rule = ApiRule(path="/x", times=2)
    rule.hits = 2
    assert not rule.matches("GET", "/x", "")
    assert ApiRule(path="/x").matches("GET", "/x", "")  # times None: always


@pytest.mark.parametrize("fields", [{"action": "bogus"}, {"action": "close_watch", "watch": False},
                                    {"after_events": -1}, {"path": "("}])
def test_bad_rules_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises((ValueError, re.error)):
        ApiRule(**fields)  # type: ignore[arg-type]


def test_status_answers_are_kubernetes_status_objects() -> None:
    body = json.loads(ApiRule(status=429).answer_body())
    assert body == status_object(429, "the API fault proxy answered 429")
    assert body["reason"] == "TooManyRequests" and body["code"] == 429
    assert ApiRule(status=503, body="plain").answer_body() == b"plain"
    event = json.loads(gone_event())
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


# ---- against the real API server ------------------------------------------------------------------------------
@pytest.fixture()
def client(collections_path: Path, cluster: Cluster, px: ApiProxy, tmp_path: Path) -> Any:
    """The modules' own client through the proxy, 30 s of retry budget."""
    return module_cluster(collections_path, cluster, px, tmp_path, budget_s=30)


def test_pass_through_keeps_the_clients_credentials(client: Any, px: ApiProxy) -> None:
    namespaces = client.resource_for("v1", "Namespace")
    items, version = client.list_objects(namespaces)
    assert {"default", "kube-system"} <= {item["metadata"]["name"] for item in items} and version
    assert [(r.method, r.path, r.status, r.upstream) for r in px.requests] == [
        ("GET", "/api/v1", 200, True), ("GET", "/api/v1/namespaces", 200, True)]


def test_status_rule_with_retry_after_is_honoured_by_the_modules(client: Any, px: ApiProxy) -> None:
    namespaces = client.resource_for("v1", "Namespace")
    px.add_rule(ApiRule(path="/api/v1/namespaces$", status=429, headers={"Retry-After": "1"}, times=2))
    started = time.monotonic()
    client.list_objects(namespaces)
    seen = [r for r in px.requests if r.path == "/api/v1/namespaces"]
    assert [r.status for r in seen] == [429, 429, 200] and not seen[0].upstream
    assert seen[1].started - seen[0].started >= 1 and seen[2].started - seen[1].started >= 1
    assert time.monotonic() - started >= 2


def test_watch_actions(client: Any, px: ApiProxy, collections_path: Path) -> None:
    clusters = collection_module(collections_path, "_cluster")
    namespaces = client.resource_for("v1", "Namespace")
    px.add_rule(ApiRule(path="/api/v1/namespaces$", action="close_watch", after_events=2, times=1))
    px.add_rule(ApiRule(path="/api/v1/namespaces$", action="watch_gone", after_events=1, times=1))
    received = []
    with pytest.raises(clusters.WatchInterruptedError, match=r"the watch of namespaces at .* broke"):
        received.extend(client.watch(namespaces, None, "0", 10))
    assert len(received) == 2
    received.clear()
    with pytest.raises(clusters.WatchExpiredError):
        received.extend(client.watch(namespaces, None, "0", 10))
    assert len(received) == 1
    watches = [r for r in px.requests if r.watch]
    assert [(r.action, r.events) for r in watches] == [("close_watch", 2), ("watch_gone", 1)]


def test_reset_reset_after_and_revoke(client: Any, px: ApiProxy, collections_path: Path) -> None:
    errors = collection_module(collections_path, "_errors")
    namespaces = client.resource_for("v1", "Namespace")
    px.add_rule(ApiRule(path="/api/v1/namespaces$", action="reset", times=1))
    px.add_rule(ApiRule(path="/api/v1/namespaces$", action="reset_after", times=1))
    client.list_objects(namespaces)  # a read: retried after both
    seen = [r for r in px.requests if r.path == "/api/v1/namespaces"]
    assert [(r.action, r.status, r.upstream) for r in seen] == [("reset", None, False), ("reset_after", None, True),
                                                                 ("pass", 200, True)]
    px.revoke()
    denied = r"rejected the credentials \(401 Unauthorized\) when trying to list"
    with pytest.raises(errors.UnauthorizedError, match=denied):
        client.list_objects(namespaces)
