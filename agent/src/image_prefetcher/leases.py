"""`fetch --parallel-nodes N`: a cluster-wide counting semaphore of `coordination.k8s.io/v1` Leases.

N Leases `<instance>-slot-<i>` (i = 0..N-1) in the instance's namespace; a node pulls only while it holds one
(DESIGN.md "the node-slot semaphore" is the contract; the rules in short):

* Take: a slot is takeable when its Lease does not exist (create), has no holder (update), is held by this node
  already (a restarted pod of the same node: update), or is expired (update). Every write is a create or an update
  carrying the resourceVersion that was read, so two nodes racing for one slot cannot both win: the loser gets 409
  Conflict (or AlreadyExists) and tries the next candidate, then polls again.
* Expiry is judged on this node's own clock, as client-go's leader election does: a Lease whose record (its
  resourceVersion) has not changed for its `leaseDurationSeconds` while we watched it is expired. Other nodes' wall
  clocks are never trusted, so clock skew cannot make a live holder look dead; the price is that a node that starts
  waiting watches a dead holder's slot for one lease duration before taking it.
* Renew every `leaseDurationSeconds / 4` (so two renewals can fail before the lease runs out); a failed renewal is
  retried every second until the lease would run out on our clock; a slot taken over meanwhile (409 and another
  holder) or not renewable in time is *lost*: the pulls go on (their work is not thrown away), a warning says so.
* Release when the pulls end, also after SIGTERM/SIGINT or cancellation: holder cleared, annotation
  `prefetch.stackrox.io/released-by` = this node (bounded by RELEASE_TIMEOUT_S; a node that cannot release frees its
  slot after the lease duration anyway).
* Fairness: a run takes a slot at most once and gives it back for good, so a waiter can lose at most as many races
  as there are other nodes; every waiter polls at the same jittered interval (no back-off that would favour
  newcomers) and tries the takeable slots in random order. A free slot released by this very node (a crash-looping
  or restarted pod) is left to the others for one lease duration after its release.
* Wake on a release: between tries a waiter watches the Leases (from its LIST's resourceVersion) and tries again
  as soon as one frees up, else after WATCH_POLLS poll intervals; without `watch` permission it only polls.
* API server unreachable (no answer, 429, 5xx) for UNREACHABLE bound (`--lease-unreachable-timeout`, default 1m)
  in a row while waiting, or denied outright (401/403/404: RBAC or namespace missing): the node pulls without a slot
  and says so in a warning (summary `warnings`). A cap that blocks every node while the API server is down would
  turn an API outage into a prefetch outage; the warning makes the lifted cap visible in `rollout`.
* The wait counts against `--overall-timeout` (the caller's Deadline) and is reported (`waited` in the summary).
* `--canary`: one more Lease, `<instance>-canary`; its holder pulls alone first and, once its run completed,
  publishes its permanent failures on it (`canary_*` below); later nodes of the same list skip those images.

Pure decision logic (functions over Lease dicts and clock readings) is kept apart from the I/O (`NodeSlot`, the
async adapter, over a `LeaseApi`; `HttpLeaseApi` is the real one), so the unit tests drive it with a fake API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Protocol
from urllib.parse import quote

from image_prefetcher.incluster import ApiResponse, InClusterError, StreamRefused
from image_prefetcher.logs import Logger, Seconds

Lease = dict[str, Any]
Connections = list[http.client.HTTPConnection]  # (a name: HttpLeaseApi.list shadows `list` in its class)

LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
RELEASED_BY = "prefetch.stackrox.io/released-by"
DEFAULT_LEASE_DURATION_S = 30
DEFAULT_UNREACHABLE_S = 60.0
POLL_INTERVAL_S = 3.0  # each waiter's LIST rate: waiting nodes / 3 requests per second
# While the Lease API can be watched, a waiter lists again when a Lease frees up (a release or a deletion, seen on a
# watch) or after WATCH_POLLS poll intervals: the watch makes a hand-over take a round trip instead of half a poll
# interval, and the LIST (which a dead holder's expiry needs: see Observations) is needed less often.
WATCH_POLLS = 3
FREED_JITTER_S = 0.2  # after a Lease frees up, each waiter lists within this: not all in the same millisecond
WATCH_SLACK_S = 5.0  # the server ends a watch at its timeoutSeconds; the socket waits this much longer
POLL_JITTER = 0.5  # a poll waits POLL_INTERVAL_S * (1 +- POLL_JITTER): waiters do not poll in lock-step
REQUEST_TIMEOUT_S = 10.0
RENEW_RETRY_S = 1.0
RELEASE_TIMEOUT_S = 3.0
CALL_SLACK_S = 0.5
MAX_CONFLICT_RETRIES = 3
# Kubernetes' transient answers: the server did not act, asking again later may work.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
LABELS = {"app.kubernetes.io/name": "image-prefetcher", "app.kubernetes.io/managed-by": "stackrox.prefetch"}


@dataclass(frozen=True)
class SlotConfig:
    namespace: str
    instance: str
    holder: str  # this node's name (holderIdentity)
    slots: int  # N of --parallel-nodes, > 0
    lease_duration_s: int = DEFAULT_LEASE_DURATION_S
    unreachable_bound_s: float = DEFAULT_UNREACHABLE_S
    poll_interval_s: float = POLL_INTERVAL_S
    canary: bool = False  # --canary: the first node pulls alone and publishes its permanent failures
    list_hash: str = ""  # `list_fingerprint` of this run's list: a canary's findings hold for that list only

    def slot_names(self) -> list[str]:
        return [slot_name(self.instance, i) for i in range(self.slots)]

    @property
    def canary_name(self) -> str:
        return f"{self.instance}-canary"

    @property
    def renew_interval_s(self) -> float:
        return self.lease_duration_s / 4  # < duration / 3: two renewals may fail before the lease runs out


def slot_name(instance: str, index: int) -> str:
    return f"{instance}-slot-{index}"


# --- pure logic -------------------------------------------------------------------------------------------------------


def format_micro_time(wall: float) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _spec(lease: Lease) -> dict[str, Any]:
    spec = lease.get("spec")
    return spec if isinstance(spec, dict) else {}


def _metadata(lease: Lease) -> dict[str, Any]:
    metadata = lease.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def holder_of(lease: Lease) -> str:
    holder = _spec(lease).get("holderIdentity")
    return holder if isinstance(holder, str) else ""


def resource_version(lease: Lease) -> str:
    return str(_metadata(lease).get("resourceVersion") or "")


def annotations_of(lease: Lease) -> dict[str, str]:
    annotations = _metadata(lease).get("annotations")
    return dict(annotations) if isinstance(annotations, dict) else {}


def lease_duration_of(lease: Lease, default: int) -> int:
    value = _spec(lease).get("leaseDurationSeconds")
    return value if isinstance(value, int) and value > 0 else default


@dataclass
class Observations:
    """Per slot name, the resourceVersion last seen and when (on our monotonic clock) it was first seen."""

    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def observe(self, leases: Mapping[str, Lease], now: float) -> None:
        for name, lease in leases.items():
            version = resource_version(lease)
            if self.seen.get(name, ("", 0.0))[0] != version:
                self.seen[name] = (version, now)
        for name in list(self.seen):
            if name not in leases:
                del self.seen[name]

    def unchanged_for(self, name: str, now: float) -> float:
        """Seconds the slot's record has stayed the same while we watched (0 when never seen)."""
        entry = self.seen.get(name)
        return now - entry[1] if entry is not None else 0.0


