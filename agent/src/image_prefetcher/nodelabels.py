"""Node label `image-prefetcher.stackrox.io/<sanitised INSTANCE_NAME>` = `succeeded|failed` after a run.

As upstream (BEHAVIOR.md §5): strategic-merge PATCH of `/api/v1/nodes/$NODE_NAME` with in-cluster credentials, retried
like client-go's `retry.OnError(retry.DefaultBackoff, ...)`: 4 attempts, sleeps 10/50/250 ms plus up to 10 % jitter,
on any error but a denial (below). Skips (no NODE_NAME, no INSTANCE_NAME) are logged, never fatal; a failure (no
in-cluster config, the PATCH failed) is logged too and returned as one line for the termination summary's `warnings`.

Differences from upstream:
* Labelling has its own deadline (LABEL_DEADLINE_S) instead of the run's overall deadline, so the label is written even
  when the run hit `--overall-timeout` (upstream's PATCH then fails and leaves a stale label).
* A run that did not complete (interrupted by SIGTERM/SIGINT, or overall timeout before every image ended) writes
  `failed`: a `succeeded` from an earlier run must not survive a run that did not finish. We write `failed` rather than
  removing the label so that "the prefetcher ran here and did not finish" stays visible next to other nodes' values.
* A denial (401 Unauthorized, 403 Forbidden: the token or RBAC said no) ends the retries at once: asking again within
  a few hundred milliseconds gets the same answer, and the node keeps the label it had.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from image_prefetcher.incluster import ApiResponse, InClusterError, load_incluster_config
from image_prefetcher.logs import get_logger

LABEL_PREFIX = "image-prefetcher.stackrox.io/"
DEFAULT_LABEL_NAME = "prefetcher"
LABEL_DEADLINE_S = 30.0
# client-go retry.DefaultBackoff: Steps 4, Duration 10ms, Factor 5.0, Jitter 0.1.
BACKOFF_STEPS = 4
BACKOFF_INITIAL_S = 0.010
BACKOFF_FACTOR = 5.0
BACKOFF_JITTER = 0.1
PER_REQUEST_TIMEOUT_S = 10.0
# The API server's answer to who we are (the token) or what we may do (RBAC): the same on every retry.
DENIED_STATUSES = frozenset({401, 403})

_INVALID_RUN = re.compile(r"[^a-zA-Z0-9._-]+")

log = get_logger()


def sanitize_label_name(name: str) -> str:
    """Upstream's sanitizeLabelName: collapse invalid runs to `-`, cut to 63 bytes, trim `._-`, default `prefetcher`."""
    cleaned = _INVALID_RUN.sub("-", name)[:63]  # only ASCII is left, so 63 characters are 63 bytes
    return cleaned.strip("._-") or DEFAULT_LABEL_NAME


def label_key(instance_name: str) -> str:
    return LABEL_PREFIX + sanitize_label_name(instance_name)


def label_value(results: Mapping[str, bool], complete: bool = True) -> str:
    """`succeeded` iff the run completed and every image ended pulled (also when there are no images)."""
    return "succeeded" if complete and all(results.values()) else "failed"


def patch_body(labels: Mapping[str, str]) -> bytes:
    """The exact strategic-merge patch upstream sends: `{"metadata":{"labels":{"<key>":"<value>"}}}`."""
    return json.dumps({"metadata": {"labels": dict(labels)}}, separators=(",", ":")).encode()


def patch_headers() -> dict[str, str]:
    return {"Content-Type": "application/strategic-merge-patch+json"}


def backoff_delays(rand: Callable[[], float] = random.random) -> list[float]:
    """Sleeps between the 4 attempts of client-go's DefaultBackoff: 10 ms, 50 ms, 250 ms, each + 0..10 % jitter."""
    delays = []
    base = BACKOFF_INITIAL_S
    for _ in range(BACKOFF_STEPS - 1):
        delays.append(base * (1 + BACKOFF_JITTER * rand()))
        base *= BACKOFF_FACTOR
    return delays


def _go_map(labels: Mapping[str, str]) -> str:
    # Upstream logs the label map with Go's %v: map[key:value].
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())) + "]"


