# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retry policy of every request (``_cluster.retry_decision``, pure) and the Cluster's retry loop around it."""

from __future__ import annotations

import email.utils
import itertools
from typing import Any, Optional

import pytest
import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.rest import ApiException

from ansible_collections.stackrox.prefetch.plugins.module_utils import _cluster
from ansible_collections.stackrox.prefetch.plugins.module_utils._cluster import (
    BACKOFF_MAX,
    LAST_ATTEMPT_SECONDS,
    SERVER_ERROR_ATTEMPTS,
    Cluster,
    ResourceInfo,
    RetryDecision,
    WatchExpiredError,
    WatchInterruptedError,
    backoff,
    is_write_outcome_unknown,
    parse_retry_after,
    retry_decision,
    retry_note,
    transport_failure_kind,
)
from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import (
    ClusterError,
    ClusterUnreachableError,
    ConflictError,
    UnauthorizedError,
)

HOST = "https://127.0.0.1:6443"
DAEMONSETS = ResourceInfo("apps/v1", "DaemonSet", "daemonsets", True)
READS = ("get", "list", "watch", "discover")
IDEMPOTENT_WRITES = ("apply", "patch")
NOT_IDEMPOTENT = ("delete", "create")
ALL_VERBS = READS + IDEMPOTENT_WRITES + NOT_IDEMPOTENT
RETRY_AFTER = {"Retry-After": "3"}


def decide(verb: str, status: int, headers: Optional[dict[str, str]] = None, attempt: int = 1,
           remaining: float = 100.0, sent: bool = True, reached: bool = True,
           permanent: bool = False) -> RetryDecision:
    return retry_decision(verb, status, headers, attempt, remaining, sent, reached, permanent)


# --- Retry-After and backoff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": " 0 "}, 0.0),
        ({"RETRY-AFTER": "120"}, 120.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "1.5"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
        (None, None),
        ({"Content-Type": "application/json"}, None),
    ],
)
def test_retry_after_seconds(headers: Optional[dict[str, str]], expected: Optional[float]) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