SlotState = Literal["absent", "mine", "free", "expired", "held", "cooling"]
TAKEABLE: frozenset[SlotState] = frozenset({"absent", "mine", "free", "expired"})


def slot_state(config: SlotConfig, lease: Lease | None, unchanged_for: float, now_wall: float) -> SlotState:
    """What a slot is to this node. `cooling`: free, but this node released it less than one lease duration ago
    (by its renewTime, which this node's own clock wrote), so it is left to the other waiters for now."""
    if lease is None:
        return "absent"
    holder = holder_of(lease)
    if holder == config.holder:
        return "mine"
    if not holder:
        released = parse_micro_time(_spec(lease).get("renewTime"))
        own_release = annotations_of(lease).get(RELEASED_BY) == config.holder
        if own_release and released is not None and now_wall - released < config.lease_duration_s:
            return "cooling"
        return "free"
    if unchanged_for >= lease_duration_of(lease, config.lease_duration_s):
        return "expired"
    return "held"


@dataclass(frozen=True)
class Candidate:
    name: str
    lease: Lease | None  # None: create it
    state: SlotState


def candidates(
    config: SlotConfig,
    leases: Mapping[str, Lease],
    observations: Observations,
    now: float,
    now_wall: float,
    shuffle: Callable[[list[Candidate]], None] = random.shuffle,
) -> list[Candidate]:
    """The slots this node may try to take now, in the order to try them: its own first (a restarted pod keeps its
    slot), then the others in random order (so waiters spread over the slots instead of all racing for slot 0)."""
    found = []
    for name in config.slot_names():
        lease = leases.get(name)
        state = slot_state(config, lease, observations.unchanged_for(name, now), now_wall)
        if state in TAKEABLE:
            found.append(Candidate(name, lease, state))
    mine = [c for c in found if c.state == "mine"]
    others = [c for c in found if c.state != "mine"]
    shuffle(others)
    return mine + others


