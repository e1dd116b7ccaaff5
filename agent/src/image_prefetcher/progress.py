"""`--progress-interval`: the agent publishes its progress on its own pod while it pulls, for the `rollout` module.

The annotation `prefetch.stackrox.io/progress` holds one compact JSON object (keys sorted):
`{"done":D,"failed":F,"ok":O,"pulling":[{"attempt":K,"image":REF,"since":UNIX_S},...],"skipped":S,"t":UNIX_S,
"total":N,"v":1}`. `total` counts the unique images, `done` = ok + failed + skipped; `pulling` lists at most 3 images
whose PullImage call is in flight right now, longest-running first (by when the image's first attempt started,
`since`, Unix seconds to 0.1 s), with the number of the attempt in flight. An image waiting for a pull slot, for a
registry's rate-limit gate or sleeping between retries is not listed. `t` is the write's Unix time, in seconds.

Rate limit: nothing is written during the first interval of the pull phase; then at each tick the annotation is
written only when something changed since the last successful write (the counts, or the image and attempt of the
first `pulling` entry), so a node writes at most pull seconds / interval times. There is no final write: the
termination summary covers the end.

Each write is a JSON merge patch of the pod with a deadline of min(5 s, interval), never past the overall deadline.
A 401/403/404 answer (the token, RBAC or the pod's namespace said no) is logged once and ends the publishing for the
run; any other failure is logged and the next tick tries again. The publisher never holds up or fails the pulls.

The pure parts (`progress_value`, `change_key`, `patch_body`) and `ProgressPublisher` (an injected
`patch` and clocks) are tested without a server; `pod_patcher` is the thin I/O through InClusterConfig.request.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from image_prefetcher.engine import Deadline, ImageResult
from image_prefetcher.incluster import ApiResponse, InClusterError, load_incluster_config
from image_prefetcher.logs import Logger, Seconds
from image_prefetcher.nodelabels import ApiClient, status_line

ANNOTATION = "prefetch.stackrox.io/progress"
VERSION = 1
MAX_PULLING = 3
MAX_PATCH_TIMEOUT_S = 5.0
MERGE_PATCH = "application/merge-patch+json"
# The answer will not change within the run: the token or RBAC said no (401/403), or the pod is not where we
# looked (404: POD_NAME or POD_NAMESPACE wrong).
FINAL_STATUSES = frozenset({401, 403, 404})
RETRYING = "progress not published, trying again at the next tick"
POD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}"

# patch(body, timeout) -> the API server's answer; raises OSError, InClusterError (or anything) when none came.
Patch = Callable[[bytes, float], Awaitable[ApiResponse]]
ChangeKey = tuple[int, int, int, int, str | None, int]


class PodApi(ApiClient, Protocol):
    """What publishing needs of the in-cluster config (InClusterConfig): requests, and the service account's
    namespace."""

    @property
    def namespace(self) -> str | None: ...


def progress_value(results: Iterable[ImageResult], now: float) -> dict[str, Any]:
    """The annotation's object for these results (one per unique image) at Unix time `now`."""
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    total = 0
    pulling: list[ImageResult] = []
    for result in results:
        total += 1
        if result.outcome in counts:
            counts[result.outcome] += 1
        elif result.in_flight > 0:
            pulling.append(result)
    pulling.sort(key=lambda r: (r.first_attempt_at if r.first_attempt_at is not None else now, r.image))
    return {
        "v": VERSION,
        "total": total,
        "done": counts["ok"] + counts["failed"] + counts["skipped"],
        **counts,
        "pulling": [
            {
                "image": r.image,
                "since": round(r.first_attempt_at if r.first_attempt_at is not None else now, 1),
                "attempt": r.in_flight,
            }
            for r in pulling[:MAX_PULLING]
        ],
        "t": int(now),
    }