class LabelError(Exception):
    """`str()` is the text upstream logs (the API's Status message); `detail` says the HTTP status too, for the
    summary's warnings (`403 Forbidden: nodes "n" is forbidden: ...`); `status` is None when no answer came."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail if detail is not None else message

    @property
    def denied(self) -> bool:
        return self.status in DENIED_STATUSES


@dataclass(frozen=True)
class LabelOutcome:
    """What labelling did: `written`, or not and why (`problem`: one line, no secrets; None for a deliberate skip)."""

    written: bool
    problem: str | None = None


def status_text(status: int) -> str:
    """`403 Forbidden`, as Go's net/http prints a status."""
    return f"{status} {http.client.responses.get(status, '')}".rstrip()


def status_line(response: ApiResponse) -> str:
    """A failed answer in one line, its status first (`403 Forbidden: nodes "n1" is forbidden: ...`), without saying
    the status twice when the server's message already starts with it."""
    text = response.error_text()
    said = status_text(response.status)
    return text if said in text else f"{said}: {text}"


class ApiClient(Protocol):
    """What labelling needs from the in-cluster config (InClusterConfig; a fake in unit tests)."""

    @property
    def server(self) -> str: ...

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> ApiResponse: ...


def _patch_once(config: ApiClient, node: str, body: bytes, timeout: float) -> None:
    try:
        response: ApiResponse = config.request(
            "PATCH", f"/api/v1/nodes/{quote(node, safe='')}", body, patch_headers(), timeout
        )
    except InClusterError as err:
        raise LabelError(str(err)) from None
    except OSError as err:  # includes ssl.SSLError and socket timeouts
        raise LabelError(f"PATCH {config.server}/api/v1/nodes/{node}: {err}") from None
    if not 200 <= response.status < 300:
        raise LabelError(response.error_text(), response.status, status_line(response))


async def patch_node_labels(
    config: ApiClient,
    node: str,
    labels: Mapping[str, str],
    *,
    deadline_s: float = LABEL_DEADLINE_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> None:
    """PATCH the labels with DefaultBackoff retries within `deadline_s`, none after a denial; raises LabelError with
    the last error."""
    body = patch_body(labels)
    end = time.monotonic() + deadline_s
    delays = backoff_delays(rand)
    last: LabelError | None = None
    for attempt in range(BACKOFF_STEPS):
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        try:
            await asyncio.to_thread(_patch_once, config, node, body, min(PER_REQUEST_TIMEOUT_S, remaining))
            return
        except LabelError as err:
            last = err
            log.debug("node label patch failed", node=node, attempt=attempt + 1, error=str(err))
            if err.denied:
                break
        if attempt < len(delays):
            await sleep(min(delays[attempt], max(0.0, end - time.monotonic())))
    prefix = f"failed to patch node {node}: "
    if last is None:
        raise LabelError(prefix + "deadline exceeded")
    raise LabelError(prefix + str(last), last.status, prefix + last.detail)


async def update_node_labels(
    results: Mapping[str, bool],
    complete: bool = True,
    *,
    environ: Mapping[str, str] | None = None,
    load_config: Callable[[], ApiClient] | None = None,
    deadline_s: float = LABEL_DEADLINE_S,
) -> LabelOutcome:
    """Label this node with the run's outcome. Every failure is logged and returned as the outcome's `problem`."""
    env = os.environ if environ is None else environ
    node = env.get("NODE_NAME", "")
    if not node:
        log.info("NODE_NAME environment variable not set, skipping node labeling")
        return LabelOutcome(False)
    instance = env.get("INSTANCE_NAME", "")
    if not instance:
        log.info("INSTANCE_NAME environment variable not set, skipping node labeling")
        return LabelOutcome(False)
    try:
        config: ApiClient = load_config() if load_config is not None else load_incluster_config(env)
    except InClusterError as err:
        log.warn("failed to create Kubernetes client, skipping node labeling", error=str(err))
        return LabelOutcome(False, f"failed to create Kubernetes client, node {node} not labelled: {err}")
    log.info("Kubernetes client initialized for node labeling", node=node, instance=instance)
    labels = {label_key(instance): label_value(results, complete)}
    log.debug("Setting prefetch status node labels", labels=_go_map(labels))
    try:
        await patch_node_labels(config, node, labels, deadline_s=deadline_s)
    except LabelError as err:
        log.error("failed to update node labels", error=f"failed to update node labels: {err}")
        return LabelOutcome(False, err.detail)
    log.info("Successfully updated node labels", node=node, labels=_go_map(labels))
    return LabelOutcome(True)
