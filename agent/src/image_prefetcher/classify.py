"""Pull error classification (pure): what a failed PullImage means, what the engine does next, and which error an
image that failed is reported with (`final_failure`)."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Go's codes.Code.String() names, so error strings read like upstream's `rpc error: code = NotFound desc = ...`.
_GO_CODE_NAMES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}

DETAIL_LIMIT = 160
_RUNTIME_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})
REDACTED = "<redacted>"


class ErrorClass(str, enum.Enum):
    NOT_FOUND = "not_found"
    INVALID_REFERENCE = "invalid_reference"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    ERROR = "error"


class Action(enum.Enum):
    FINAL = "final"  # the image has failed for good
    NEXT_CREDENTIAL = "next_credential"  # try the image's next credential at once
    RETRY = "retry"  # sleep the retry delay, then try again


# containerd: `failed to parse image reference`, `invalid reference format`; CRI-O (containers/image) wraps the
# distribution/reference errors: `cannot parse input: "...": repository name must be lowercase` (code Unknown).
_INVALID_REFERENCE = re.compile(
    r"invalid reference format|failed to parse image reference|cannot parse input|repository name must"
    r"|invalid (tag|digest) format",
    re.IGNORECASE,
)
_UNAUTHORIZED = re.compile(
    r"\b40[13]\b|unauthori[sz]ed|forbidden|authorization failed|authentication required|access[^.]{0,40}denied",
    re.IGNORECASE,
)
# CRI-O answers a missing image with code Unknown and the registry's words (containerd says NotFound):
# `reading manifest v1 in registry.test:5000/it/missing: manifest unknown` (CRI-O 1.34, containers/image 5.35).
_NOT_FOUND = re.compile(r"manifest unknown|name unknown|repository name not known to registry", re.IGNORECASE)
# A registry's 429 Too Many Requests (Docker Hub's and Quay's `toomanyrequests`) or 503 Service Unavailable, as
# containerd (`...: 429 Too Many Requests`) and CRI-O (`received unexpected HTTP status: 503 Service Unavailable`,
# `toomanyrequests: ...`) pass them on. The bare numbers only as a status: not inside a digest, a port or a path.
_RATE_LIMITED = re.compile(
    r"(?<![\w:./-])(?:429|503)(?![\w./:-])|too ?many ?requests|service unavailable|rate[- ]?limit(?:ed)?\b",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(r"connection refused|no such host|connection reset|unexpected EOF|broken pipe", re.IGNORECASE)


@dataclass(frozen=True)
class PullError:
    """A failed CRI call: gRPC status code name (grpc.StatusCode.X.name) and details."""

    code: str
    details: str

    def go_string(self) -> str:
        """Go's status error text: `rpc error: code = NotFound desc = ...` (used in logs and metrics)."""
        return f"rpc error: code = {_GO_CODE_NAMES.get(self.code, self.code)} desc = {self.details}"

    @property
    def error_class(self) -> ErrorClass:
        return classify(self.code, self.details)

    def short_reason(self) -> str:
        """`<class>: <detail>` with the detail cut to 160 characters (its middle goes), for the result summary."""
        return f"{self.error_class.value}: {_shorten(self.details, DETAIL_LIMIT)}"


def _shorten(text: str, limit: int) -> str:
    """At most `limit` characters; a longer text loses its middle, because runtimes put the context first and the
    cause last (`failed to pull and unpack image "x": ...: 401 Unauthorized`)."""
    if len(text) <= limit:
        return text
    kept = limit - 3
    head = kept // 3
    return text[:head] + "..." + text[len(text) - (kept - head) :]


def shorten_detail(text: str) -> str:
    """A detail cut to the summary's DETAIL_LIMIT (its middle goes)."""
    return _shorten(text, DETAIL_LIMIT)