def test_backoff_doubles_from_half_a_second_and_stops_growing() -> None:
    assert [backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert max(backoff(n) for n in range(1, 100)) == BACKOFF_MAX


# --- the decision ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ALL_VERBS)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 415, 422, 501, 505])
def test_answers_that_no_retry_mends(verb: str, status: int) -> None:
    assert decide(verb, status, RETRY_AFTER) == RetryDecision(False)


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_throttled_requests_of_every_verb_wait_for_retry_after(verb: str) -> None:
    assert decide(verb, 429, RETRY_AFTER) == RetryDecision(True, 3.0)
    assert decide(verb, 503, RETRY_AFTER) == RetryDecision(True, 3.0)


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_429_without_retry_after_backs_off(verb: str) -> None:
    assert [decide(verb, 429, attempt=n).delay for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, BACKOFF_MAX]


def test_throttling_has_no_attempt_limit_but_the_deadline() -> None:
    assert decide("delete", 429, RETRY_AFTER, attempt=500).retry
    assert decide("get", 429, RETRY_AFTER, attempt=2, remaining=3.0) == RetryDecision(
        False, note="the next attempt, in 3s, would come after the task's timeout (3s left)"
    )


def test_a_retry_after_of_zero_still_pauses() -> None:
    assert decide("get", 429, {"Retry-After": "0"}) == RetryDecision(True, 0.1)


@pytest.mark.parametrize("verb", READS + IDEMPOTENT_WRITES)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_retry_idempotent_requests_a_few_times(verb: str, status: int) -> None:
    delays = [decide(verb, status, attempt=n) for n in range(1, SERVER_ERROR_ATTEMPTS + 1)]
    assert delays[:-1] == [RetryDecision(True, backoff(n)) for n in range(1, SERVER_ERROR_ATTEMPTS)]
    assert delays[-1] == RetryDecision(False)


@pytest.mark.parametrize("verb", NOT_IDEMPOTENT)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_never_repeat_a_delete_or_create(verb: str, status: int) -> None:
    decision = decide(verb, status)
    assert not decision.retry
    assert decision.note == (
        f"not retried: a {verb} is sent again only when the server says it did not act on it "
        "(429, or 503 with Retry-After)"
    )


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_a_connection_that_never_opened_is_retried_for_every_verb(verb: str) -> None:
    assert [decide(verb, 0, sent=False, attempt=n) for n in (1, 2, 5, 50)] == [
        RetryDecision(True, 0.5), RetryDecision(True, 1.0), RetryDecision(True, 8.0), RetryDecision(True, 8.0)
    ]


@pytest.mark.parametrize("verb", READS + IDEMPOTENT_WRITES)
def test_a_broken_connection_is_retried_for_idempotent_requests(verb: str) -> None:
    assert decide(verb, 0, sent=True, attempt=3) == RetryDecision(True, 2.0)


@pytest.mark.parametrize("verb", NOT_IDEMPOTENT)
def test_a_broken_connection_never_repeats_a_delete_or_create(verb: str) -> None:
    assert decide(verb, 0, sent=True) == RetryDecision(
        False, note=f"not retried: the connection broke after the {verb} was sent, so it may have been done"
    )


@pytest.mark.parametrize("verb", ALL_VERBS)
@pytest.mark.parametrize("sent", [True, False])
def test_a_server_never_reached_in_this_run_fails_at_once(verb: str, sent: bool) -> None:
    assert decide(verb, 0, sent=sent, reached=False) == RetryDecision(False)


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_a_permanent_transport_failure_is_never_retried(verb: str) -> None:
    assert decide(verb, 0, sent=False, permanent=True) == RetryDecision(False)


@pytest.mark.parametrize("status", [0, 429, 500, 503])
def test_nothing_is_retried_once_the_deadline_passed(status: int) -> None:
    for remaining in (0.0, -5.0):
        decision = decide("get", status, RETRY_AFTER, sent=False, remaining=remaining)
        assert decision == RetryDecision(False, note="the task's timeout has passed")


def test_a_backoff_that_would_end_after_the_deadline_is_not_started() -> None:
    assert decide("get", 500, attempt=3, remaining=1.5).retry is False
    assert decide("get", 500, attempt=3, remaining=2.5) == RetryDecision(True, 2.0)


def test_every_combination_is_decided_without_error() -> None:
    """Exhaustive over the inputs' classes: a decision is always made, a retry always has a delay below the time left,
    and only 429, 5xx and 0 are ever retried."""
    statuses = [0, 200, 400, 401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504, 505]
    header_sets: list[Optional[dict[str, str]]] = [None, {}, {"Retry-After": "2"}, {"Retry-After": "90"},
                                                   {"Retry-After": "x"}]
    for verb, status, headers, attempt, remaining, sent, reached, permanent in itertools.product(
        ALL_VERBS, statuses, header_sets, (1, 2, SERVER_ERROR_ATTEMPTS, 40), (-1.0, 0.0, 1.0, 30.0, 600.0),
        (True, False), (True, False), (True, False)
    ):
        decision = retry_decision(verb, status, headers, attempt, remaining, sent, reached, permanent)
        if decision.retry:
            assert status in (0, 429, 500, 502, 503, 504)
            assert 0 < decision.delay < remaining
            assert not permanent
            if verb in NOT_IDEMPOTENT:
                assert status == 429 or (status == 503 and parse_retry_after(headers) is not None) or (
                    status == 0 and not sent)
            if status == 0:
                assert reached


def test_retry_note() -> None:
    assert retry_note(1, 0.0, RetryDecision(False)) == ""
    assert retry_note(1, 0.0, RetryDecision(False, note="why")) == " (why)"
    assert retry_note(4, 7.4, RetryDecision(False)) == " (gave up after 4 attempts in 7s)"
    assert retry_note(3, 12.0, RetryDecision(False, note="why")) == " (gave up after 3 attempts in 12s: why)"


@pytest.mark.parametrize(
    ("verb", "status", "sent", "retry_after", "dry_run", "unknown"),
    [
        ("apply", 0, True, None, False, True),
        ("apply", 0, False, None, False, False),
        ("apply", 0, True, None, True, False),
        ("delete", 500, True, None, False, True),
        ("delete", 503, True, None, False, True),
        ("delete", 503, True, 2.0, False, False),
        ("delete", 429, True, None, False, False),
        ("delete", 409, True, None, False, False),
        ("patch", 504, True, None, False, True),
        ("get", 0, True, None, False, False),
        ("list", 500, True, None, False, False),
    ],
)
def test_write_outcome_unknown(verb: str, status: int, sent: bool, retry_after: Optional[float], dry_run: bool,
                               unknown: bool) -> None:
    assert is_write_outcome_unknown(verb, status, sent, retry_after, dry_run) is unknown


# --- transport failures ------------------------------------------------------------------------------------------


def _max_retry(reason: BaseException) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "/", reason=reason)  # type: ignore[arg-type]