def claim_body(config: SlotConfig, candidate: Candidate, now_wall: float) -> Lease:
    """The Lease to create, or to update on the resourceVersion that was read (never without one)."""
    stamp = format_micro_time(now_wall)
    if candidate.lease is None:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": candidate.name,
                "namespace": config.namespace,
                "labels": {**LABELS, "app.kubernetes.io/instance": config.instance},
            },
            "spec": {
                "holderIdentity": config.holder,
                "leaseDurationSeconds": config.lease_duration_s,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
    lease = _copy(candidate.lease)
    spec = lease.setdefault("spec", {})
    if holder_of(candidate.lease) != config.holder:
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["acquireTime"] = stamp
    spec.update(holderIdentity=config.holder, leaseDurationSeconds=config.lease_duration_s, renewTime=stamp)
    annotations = _metadata(lease).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(RELEASED_BY, None)
    return lease


def renew_body(lease: Lease, now_wall: float) -> Lease:
    renewed = _copy(lease)
    renewed.setdefault("spec", {})["renewTime"] = format_micro_time(now_wall)
    return renewed


def release_body(lease: Lease, holder: str, now_wall: float) -> Lease:
    """Holder cleared; renewTime is the release time and `released-by` this node (the fairness rule reads both)."""
    released = _copy(lease)
    spec = released.setdefault("spec", {})
    spec.pop("holderIdentity", None)
    spec["renewTime"] = format_micro_time(now_wall)
    metadata = released.setdefault("metadata", {})
    annotations = metadata.get("annotations")
    metadata["annotations"] = {**(annotations if isinstance(annotations, dict) else {}), RELEASED_BY: holder}
    return released


# --- the canary (pure) ------------------------------------------------------------------------------------------------

CANARY_DONE = "prefetch.stackrox.io/canary-done"  # "true" once the canary's run completed
CANARY_LIST = "prefetch.stackrox.io/canary-list"  # the list_fingerprint the canary pulled
CANARY_FAILURES = "prefetch.stackrox.io/canary-failures"  # JSON {image: [gRPC code, details]}
CANARY_NODE = "prefetch.stackrox.io/canary-node"
MAX_FINDINGS_BYTES = 8192  # of the failures annotation (an object's annotations may hold 256 KiB in all)

Findings = dict[str, tuple[str, str]]  # image -> (gRPC status code name, details) of a permanent failure
CanaryState = Literal["claim", "wait", "done"]


def list_fingerprint(images: Sequence[str], not_found_fails: bool) -> str:
    """Identifies what a canary's findings are valid for: the unique images and whether NOT_FOUND is final."""
    text = "\n".join(sorted(set(images))) + f"\nnot-found={'fail' if not_found_fails else 'retry'}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def canary_state(config: SlotConfig, lease: Lease | None, unchanged_for: float) -> CanaryState:
    """`done`: a canary finished this very list (read its findings, then take a slot as usual); `claim`: become the
    canary (none yet, a free or expired one, ours, or a finished one of another list); `wait`: a live canary pulls."""
    if lease is None:
        return "claim"
    notes = annotations_of(lease)
    if notes.get(CANARY_LIST) == config.list_hash and notes.get(CANARY_DONE) == "true":
        return "done"
    holder = holder_of(lease)
    if not holder or holder == config.holder:
        return "claim"
    if unchanged_for >= lease_duration_of(lease, config.lease_duration_s):
        return "claim"  # the canary died: take over
    return "wait"


def canary_findings(lease: Lease) -> tuple[str, Findings]:
    """The canary node's name and its published permanent failures (entries that do not parse are ignored)."""
    notes = annotations_of(lease)
    try:
        decoded = json.loads(notes.get(CANARY_FAILURES) or "{}")
    except ValueError:
        decoded = {}
    findings: Findings = {}
    if isinstance(decoded, dict):
        for image, entry in decoded.items():
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry):
                findings[str(image)] = (entry[0], entry[1])
    return notes.get(CANARY_NODE, ""), findings


