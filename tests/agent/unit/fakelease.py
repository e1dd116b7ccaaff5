"""An in-memory `coordination.k8s.io/v1` Lease API with the API server's optimistic concurrency, for `leases.NodeSlot`.

Create of an existing name and update with a stale resourceVersion answer 409, as the real server does; every write
bumps the resourceVersion. Faults: `down` (no answer: transient), `deny` (403), and `faults`, one-shot errors for the
next call of a verb. Calls may take `latency` seconds (on the virtual clock under `run_virtual`).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

from image_prefetcher.leases import Lease, LeaseApiError, holder_of

NAMESPACE = "prefetch"


def unreachable() -> LeaseApiError:
    return LeaseApiError("GET https://10.96.0.1:443/apis/...: [Errno 111] Connection refused")


@dataclass
class FakeLeaseApi:
    store: dict[str, Lease] = field(default_factory=dict)
    version: int = 0
    down: bool = False
    deny: bool = False
    latency: float = 0.0
    faults: dict[str, list[LeaseApiError]] = field(default_factory=dict)  # verb -> errors for its next calls
    calls: list[tuple[str, str]] = field(default_factory=list)  # (verb, name or "")
    # The watch: off by default (poll only, as against a Role without `watch`); on, `wait_freed` ends at the first
    # write without a holder (a release) after the caller's own latest LIST, as a real watch from that LIST's
    # resourceVersion would (each node waits in a task of its own: the task stands for the node's HttpLeaseApi).
    watchable: bool = False
    listed_at: dict[object, int] = field(default_factory=dict)  # the store version at each task's latest LIST
    freed_at: list[int] = field(default_factory=list)  # store versions of writes that freed a Lease

    def holders(self) -> dict[str, str]:
        return {name: holder_of(lease) for name, lease in sorted(self.store.items())}

    def put(self, name: str, holder: str, duration: int = 30, annotations: dict[str, str] | None = None) -> Lease:
        """Seed a Lease as another node (or the collection) would have written it."""
        self.version += 1
        lease: Lease = {
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": str(self.version)},
            "spec": {"leaseDurationSeconds": duration, "renewTime": "2026-01-01T00:00:00.000000Z"},
        }
        if holder:
            lease["spec"]["holderIdentity"] = holder
        if annotations:
            lease["metadata"]["annotations"] = dict(annotations)
        self.store[name] = lease
        return copy.deepcopy(lease)

    def touch(self, name: str) -> None:
        """A renewal by the lease's holder (a live node elsewhere): only the resourceVersion changes here."""
        self.version += 1
        self.store[name]["metadata"]["resourceVersion"] = str(self.version)

    async def _enter(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        if self.latency:
            await asyncio.sleep(self.latency)
        pending = self.faults.get(verb)
        if pending:
            raise pending.pop(0)
        if self.down:
            raise unreachable()
        if self.deny:
            raise LeaseApiError('leases.coordination.k8s.io is forbidden: User "system:serviceaccount:..."', 403)

    async def list(self, timeout: float) -> list[Lease]:
        await self._enter("list", "")
        self.listed_at[asyncio.current_task()] = self.version
        return [copy.deepcopy(lease) for lease in self.store.values()]

    @property
    def can_watch(self) -> bool:
        return self.watchable

    async def wait_freed(self, timeout: float) -> bool:
        self.calls.append(("watch", ""))
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        while True:
            since = self.listed_at.get(asyncio.current_task(), 0)
            if self.watchable and not self.down and any(v > since for v in self.freed_at):
                return True
            if loop.time() >= ends:
                return False
            await asyncio.sleep(min(0.05, ends - loop.time()))

    async def get(self, name: str, timeout: float) -> Lease | None:
        await self._enter("get", name)
        lease = self.store.get(name)
        return copy.deepcopy(lease) if lease is not None else None

    async def create(self, lease: Lease, timeout: float) -> Lease:
        name = lease["metadata"]["name"]
        await self._enter("create", name)
        if name in self.store:
            raise LeaseApiError(f'leases.coordination.k8s.io "{name}" already exists', 409)
        return self._write(name, lease)

    async def update(self, lease: Lease, timeout: float) -> Lease:
        name = lease["metadata"]["name"]
        await self._enter("update", name)
        current = self.store.get(name)
        if current is None:
            raise LeaseApiError(f'leases.coordination.k8s.io "{name}" not found', 404)
        if lease["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise LeaseApiError(
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been modified',
                409,
            )
        return self._write(name, lease)

    def _write(self, name: str, lease: Lease) -> Lease:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.store[name] = stored
        if not holder_of(stored):
            self.freed_at.append(self.version)
        return copy.deepcopy(stored)
