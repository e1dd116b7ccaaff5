"""Error classification, redaction and the termination summary (with truncation to 4096 bytes)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from image_prefetcher.classify import Action, ErrorClass, PullError, classify, decide, redact
from image_prefetcher.engine import ImageResult
from image_prefetcher.logs import configure_logging
from image_prefetcher.summary import RunReport, build_fatal_summary, build_summary, write_termination_log

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


@pytest.mark.parametrize(("code", "details", "expected"), CONTAINERD_ERRORS)
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