def encode_findings(findings: Mapping[str, tuple[str, str]], limit: int = MAX_FINDINGS_BYTES) -> str:
    """Compact JSON of at most `limit` bytes: the entries that do not fit are left out (the later nodes then try
    those images themselves, which is safe)."""
    kept: dict[str, list[str]] = {}
    for image, (code, details) in findings.items():
        trial = {**kept, image: [code, details]}
        if len(json.dumps(trial, separators=(",", ":"), ensure_ascii=False).encode()) > limit:
            continue
        kept = trial
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def canary_claim_body(config: SlotConfig, candidate: Candidate, now_wall: float) -> Lease:
    lease = claim_body(config, candidate, now_wall)
    metadata = lease.setdefault("metadata", {})
    notes = {k: v for k, v in annotations_of(lease).items() if k not in (CANARY_DONE, CANARY_FAILURES)}
    metadata["annotations"] = {**notes, CANARY_LIST: config.list_hash, CANARY_NODE: config.holder}
    return lease


def canary_release_body(config: SlotConfig, lease: Lease, now_wall: float, findings: Findings | None) -> Lease:
    """Released; with findings (the canary's run completed) also marked done for its list, so later nodes skip."""
    released = release_body(lease, config.holder, now_wall)
    if findings is not None:
        released["metadata"]["annotations"].update(
            {CANARY_DONE: "true", CANARY_LIST: config.list_hash, CANARY_FAILURES: encode_findings(findings)}
        )
    return released


def poll_delay(config: SlotConfig, rand: Callable[[], float] = random.random) -> float:
    return config.poll_interval_s * (1 - POLL_JITTER + 2 * POLL_JITTER * rand())


def _copy(lease: Lease) -> Lease:
    copied: Lease = json.loads(json.dumps(lease))
    copied.setdefault("apiVersion", "coordination.k8s.io/v1")
    copied.setdefault("kind", "Lease")
    return copied


# --- the Lease API ----------------------------------------------------------------------------------------------------


class Deadline(Protocol):
    """`engine.Deadline`: seconds left on the event loop's clock."""

    def remaining(self) -> float: ...


