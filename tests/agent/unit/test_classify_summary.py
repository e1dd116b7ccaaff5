"""Error classification, the reason rule (`final_failure`), redaction and the termination summary (with truncation
to 4096 bytes)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest

from image_prefetcher.classify import (
    DETAIL_LIMIT,
    Action,
    AttemptRecord,
    ErrorClass,
    Failure,
    PullError,
    classify,
    decide,
    final_failure,
    redact,
)
from image_prefetcher.engine import ImageResult
from image_prefetcher.logs import configure_logging
from image_prefetcher.summary import (
    MAX_WARNINGS,
    WARNING_LIMIT,
    RunReport,
    build_fatal_summary,
    build_summary,
    write_termination_log,
)

CONTAINERD_ERRORS = [
    (
        "UNKNOWN",
        'failed to pull and unpack image "x": failed to parse image reference "A:b:c": invalid reference format',
        ErrorClass.INVALID_REFERENCE,
    ),
    ("NOT_FOUND", 'failed to resolve reference "r/x:v1": r/x:v1: not found', ErrorClass.NOT_FOUND),
    (
        "UNKNOWN",
        "pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: 401 Unauthorized",
        ErrorClass.UNAUTHORIZED,
    ),
    ("UNKNOWN", "unexpected status code https://r/v2/x/manifests/v1: 403 Forbidden", ErrorClass.UNAUTHORIZED),
    ("PERMISSION_DENIED", "nope", ErrorClass.UNAUTHORIZED),
    ("UNKNOWN", "failed commit on ref: unexpected status: 500 Internal Server Error", ErrorClass.ERROR),
    ("UNKNOWN", "dial tcp 127.0.0.1:1: connect: connection refused", ErrorClass.UNAVAILABLE),
    ("UNKNOWN", "failed to copy: httpReadSeeker: failed open: unexpected EOF", ErrorClass.UNAVAILABLE),
    ("UNAVAILABLE", "connection error", ErrorClass.UNAVAILABLE),
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", ErrorClass.TIMEOUT),
    ("CANCELLED", "Cancelled", ErrorClass.CANCELLED),
    ("UNKNOWN", "layer sha256:4013ab digest mismatch", ErrorClass.ERROR),  # '401' inside a digest is no 401
]


# Recorded by the agent integration suite on each runtime (PREFETCH_ERROR_LOG, docs/runtimes.md), ports as seen.
CONTAINERD2_ERRORS = [  # containerd 2.4.2
    ("UNKNOWN", 'failed to pull and unpack image "registry.test:5000/private/app:v1": failed to resolve image: pull '
     "access denied, repository does not exist or may require authorization: authorization failed: no basic auth "
     "credentials", ErrorClass.UNAUTHORIZED),
    ("UNKNOWN", 'failed to pull and unpack image "registry.test:5000/it/gamma:v1": failed to resolve image: '
     "unexpected status from HEAD request to http://127.0.0.1:35931/v2/it/gamma/manifests/v1?ns=registry.test%3A5000"
     ": 500 Injected", ErrorClass.ERROR),
    ("UNKNOWN", 'failed to pull and unpack image "registry.test:5000/private/app:v1": failed to resolve image: '
     "unexpected status from HEAD request to http://127.0.0.1:33727/v2/private/app/manifests/v1?ns=registry.test%3A"
     "5000: 401 Unauthorized", ErrorClass.UNAUTHORIZED),
    ("NOT_FOUND", 'failed to pull and unpack image "registry.test:5000/it/missing:v1": failed to resolve image: '
     "registry.test:5000/it/missing:v1: not found", ErrorClass.NOT_FOUND),
    ("UNKNOWN", 'failed to parse image reference "registry.test:5000/Upper/Case:v1": invalid reference format: '
     "repository name (Upper/Case) must be lowercase", ErrorClass.INVALID_REFERENCE),
    ("UNKNOWN", 'failed to pull and unpack image "registry.test:5000/it/alpha:v1": failed to resolve image: failed to '
     'do request: Head "http://127.0.0.1:35103/v2/it/alpha/manifests/v1?ns=%5BREDACTED%5D": dial tcp '
     "127.0.0.1:35103: connect: connection refused", ErrorClass.UNAVAILABLE),
    ("UNAVAILABLE", "Stream removed (Socket closed)", ErrorClass.UNAVAILABLE),
]
CRIO_ERRORS = [  # CRI-O 1.34.0 (containers/image 5.35.0): code Unknown for every registry answer
    ("UNKNOWN", "unable to try pulling possible OCI artifact: build image source: reading manifest v1 in "
     "registry.test:5000/private/app: authentication required", ErrorClass.UNAUTHORIZED),
    ("UNKNOWN", "unable to try pulling possible OCI artifact: build image source: reading manifest v1 in "
     "registry.test:5000/it/alpha: unauthorized", ErrorClass.UNAUTHORIZED),
    ("UNKNOWN", "unable to try pulling possible OCI artifact: build image source: reading manifest v1 in "
     "registry.test:5000/it/gamma: received unexpected HTTP status: 500 Injected", ErrorClass.ERROR),
    ("UNKNOWN", "unable to try pulling possible OCI artifact: build image source: reading manifest v1 in "
     "registry.test:5000/it/missing: manifest unknown", ErrorClass.NOT_FOUND),
    ("UNKNOWN", 'cannot parse input: "registry.test:5000/Upper/Case:v1": repository name must be lowercase',
     ErrorClass.INVALID_REFERENCE),
    ("UNKNOWN", "RegistryUnavailable: unable to try pulling possible OCI artifact: build image source: pinging "
     'container registry registry.test:5000: Get "http://registry.test:5000/v2/": proxyconnect tcp: dial tcp '
     "127.0.0.1:45375: connect: connection refused", ErrorClass.UNAVAILABLE),
    ("DEADLINE_EXCEEDED", "unable to try pulling possible OCI artifact: build image source: Get "
     '"http://registry.test:5000/v2/it/alpha/manifests/v1": context deadline exceeded', ErrorClass.TIMEOUT),
    ("UNAVAILABLE", "Stream removed (Socket closed (GOAWAY received; Error code: 0; Debug Text: graceful_stop))",
     ErrorClass.UNAVAILABLE),
]


@pytest.mark.parametrize(("code", "details", "expected"), CONTAINERD_ERRORS + CONTAINERD2_ERRORS + CRIO_ERRORS)
def test_classify(code: str, details: str, expected: ErrorClass) -> None:
    assert classify(code, details) is expected


@pytest.mark.parametrize(
    ("error_class", "fails", "has_next", "action"),
    [
        (ErrorClass.INVALID_REFERENCE, False, True, Action.FINAL),
        (ErrorClass.NOT_FOUND, False, False, Action.RETRY),
        (ErrorClass.NOT_FOUND, True, False, Action.FINAL),
        (ErrorClass.NOT_FOUND, True, True, Action.NEXT_CREDENTIAL),
        (ErrorClass.UNAUTHORIZED, False, True, Action.NEXT_CREDENTIAL),
        (ErrorClass.UNAUTHORIZED, True, False, Action.RETRY),
        (ErrorClass.UNAVAILABLE, True, True, Action.RETRY),
        (ErrorClass.TIMEOUT, False, True, Action.RETRY),
        (ErrorClass.ERROR, False, False, Action.RETRY),
    ],
)
def test_decide(error_class: ErrorClass, fails: bool, has_next: bool, action: Action) -> None:
    assert decide(error_class, not_found_fails=fails, has_next_credential=has_next) is action


def test_go_error_string_and_short_reason() -> None:
    error = PullError("NOT_FOUND", "x" * 400)
    assert error.go_string().startswith("rpc error: code = NotFound desc = xxx")
    reason = error.short_reason()
    assert reason.startswith("not_found: ") and len(reason) == len("not_found: ") + 160
    tail = PullError("UNKNOWN", "a" * 300 + " 401 Unauthorized").short_reason()
    assert tail.startswith("unauthorized: aaa") and "a...a" in tail and tail.endswith("a 401 Unauthorized")


# --- the reason rule: final_failure(history) -------------------------------------------------------------------------

REFUSED = PullError("UNKNOWN", 'failed to pull "r/x:v1": unexpected status: 401 Unauthorized')
MISSING = PullError("NOT_FOUND", 'failed to resolve reference "r/x:v1": not found')
BROKEN = PullError("UNKNOWN", "unexpected status: 500 Internal Server Error")
SLOW = PullError("DEADLINE_EXCEEDED", "Deadline Exceeded")  # the attempt's own timeout: a real error
INVALID = PullError("UNKNOWN", 'failed to parse image reference "A:b:c": invalid reference format')
CUT = PullError("DEADLINE_EXCEEDED", "Deadline Exceeded")  # the same text as SLOW: only the record tells them apart

# The kinds of attempt an image's history is made of.
ATTEMPTS = {
    "ok": AttemptRecord(None),
    "refused": AttemptRecord(REFUSED),
    "missing": AttemptRecord(MISSING),
    "broken": AttemptRecord(BROKEN),
    "slow": AttemptRecord(SLOW),
    "invalid": AttemptRecord(INVALID),
    "cut": AttemptRecord(CUT, cut_by_deadline=True),
}


def history_of(*kinds: str) -> list[AttemptRecord]:
    return [ATTEMPTS[kind] for kind in kinds]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((), None),
        (("ok",), None),
        (("refused", "ok"), None),
        (("refused",), "unauthorized: " + REFUSED.details),
        (("missing",), "not_found: " + MISSING.details),
        (("broken",), "error: " + BROKEN.details),
        (("invalid",), "invalid_reference: " + INVALID.details),
        (("slow",), "timeout: Deadline Exceeded"),
        (("refused",) * 10 + ("cut",), "unauthorized: " + REFUSED.details + " (the overall timeout ended attempt 11)"),
        (("broken", "refused", "cut"), "unauthorized: " + REFUSED.details + " (the overall timeout ended attempt 3)"),
        (("refused", "broken", "cut"), "error: " + BROKEN.details + " (the overall timeout ended attempt 3)"),
        (("refused", "slow", "cut"), "timeout: Deadline Exceeded (the overall timeout ended attempt 3)"),
        (("cut",), "timeout: Deadline Exceeded (the overall timeout ended attempt 1)"),
        (("cut", "cut"), "timeout: Deadline Exceeded (the overall timeout ended attempt 2)"),
        (("refused", "cut", "cut"), "unauthorized: " + REFUSED.details + " (the overall timeout ended attempt 3)"),
        (("cut", "refused"), "unauthorized: " + REFUSED.details),  # the last attempt was not cut: it is the reason
        (("refused", "missing"), "not_found: " + MISSING.details),
    ],
)
def test_final_failure_cases(kinds: tuple[str, ...], expected: str | None) -> None:
    failure = final_failure(history_of(*kinds))
    assert (failure.short_reason() if failure is not None else None) == expected


KIND_CLASSES = {"refused": ErrorClass.UNAUTHORIZED, "missing": ErrorClass.NOT_FOUND, "broken": ErrorClass.ERROR,
                "slow": ErrorClass.TIMEOUT, "invalid": ErrorClass.INVALID_REFERENCE}


def _oracle_class(kinds: tuple[str, ...]) -> ErrorClass | None:
    """The rule stated independently: None after a success; else the class of the last attempt the deadline did
    not cut; timeout when the deadline cut every attempt."""
    if not kinds or kinds[-1] == "ok":
        return None
    real = [kind for kind in kinds if kind in KIND_CLASSES]
    return KIND_CLASSES[real[-1]] if real else ErrorClass.TIMEOUT


@pytest.mark.parametrize("length", range(5))
def test_final_failure_over_every_history_up_to_four_attempts(length: int) -> None:
    for kinds in itertools.product(ATTEMPTS, repeat=length):
        failure = final_failure(history_of(*kinds))
        expected = _oracle_class(kinds)
        if failure is None or expected is None:
            assert failure is None and expected is None, kinds
            continue
        assert failure.error_class is expected, kinds
        klass, _, detail = failure.short_reason().partition(": ")
        assert klass == expected.value and len(detail) <= DETAIL_LIMIT, kinds
        noted = kinds[-1] == "cut"  # the note says the cut, and only then
        assert (failure.note == f"the overall timeout ended attempt {length}") is noted, kinds
        assert failure.go_string().endswith(f" ({failure.note})") is noted, kinds
        if noted and any(kind in KIND_CLASSES for kind in kinds):  # the cut never hides a real error
            assert failure.error is not CUT, kinds


def test_a_long_detail_loses_its_middle_so_that_the_cause_and_the_note_still_fit() -> None:
    details = 'failed to pull and unpack image "r/x:v1": ' + "x" * 400 + ": 401 Unauthorized"
    failure = Failure(PullError("UNKNOWN", details), "the overall timeout ended attempt 11")
    reason = failure.short_reason()
    klass, _, detail = reason.partition(": ")
    assert klass == "unauthorized" and len(detail) == DETAIL_LIMIT
    assert detail.startswith('failed to pull and unpack image "r/x') and '...xxx' in detail
    assert detail.endswith("xxx: 401 Unauthorized (the overall timeout ended attempt 11)")
    assert failure.go_string() == f"rpc error: code = Unknown desc = {failure.error.details} ({failure.note})"
    assert Failure(REFUSED).short_reason() == REFUSED.short_reason() and Failure(REFUSED).go_string() == (
        REFUSED.go_string()
    )


def test_redact() -> None:
    assert redact("auth p4ss and p4ss", ["p4ss", ""]) == "auth <redacted> and <redacted>"


def report(results: list[ImageResult], complete: bool = True) -> RunReport:
    return RunReport("node-1", {r.image: r for r in results}, sum(r.attempts for r in results), 4.2149, complete)


def test_summary_fields() -> None:
    ok = ImageResult("r/app:v1", "ok", attempts=3, size_bytes=100)
    skipped = ImageResult("r/here:v1", "skipped")
    failed = ImageResult("r/missing:v1", "failed", attempts=1, error=PullError("NOT_FOUND", "not found"))
    data = json.loads(build_summary(report([ok, skipped, failed])))
    assert data == {
        "v": 1,
        "node": "node-1",
        "complete": True,
        "ok": 1,
        "failed": 1,
        "skipped": 1,
        "bytes": 100,
        "seconds": 4.21,
        "attempts": 4,
        "errors": {"r/missing:v1": "not_found: not found"},
        "retries": {"r/app:v1": 3},
        "truncated": False,
    }


def test_summary_names_the_reason_the_deadline_did_not_cause() -> None:
    cut = ImageResult(
        "r/private:v1", "failed", attempts=3, ended_by_deadline=True, history=history_of("refused", "refused", "cut")
    )
    interrupted = ImageResult("r/other:v1", "failed", attempts=2, history=history_of("refused", "cut"),
                              error=PullError("UNAVAILABLE", "CRI runtime gone"))  # a failure outside the attempts
    data = json.loads(build_summary(report([cut, interrupted], complete=False)))
    assert data["errors"] == {
        "r/private:v1": f"unauthorized: {REFUSED.details} (the overall timeout ended attempt 3)",
        "r/other:v1": "unavailable: CRI runtime gone",
    }


def test_summary_truncates_retries_first_then_errors_and_keeps_counts() -> None:
    results = [ImageResult(f"registry.example.com/team/image-{i:04d}:v1", "ok", attempts=2) for i in range(200)]
    raw = build_summary(report(results))
    data = json.loads(raw)
    assert len(raw) <= 4096 and data["truncated"] is True
    assert data["ok"] == 200 and 0 < len(data["retries"]) < 200

    failing = [
        ImageResult(
            f"registry.example.com/team/image-{i:04d}:v1",
            "failed",
            attempts=5,
            error=PullError("UNAVAILABLE", "connection refused \u00fc" * 20),
        )
        for i in range(300)
    ]
    raw = build_summary(report(failing, complete=False))
    data = json.loads(raw)
    assert len(raw) <= 4096 and data["truncated"] is True
    assert data["retries"] == {} and 0 < len(data["errors"]) < 300
    assert data["failed"] == 300 and data["attempts"] == 1500 and data["complete"] is False


DENIED = (
    'node labels: failed to patch node node-1: 403 Forbidden: nodes "node-1" is forbidden: User '
    '"system:serviceaccount:prefetch:imgs" cannot patch resource "nodes" in API group "" at the cluster scope'
)


def test_warnings_are_added_only_when_a_post_run_step_failed() -> None:
    ok = ImageResult("r/app:v1", "ok", attempts=1, size_bytes=100)
    without = build_summary(report([ok]))
    assert "warnings" not in json.loads(without), "a run without warnings keeps the summary it always had"
    assert build_summary(report([ok]), warnings=[]) == without
    data = json.loads(build_summary(report([ok]), warnings=[DENIED, "metrics submission: gave\nup"]))
    assert data["warnings"] == [DENIED, "metrics submission: gave up"]  # one line each
    assert {k: v for k, v in data.items() if k != "warnings"} == json.loads(without)


def test_warnings_are_bounded() -> None:
    ok = ImageResult("r/app:v1", "ok")
    data = json.loads(build_summary(report([ok]), warnings=["x" * 5000] + [f"step {i}: failed" for i in range(20)]))
    assert len(data["warnings"]) == MAX_WARNINGS and data["truncated"] is True
    assert len(data["warnings"][0]) == WARNING_LIMIT and data["warnings"][0].endswith("\u2026")


def test_warnings_count_into_the_limit_and_outlast_errors() -> None:
    failing = [
        ImageResult(f"registry.example.com/team/image-{i:04d}:v1", "failed", attempts=2,
                    error=PullError("UNAVAILABLE", "connection refused"))
        for i in range(300)
    ]
    raw = build_summary(report(failing), warnings=[DENIED])
    data = json.loads(raw)
    assert len(raw) <= 4096 and data["truncated"] is True
    assert data["warnings"] == [DENIED], "the few warning lines stay; retries and errors make room for them"
    assert data["retries"] == {} and 0 < len(data["errors"]) < 300 and data["failed"] == 300
    assert len(build_summary(report(failing), limit=900, warnings=[DENIED] * MAX_WARNINGS)) <= 900


def test_termination_log_skipped_without_directory(tmp_path: Path) -> None:
    log = configure_logging(False, "text", io.StringIO())
    assert not write_termination_log(str(tmp_path / "missing" / "termination-log"), b"{}", log)
    target = tmp_path / "termination-log"
    assert write_termination_log(str(target), b'{"v":1}', log)
    assert target.read_bytes() == b'{"v":1}'


def test_fatal_summary_is_one_line_and_fits() -> None:
    summary = json.loads(build_fatal_summary("node-1", "bad\nthing  here", seconds=0.123))
    assert summary == {
        "v": 1,
        "node": "node-1",
        "complete": False,
        "ok": 0,
        "failed": 0,
        "skipped": 0,
        "bytes": 0,
        "seconds": 0.12,
        "attempts": 0,
        "errors": {},
        "retries": {},
        "truncated": False,
        "fatal": "bad thing here",
    }
    long = build_fatal_summary("node-1", "é" * 5000)
    assert len(long) <= 4096 and json.loads(long)["fatal"].endswith("\u2026")