def classify(code: str, details: str) -> ErrorClass:
    """Map a gRPC status (as containerd/CRI-O report pull failures) to an error class."""
    if _INVALID_REFERENCE.search(details):
        return ErrorClass.INVALID_REFERENCE
    if code == "NOT_FOUND":
        return ErrorClass.NOT_FOUND
    # Before the denials: Docker Hub's limit text says "unauthenticated pull rate limit" and "authenticating".
    # Not for the runtime's own codes (CRI unreachable, our deadline, cancellation): those are no registry answer.
    if code not in _RUNTIME_CODES and _RATE_LIMITED.search(details):
        return ErrorClass.RATE_LIMITED
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or _UNAUTHORIZED.search(details):
        return ErrorClass.UNAUTHORIZED
    if _NOT_FOUND.search(details):
        return ErrorClass.NOT_FOUND
    if code == "DEADLINE_EXCEEDED":
        return ErrorClass.TIMEOUT
    if code == "CANCELLED":
        return ErrorClass.CANCELLED
    if code == "UNAVAILABLE" or _UNREACHABLE.search(details):
        return ErrorClass.UNAVAILABLE
    return ErrorClass.ERROR


def decide(error_class: ErrorClass, *, not_found_fails: bool, has_next_credential: bool) -> Action:
    """What to do after a failed attempt.

    An invalid reference never gets better. A credential that is refused (or, for registries that hide private
    repositories, answers NOT_FOUND) gives way to the image's next credential; once none is left the image is
    retried from its first credential after the delay, except NOT_FOUND under `--not-found=fail`.
    """
    if error_class is ErrorClass.INVALID_REFERENCE:
        return Action.FINAL
    if error_class in (ErrorClass.UNAUTHORIZED, ErrorClass.NOT_FOUND) and has_next_credential:
        return Action.NEXT_CREDENTIAL
    if error_class is ErrorClass.NOT_FOUND and not_found_fails:
        return Action.FINAL
    return Action.RETRY


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret that occurs in text (defence in depth: CRI errors should not echo passwords)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class AttemptRecord:
    """One PullImage attempt of an image, as the reason rule (`final_failure`) sees it."""

    error: PullError | None  # None: the attempt succeeded
    # The attempt ran out of time only because the overall deadline had shortened its RPC deadline below the
    # attempt timeout: its DeadlineExceeded says nothing about the registry.
    cut_by_deadline: bool = False


@dataclass(frozen=True)
class Failure:
    """What a failed image is reported with: the error that explains it, and a note when the deadline cut it."""

    error: PullError
    note: str = ""  # e.g. "the overall timeout ended attempt 11"

    @property
    def error_class(self) -> ErrorClass:
        return self.error.error_class

    def short_reason(self) -> str:
        """`<class>: <detail> (<note>)`, the detail cut so that detail and note stay within 160 characters."""
        if not self.note:
            return self.error.short_reason()
        suffix = f" ({self.note})"
        return f"{self.error_class.value}: {_shorten(self.error.details, DETAIL_LIMIT - len(suffix))}{suffix}"

    def go_string(self) -> str:
        """Go's status error text plus the note (the log's final line and the cut attempt's metric)."""
        return self.error.go_string() + (f" ({self.note})" if self.note else "")


def cut_note(attempt_number: int) -> str:
    return f"the overall timeout ended attempt {attempt_number}"


def final_failure(history: Sequence[AttemptRecord]) -> Failure | None:
    """The failure an image is reported with, from its attempts in order; None when it has no failed last attempt.

    The last attempt's error, unless the overall deadline cut that attempt short: then the last error that the cut
    did not cause (the ten `401 Unauthorized` before it, say), with the note that the overall timeout ended the
    last attempt. Only when every attempt was cut is the image reported as the cut's own timeout.
    """
    if not history:
        return None
    last = history[-1]
    if last.error is None:
        return None
    if not last.cut_by_deadline:
        return Failure(last.error)
    explaining = next((r.error for r in reversed(history) if r.error is not None and not r.cut_by_deadline), None)
    return Failure(explaining or last.error, cut_note(len(history)))