class LeaseApiError(Exception):
    """A failed Lease call. `status` is None when no answer came. Never carries the token."""

    def __init__(self, message: str, status: int | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.transient = (status is None or status in TRANSIENT_STATUSES) if transient is None else transient

    @property
    def conflict(self) -> bool:
        return self.status == 409  # a stale resourceVersion on update, AlreadyExists on create


class LeaseApi(Protocol):
    async def list(self, timeout: float) -> list[Lease]: ...

    async def get(self, name: str, timeout: float) -> Lease | None: ...

    async def create(self, lease: Lease, timeout: float) -> Lease: ...

    async def update(self, lease: Lease, timeout: float) -> Lease: ...

    @property
    def can_watch(self) -> bool:
        """Whether `wait_freed` can see Leases change (else it only sleeps)."""
        ...

    async def wait_freed(self, timeout: float) -> bool:
        """Until a Lease of the namespace frees up after the last `list` (True), or `timeout` passes (False)."""
        ...


class ApiClient(Protocol):
    """`incluster.InClusterConfig` (blocking requests with the service-account token)."""

    @property
    def server(self) -> str: ...

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> ApiResponse: ...

    def stream(
        self, path: str, timeout: float, on_connect: Callable[[http.client.HTTPConnection], None]
    ) -> Iterator[bytes]: ...


def frees_a_slot(line: bytes) -> bool | None:
    """One watch event: True when it frees a Lease (deleted, or written without a holder: a release), False for
    one that does not (a take, a renewal), None when the watch cannot go on (an ERROR event such as 410 Gone, or
    a line that is not an event)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    lease = event.get("object")
    return kind == "DELETED" or not (isinstance(lease, dict) and holder_of(lease))


class HttpLeaseApi:
    """The Lease API over the standard library, each blocking request in a thread with its own timeout."""

    def __init__(self, client: ApiClient, namespace: str) -> None:
        self._client = client
        self._base = LEASES_PATH.format(namespace=quote(namespace, safe=""))
        self._version = ""  # the resourceVersion of the last LIST: a watch starts there
        self._watch_refused = False  # a Role without `watch` (an older collection): poll only, as before watches

    @property
    def can_watch(self) -> bool:
        return not self._watch_refused

    async def list(self, timeout: float) -> list[Lease]:
        body = await self._call("GET", self._base, None, timeout)
        version = _metadata(body).get("resourceVersion")
        self._version = version if isinstance(version, str) else ""
        items = body.get("items") if isinstance(body, dict) else None
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    async def wait_freed(self, timeout: float) -> bool:
        """A watch from the last LIST's resourceVersion, ended by the first event that frees a Lease. Any failure
        (no answer, 410 Gone, a refusal) ends it as a timeout would, after the rest of `timeout`: the caller lists
        again, as it would without a watch."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        freed = False
        if self._version and not self._watch_refused and timeout >= 1:
            seconds = int(timeout)
            path = f"{self._base}?watch=1&resourceVersion={quote(self._version, safe='')}&timeoutSeconds={seconds}"
            opened: Connections = []
            try:
                freed = await asyncio.wait_for(
                    asyncio.to_thread(self._watch_until_freed, path, seconds + WATCH_SLACK_S, opened),
                    seconds + WATCH_SLACK_S + CALL_SLACK_S,
                )
            except (asyncio.TimeoutError, OSError, InClusterError):
                freed = False
            finally:
                for conn in opened:  # ends a read still blocked in the thread (timeout, cancellation)
                    _shut(conn)
        if not freed:
            await asyncio.sleep(max(0.0, ends - loop.time()))
        return freed

    def _watch_until_freed(self, path: str, timeout: float, opened: Connections) -> bool:
        try:
            for line in self._client.stream(path, timeout, opened.append):
                verdict = frees_a_slot(line)
                if verdict is None:
                    self._version = ""  # e.g. 410 Gone: the next LIST gives a fresh start
                    return False
                if verdict:
                    return True
        except StreamRefused as refused:
            if refused.response.status in (401, 403, 404, 405):
                self._watch_refused = True
        return False

    async def get(self, name: str, timeout: float) -> Lease | None:
        try:
            return await self._call("GET", f"{self._base}/{quote(name, safe='')}", None, timeout)
        except LeaseApiError as err:
            if err.status == 404:
                return None
            raise

    async def create(self, lease: Lease, timeout: float) -> Lease:
        return await self._call("POST", self._base, lease, timeout)

    async def update(self, lease: Lease, timeout: float) -> Lease:
        name = quote(str(_metadata(lease).get("name", "")), safe="")
        return await self._call("PUT", f"{self._base}/{name}", lease, timeout)

    async def _call(self, method: str, path: str, body: Lease | None, timeout: float) -> Lease:
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        timeout = max(timeout, 0.001)
        # The socket timeout bounds each read, not the whole exchange: the outer bound keeps a trickling answer
        # from outlasting the caller's deadline (the thread ends at its socket timeout).
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._blocking, method, path, data, timeout), timeout + CALL_SLACK_S
            )
        except asyncio.TimeoutError:
            raise LeaseApiError(f"{method} {self._client.server}{path}: no answer within {timeout:.1f}s") from None

    def _blocking(self, method: str, path: str, data: bytes | None, timeout: float) -> Lease:
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            response = self._client.request(method, path, data, headers, timeout)
        except InClusterError as err:
            raise LeaseApiError(str(err), transient=False) from None
        except OSError as err:  # refused, reset, TLS, socket timeout: no answer
            raise LeaseApiError(f"{method} {self._client.server}{path}: {err}") from None
        if not 200 <= response.status < 300:
            raise LeaseApiError(f"{method} {path}: {response.status}: {response.error_text()}", response.status)
        try:
            decoded = json.loads(response.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise LeaseApiError(f"{method} {path}: the answer is not JSON", response.status, transient=True) from None
        if not isinstance(decoded, dict):
            raise LeaseApiError(f"{method} {path}: the answer is not an object", response.status, transient=True)
        return decoded


def _shut(conn: http.client.HTTPConnection) -> None:
    with contextlib.suppress(OSError):
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


# --- the async adapter ------------------------------------------------------------------------------------------------


@dataclass
class SlotOutcome:
    """How the wait for a slot ended."""

    slot: str | None = None  # the slot held; None: pulling without one (see `warning`) or timed out
    waited_s: float = 0.0
    warning: str | None = None  # why the node pulls without a slot
    timed_out: bool = False  # the overall deadline passed before a slot came free


class LostSlot(Exception):
    pass


class NodeSlot:
    """Waits for, renews and releases this node's slot. `hold` is the whole life cycle as a context manager."""

    def __init__(
        self,
        config: SlotConfig,
        api: LeaseApi,
        log: Logger,
        *,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        shuffle: Callable[[list[Candidate]], None] = random.shuffle,
    ) -> None:
        self.config = config
        self._api = api
        self._log = log
        self._wall = wall
        self._rand = rand
        self._shuffle = shuffle
        self._observations = Observations()
        self._lease: Lease | None = None  # the slot's Lease as last written by us, while held
        self._written_at = 0.0  # loop time of our last successful write of it
        self._renewer: asyncio.Task[None] | None = None
        self.lost: str | None = None  # why the slot was lost while pulling
        self.api_writes = 0
        self.is_canary = False  # this node holds the canary Lease instead of a slot
        self.canary_node = ""  # with a finished canary: its node and findings, for the images to skip
        self.findings: Findings = {}
        self._publish: Findings | None = None  # the canary's own findings, written on release

    @property
    def held(self) -> str | None:
        return str(_metadata(self._lease).get("name")) if self._lease is not None else None

    @contextlib.asynccontextmanager
    async def hold(self, deadline: Deadline) -> AsyncIterator[SlotOutcome]:
        try:
            outcome = await self.acquire(deadline)
            if outcome.slot is not None:
                self._renewer = asyncio.ensure_future(self._renew_forever())
            yield outcome
        finally:
            await self.release()

    async def acquire(self, deadline: Deadline) -> SlotOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        unreachable_since: float | None = None
        self._log.info("waiting for a node slot", slots=self.config.slots, holder=self.config.holder)
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                waited = loop.time() - started
                self._log.error("the overall timeout passed while waiting for a node slot", waited=Seconds(waited))
                return SlotOutcome(waited_s=waited, timed_out=True)
            try:
                taken = await self._try_once(min(REQUEST_TIMEOUT_S, remaining))
            except (KeyError, TypeError, ValueError, AttributeError) as err:  # a Lease we cannot read
                unreadable = LeaseApiError(f"unexpected Lease content: {type(err).__name__}: {err}", transient=False)
                return self._without_slot(unreadable, loop.time() - started, 0.0)
            except LeaseApiError as err:
                now = loop.time()
                unreachable_since = now if unreachable_since is None else unreachable_since
                if not err.transient or now - unreachable_since >= self.config.unreachable_bound_s:
                    return self._without_slot(err, now - started, now - unreachable_since)
                self._log.warn("the Lease API did not answer, waiting", error=str(err))
            else:
                unreachable_since = None
                if taken is not None:
                    waited = loop.time() - started
                    self._log.info("took a node slot", slot=taken, waited=Seconds(waited))
                    return SlotOutcome(slot=taken, waited_s=waited)
            await self._until_next_try(deadline)

    async def _until_next_try(self, deadline: Deadline) -> None:
        """A poll interval; while the Lease API can be watched, WATCH_POLLS of them, cut short when a Lease frees
        up (then a short jitter, so that the waiters do not all list in the same millisecond)."""
        polls = WATCH_POLLS if self._api.can_watch else 1
        window = max(0.0, min(polls * poll_delay(self.config, self._rand), deadline.remaining()))
        if polls > 1 and await self._api.wait_freed(window):
            await asyncio.sleep(max(0.0, min(self._rand() * FREED_JITTER_S, deadline.remaining())))
        elif polls == 1:
            await asyncio.sleep(window)

    def _without_slot(self, err: LeaseApiError, waited: float, unreachable_for: float) -> SlotOutcome:
        refused = "the Lease API refused"
        why = f"the Lease API did not answer for {unreachable_for:.0f}s" if err.transient else refused
        warning = f"{why}, pulled without a node slot (--parallel-nodes {self.config.slots} not enforced): {err}"
        self._log.warn("pulling without a node slot", reason=warning)
        return SlotOutcome(waited_s=waited, warning=warning)

    def publish(self, findings: Findings) -> None:
        """The canary's run completed: its permanent failures go on the canary Lease when it is released."""
        self._publish = dict(findings)

    async def _try_once(self, timeout: float) -> str | None:
        """One LIST, then a claim on each takeable slot in turn; the slot taken, or None (all held, or lost races)."""
        loop = asyncio.get_running_loop()
        names = set(self.config.slot_names())
        if self.config.canary:
            names.add(self.config.canary_name)
        leases = {
            str(_metadata(lease).get("name")): lease
            for lease in await self._api.list(timeout)
            if _metadata(lease).get("name") in names
        }
        self._observations.observe(leases, loop.time())
        if self.config.canary:
            canary = leases.pop(self.config.canary_name, None)
            if not await self._canary_allows(canary, timeout):
                return self.config.canary_name if self.is_canary else None
        for candidate in candidates(
            self.config, leases, self._observations, loop.time(), self._wall(), shuffle=self._shuffle
        ):
            try:
                await self._claim(candidate, timeout)
            except LeaseApiError as err:
                if not err.conflict and err.status != 404:  # 404: deleted since the LIST, as good as taken
                    raise
                self._log.debug("another node took the slot first", slot=candidate.name)
                continue
            return candidate.name
        return None

    async def _canary_allows(self, lease: Lease | None, timeout: float) -> bool:
        """--canary: True when a canary finished this list (its findings are read); else this node tries to become
        the canary (`is_canary` on success) or waits for the live one: False."""
        name = self.config.canary_name
        state = canary_state(
            self.config, lease, self._observations.unchanged_for(name, asyncio.get_running_loop().time())
        )
        if state == "done" and lease is not None:
            self.canary_node, self.findings = canary_findings(lease)
            return True
        if state == "claim":
            candidate = Candidate(name, lease, "free" if lease is not None else "absent")
            try:
                await self._claim(candidate, timeout, canary_claim_body(self.config, candidate, self._wall()))
            except LeaseApiError as err:
                if not err.conflict and err.status != 404:
                    raise
                return False
            self.is_canary = True
            self._log.info("this node is the canary: it pulls alone first")
        return False

    async def _claim(self, candidate: Candidate, timeout: float, body: Lease | None = None) -> None:
        body = body if body is not None else claim_body(self.config, candidate, self._wall())
        call = self._api.create(body, timeout) if candidate.lease is None else self._api.update(body, timeout)
        write = asyncio.ensure_future(call)
        self.api_writes += 1
        try:
            written = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Cancelled (SIGTERM) while the claim was on its way: it may still land. Wait for it briefly so that
            # `release` gives back a slot we did take, instead of leaving it held until it expires.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                self._remember(await asyncio.wait_for(write, RELEASE_TIMEOUT_S))
            raise
        self._remember(written)

    def _remember(self, lease: Lease) -> None:
        self._lease = lease
        self._written_at = asyncio.get_running_loop().time()

    async def _renew_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.renew_interval_s)
                await self._renew_once()
        except LostSlot as lost:
            self._lose(str(lost))
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # a Lease we cannot read: never crash
            self._lose(f"renewing the slot failed: {type(err).__name__}: {err}")

    def _lose(self, why: str) -> None:
        self.lost = why
        self._lease = None
        self._log.warn("lost the node slot, the pulls go on", reason=why)

    async def _renew_once(self) -> None:
        loop = asyncio.get_running_loop()
        conflicts = 0
        while self._lease is not None:
            expires = self._written_at + self.config.lease_duration_s
            remaining = expires - loop.time()
            if remaining <= 0:
                raise LostSlot(f"the slot could not be renewed within {self.config.lease_duration_s}s")
            try:
                self.api_writes += 1
                renewed = await self._api.update(
                    renew_body(self._lease, self._wall()), min(REQUEST_TIMEOUT_S, remaining)
                )
                self._remember(renewed)
                return
            except LeaseApiError as err:
                if err.conflict and conflicts < MAX_CONFLICT_RETRIES:
                    conflicts += 1
                    await self._reread(min(REQUEST_TIMEOUT_S, remaining))
                    continue
                if not err.transient and not err.conflict:
                    raise LostSlot(f"renewing the slot failed: {err}") from None
                self._log.warn("renewing the node slot failed, retrying", error=str(err))
            await asyncio.sleep(min(RENEW_RETRY_S, max(0.0, expires - loop.time())))

    async def _reread(self, timeout: float) -> None:
        """After a 409 on renew: still ours (someone else touched the object) or taken over?"""
        name = self.held or ""
        try:
            current = await self._api.get(name, timeout)
        except LeaseApiError as err:
            self._log.warn("reading the node slot failed", slot=name, error=str(err))
            return
        if current is None or holder_of(current) != self.config.holder:
            taker = holder_of(current) if current is not None else ""
            raise LostSlot(f"slot {name} was taken over by {taker or 'nobody (deleted)'}")
        self._lease = current  # keep our write time: the lease's expiry counts from our last renewal

    async def release(self) -> None:
        """Give the slot back (bounded by RELEASE_TIMEOUT_S; never raises)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._lease is None:
            return
        name = self.held
        try:
            await asyncio.wait_for(self._release_once(), RELEASE_TIMEOUT_S)
            self._log.info("released the node slot", slot=name)
        except (asyncio.TimeoutError, LeaseApiError) as err:
            self._log.warn(
                "could not release the node slot; it frees itself after the lease duration",
                slot=name,
                error=str(err) or type(err).__name__,
            )
        finally:
            self._lease = None

    async def _release_once(self) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            lease = self._lease
            if lease is None:
                return
            if self.is_canary:
                body = canary_release_body(self.config, lease, self._wall(), self._publish)
            else:
                body = release_body(lease, self.config.holder, self._wall())
            try:
                self.api_writes += 1
                await self._api.update(body, RELEASE_TIMEOUT_S)
                return
            except LeaseApiError as err:
                if err.status == 404:
                    return  # deleted (state: absent): nothing to give back
                if not err.conflict:
                    raise
                current = await self._api.get(self.held or "", RELEASE_TIMEOUT_S)
                if current is None or holder_of(current) != self.config.holder:
                    return  # taken over already: nothing of ours to give back
                self._lease = current


def waiting_note(outcome: SlotOutcome, slots: int) -> str:
    """The failure reason of images that never started because the wait for a slot outlasted the run."""
    return (
        f"the overall timeout passed while waiting {outcome.waited_s:.0f}s for a node slot "
        f"(--parallel-nodes {slots}, every slot held by other nodes)"
    )