REFUSED_ERROR = _max_retry(
    urllib3.exceptions.NewConnectionError(None, "Failed to establish: [Errno 111] Connection refused")  # type: ignore[arg-type]
)
READ_TIMEOUT_ERROR = _max_retry(urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (REFUSED_ERROR, (False, False)),
        (_max_retry(urllib3.exceptions.ConnectTimeoutError(None, "timed out")), (False, False)),
        (_max_retry(urllib3.exceptions.SSLError("EOF occurred in violation of protocol (_ssl.c:2427)")),
         (False, False)),
        (_max_retry(urllib3.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")),
         (False, True)),
        (_max_retry(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))),
         (True, False)),
        (READ_TIMEOUT_ERROR, (True, False)),
        (urllib3.exceptions.ProtocolError("Response ended prematurely"), (True, False)),
        (ConnectionRefusedError(111, "Connection refused"), (False, False)),
        (Exception("SSLError\nEOF occurred in violation of protocol"), (False, False)),
        (Exception("something else"), (True, False)),
    ],
)
def test_transport_failure_kind(error: BaseException, kind: tuple[bool, bool]) -> None:
    assert transport_failure_kind(error) == kind


# --- the retry loop ----------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """Stands in for DynamicClient.request: one scripted answer (or error) per call, the last one repeating."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, _requester: Any, method: str, path: str, body: Any = None, **params: Any) -> Any:
        self.calls.append({"method": method, "path": path, "body": body, **params})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def api_error(status: int, headers: Optional[dict[str, str]] = None, body: str = "") -> ApiException:
    error = ApiException(status=status, reason={429: "Too Many Requests", 500: "Internal Server Error"}.get(status, ""))
    error.headers = headers or {}
    error.body = body
    return error


REFUSED = REFUSED_ERROR
RESET = _max_retry(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))


def cluster_with(monkeypatch: pytest.MonkeyPatch, script: Script, budget: float = 60.0,
                 reached: bool = True) -> tuple[Cluster, FakeClock]:
    monkeypatch.setattr(_cluster.DynamicClient, "request", script)
    configuration = Configuration()
    configuration.host = HOST
    clock = FakeClock()
    cluster = Cluster(ApiClient(configuration), deadline=clock.now + budget, clock=clock, sleep=clock.sleep)
    cluster.reached = reached
    return cluster, clock


OBJ = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "namespace": "p"}}


def test_throttled_apply_waits_for_retry_after_and_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(api_error(429, {"Retry-After": "2"}), api_error(429, {"Retry-After": "2"}), {"kind": "DaemonSet"})
    cluster, clock = cluster_with(monkeypatch, script)
    assert cluster.apply(DAEMONSETS, OBJ, dry_run=False, force=False) == {"kind": "DaemonSet"}
    assert clock.sleeps == [2.0, 2.0] and len(script.calls) == 3 and cluster.retries == 2
    assert all(call["body"] == script.calls[0]["body"] for call in script.calls)


def test_persistent_500_on_apply_gives_up_after_the_attempt_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(api_error(500, body='{"kind":"Status","message":"etcd is down"}'))
    cluster, clock = cluster_with(monkeypatch, script)
    with pytest.raises(ClusterError) as raised:
        cluster.apply(DAEMONSETS, OBJ, dry_run=False, force=False)
    assert str(raised.value) == (
        "cannot apply DaemonSet p/x: HTTP 500 Internal Server Error: etcd is down (gave up after 4 attempts in 4s)"
    )
    assert raised.value.outcome_unknown
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_a_dry_run_that_failed_changed_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, _clock = cluster_with(monkeypatch, Script(api_error(500)))
    with pytest.raises(ClusterError) as raised:
        cluster.apply(DAEMONSETS, OBJ, dry_run=True, force=False)
    assert not raised.value.outcome_unknown


def test_a_delete_whose_connection_broke_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(RESET, {"kind": "Status"})
    cluster, clock = cluster_with(monkeypatch, script)
    with pytest.raises(ClusterUnreachableError) as raised:
        cluster.delete(DAEMONSETS, "x", "p", dry_run=False)
    assert str(raised.value) == (
        f"cannot delete DaemonSet p/x: the connection to the Kubernetes API server at {HOST} broke before the "
        "answer: connection reset (not retried: the connection broke after the delete was sent, so it may have been "
        "done)"
    )
    assert raised.value.outcome_unknown and len(script.calls) == 1 and clock.sleeps == []