def encode_value(value: Mapping[str, Any]) -> str:
    """The annotation's value: compact JSON, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def patch_body(value: Mapping[str, Any]) -> bytes:
    """The merge patch `{"metadata":{"annotations":{"prefetch.stackrox.io/progress":"<value>"}}}`."""
    patch = {"metadata": {"annotations": {ANNOTATION: encode_value(value)}}}
    return json.dumps(patch, separators=(",", ":")).encode()


def change_key(value: Mapping[str, Any]) -> ChangeKey:
    """What a new write must differ in: the counts and the image and attempt of the first `pulling` entry."""
    pulling = value["pulling"]
    image: str | None = pulling[0]["image"] if pulling else None
    attempt: int = pulling[0]["attempt"] if pulling else 0
    return (value["done"], value["ok"], value["failed"], value["skipped"], image, attempt)


class ProgressPublisher:
    """Writes the progress every `interval` seconds while `run()` runs (cancel it when the pull phase ends).

    `snapshot()` gives the current results (one per unique image); `patch` does the I/O; `wall` is the Unix clock of
    the values; the ticks follow the event loop's clock (so tests can run it on a virtual clock)."""

    def __init__(
        self,
        interval: float,
        snapshot: Callable[[], Iterable[ImageResult]],
        patch: Patch,
        log: Logger,
        deadline: Deadline | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("the progress interval must be greater than 0")
        self.interval = interval
        self.snapshot = snapshot
        self.patch = patch
        self.log = log
        self.deadline = deadline
        self.wall = wall
        self.writes = 0  # successful PATCHes
        self.stopped = False  # a final answer (401/403/404) ended the publishing
        self._last: ChangeKey | None = None

    async def run(self) -> None:
        """Tick every interval from now (the first tick one interval from now) until cancelled or stopped. A tick
        that comes late (a slow PATCH) skips the ticks it missed instead of writing them in a burst."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval
        while not self.stopped:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            await self.tick()
            now = loop.time()
            next_tick += self.interval
            if next_tick < now:
                missed = int((now - next_tick) // self.interval) + 1
                next_tick += missed * self.interval

    async def tick(self) -> None:
        """One tick: write when something changed. Never raises (but CancelledError)."""
        if self.stopped:
            return
        try:
            await self._tick()
        except Exception as err:  # publishing must never fail the run
            self.log.warn("progress not published", error=str(err) or type(err).__name__)

    async def _tick(self) -> None:
        value = progress_value(self.snapshot(), self.wall())
        key = change_key(value)
        if key == self._last:  # nothing changed since the last write (None before the first)
            return
        timeout = min(MAX_PATCH_TIMEOUT_S, self.interval)
        if self.deadline is not None:
            timeout = min(timeout, self.deadline.remaining())
            if timeout <= 0:
                return  # past the overall deadline: the pull phase is ending, the summary says the rest
        try:
            response = await asyncio.wait_for(self.patch(patch_body(value), timeout), timeout)
        except asyncio.TimeoutError:
            self.log.warn(RETRYING, error=f"timed out after {Seconds(timeout)}")
            return
        except (OSError, InClusterError) as err:
            self.log.warn(RETRYING, error=str(err))
            return
        if 200 <= response.status < 300:
            self.writes += 1
            self._last = key
            self.log.debug("progress written", done=value["done"], total=value["total"])
            return
        error = status_line(response)
        if response.status in FINAL_STATUSES:
            self.stopped = True
            self.log.warn("progress not published, not trying again in this run", error=error)
            return
        self.log.warn(RETRYING, error=error)


def pod_patcher(config: ApiClient, namespace: str, pod: str) -> Patch:
    """The PATCH of this pod through the in-cluster config (a blocking request, so in a thread)."""
    path = POD_PATH.format(namespace=quote(namespace, safe=""), name=quote(pod, safe=""))
    headers = {"Content-Type": MERGE_PATCH}

    async def patch(body: bytes, timeout: float) -> ApiResponse:
        return await asyncio.to_thread(config.request, "PATCH", path, body, headers, timeout)

    return patch


def pod_identity(
    log: Logger,
    environ: Mapping[str, str] | None = None,
    load_config: Callable[[Mapping[str, str]], PodApi] | None = None,
) -> tuple[PodApi, str, str] | None:
    """(config, namespace, pod name) of this pod, or None (logged once) when there is no way to write to it.

    The pod is $POD_NAME, else the hostname (a pod's hostname is its name); the namespace $POD_NAMESPACE, else the
    service account's."""
    env = os.environ if environ is None else environ
    try:
        config: PodApi = (load_config or load_incluster_config)(env)
    except InClusterError as err:
        log.info("no Kubernetes client, not publishing the progress", error=str(err))
        return None
    namespace = env.get("POD_NAMESPACE", "") or config.namespace or ""
    if not namespace:
        log.info("no namespace for this pod (POD_NAMESPACE), not publishing the progress")
        return None
    pod = env.get("POD_NAME", "") or socket.gethostname()
    log.info("publishing the progress on this pod", pod=pod, namespace=namespace, annotation=ANNOTATION)
    return config, namespace, pod


def publisher_for(
    interval: float,
    snapshot: Callable[[], Iterable[ImageResult]],
    log: Logger,
    deadline: Deadline | None = None,
    environ: Mapping[str, str] | None = None,
    load_config: Callable[[Mapping[str, str]], PodApi] | None = None,
) -> ProgressPublisher | None:
    """The publisher for this pod, or None (logged) when it cannot write to its pod."""
    identity = pod_identity(log, environ, load_config)
    if identity is None:
        return None
    config, namespace, pod = identity
    return ProgressPublisher(interval, snapshot, pod_patcher(config, namespace, pod), log, deadline)