def test_a_delete_refused_by_a_restarting_server_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(REFUSED, REFUSED, {"kind": "Status"})
    cluster, clock = cluster_with(monkeypatch, script)
    assert cluster.delete(DAEMONSETS, "x", "p", dry_run=False) is True
    assert clock.sleeps == [0.5, 1.0]


def test_a_server_never_reached_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(REFUSED)
    cluster, clock = cluster_with(monkeypatch, script, reached=False)
    with pytest.raises(ClusterUnreachableError) as raised:
        cluster.get(DAEMONSETS, "x", "p")
    assert str(raised.value) == f"cannot reach the Kubernetes API server at {HOST}: connection refused"
    assert len(script.calls) == 1 and clock.sleeps == []


def test_an_answer_makes_the_server_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(api_error(404), REFUSED, {"items": []})
    cluster, clock = cluster_with(monkeypatch, script, reached=False)
    assert cluster.get(DAEMONSETS, "x", "p") is None
    assert cluster.list_objects(DAEMONSETS, "p") == ([], "")
    assert clock.sleeps == [0.5]


def test_an_unreachable_server_is_retried_until_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(REFUSED)
    cluster, clock = cluster_with(monkeypatch, script, budget=30.0)
    with pytest.raises(ClusterUnreachableError) as raised:
        cluster.list_objects(DAEMONSETS, "p")
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # 23.5 s; the next 8 s would end after 30 s
    assert str(raised.value) == (
        f"cannot list daemonsets.apps in namespace p: the Kubernetes API server at {HOST} is not reachable: "
        "connection refused (gave up after 7 attempts in 24s: the next attempt, in 8s, would come after the task's "
        "timeout (6s left))"
    )


def test_a_401_is_final_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(api_error(401))
    cluster, clock = cluster_with(monkeypatch, script)
    with pytest.raises(UnauthorizedError):
        cluster.list_objects(DAEMONSETS, "p")
    assert len(script.calls) == 1 and clock.sleeps == []


def test_a_conflict_is_final_and_keeps_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    body = '{"kind":"Status","message":"Apply failed with 1 conflict: conflict with \\"kubectl-edit\\": .data.x"}'
    cluster, _clock = cluster_with(monkeypatch, Script(api_error(409, body=body)))
    with pytest.raises(ConflictError, match='field manager "kubectl-edit" owns'):
        cluster.apply(DAEMONSETS, OBJ, dry_run=True, force=False)


def test_attempt_timeouts_are_cut_to_the_time_left_but_not_below_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script({"items": []})
    cluster, clock = cluster_with(monkeypatch, script, budget=30.0)
    cluster.list_objects(DAEMONSETS, "p")
    clock.now += 20
    cluster.list_objects(DAEMONSETS, "p")
    clock.now += 100
    cluster.list_objects(DAEMONSETS, "p")
    assert [call["_request_timeout"] for call in script.calls] == [
        (15, 30.0), (10.0, 10.0), (LAST_ATTEMPT_SECONDS, LAST_ATTEMPT_SECONDS)
    ]


def test_a_watch_answered_410_is_never_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(api_error(410), {"never": "used"})
    cluster, _clock = cluster_with(monkeypatch, script)
    with pytest.raises(WatchExpiredError):
        list(cluster.watch(DAEMONSETS, "p", "1", 30))
    assert len(script.calls) == 1


def test_a_throttled_watch_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    class Empty:
        chunked = True

        def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
            return iter(())

        def close(self) -> None:
            pass

    script = Script(api_error(429, {"Retry-After": "1"}), Empty())
    cluster, clock = cluster_with(monkeypatch, script)
    assert list(cluster.watch(DAEMONSETS, "p", "1", 30)) == []
    assert clock.sleeps == [1.0]
    assert script.calls[-1]["_request_timeout"] == (15, 45)  # a watch keeps its own read timeout


def test_a_watch_stream_that_breaks_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        chunked = True

        def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
            yield b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n'
            raise urllib3.exceptions.ProtocolError("Response ended prematurely")

        def close(self) -> None:
            pass

    cluster, _clock = cluster_with(monkeypatch, Script(Broken()))
    events = []
    with pytest.raises(WatchInterruptedError) as raised:
        for event in cluster.watch(DAEMONSETS, "p", "1", 30):
            events.append(event)
    assert [event["type"] for event in events] == ["ADDED"]
    assert str(raised.value) == (
        f"the watch of daemonsets.apps in namespace p at {HOST} broke: the answer was cut off"
    )
    assert isinstance(raised.value, ClusterUnreachableError)
