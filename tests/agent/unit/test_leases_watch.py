"""Waiting for a node slot with a watch (`leases.HttpLeaseApi.wait_freed`, `NodeSlot`): a freed slot is taken a
round trip after its release instead of up to a poll interval later; renewals do not wake the waiters; a Role
without `watch`, a 410 Gone or a cancelled wait fall back to polling or end at once.

NodeSlot scenarios run on `virtualclock.run_virtual` (exact times); HttpLeaseApi runs against a fake client whose
stream is a list of lines, or one that blocks until its connection is shut down.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakelease import FakeLeaseApi
from test_leases import Deadline, pull_for
from virtualclock import run_virtual

from image_prefetcher import leases
from image_prefetcher.incluster import ApiResponse, StreamRefused
from image_prefetcher.leases import HttpLeaseApi, frees_a_slot


def event(kind: str, holder: str = "", name: str = "pf-slot-0") -> bytes:
    spec = {"holderIdentity": holder} if holder else {}
    return json.dumps({"type": kind, "object": {"metadata": {"name": name}, "spec": spec}}).encode() + b"\n"


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        (event("MODIFIED", ""), True),  # a release: the holder cleared
        (event("DELETED", "node-1"), True),
        (event("MODIFIED", "node-1"), False),  # a renewal, or a take-over
        (event("ADDED", "node-2"), False),  # a slot created by its taker
        (b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}\n', None),
        (b"not json\n", None),
    ],
)
def test_which_watch_events_free_a_slot(line: bytes, verdict: bool | None) -> None:
    assert frees_a_slot(line) is verdict


def test_with_a_watch_a_released_slot_is_taken_within_the_jitter_not_a_poll_later() -> None:
    api = FakeLeaseApi(watchable=True)
    log: list[tuple[str, str, float]] = []

    async def scenario() -> list[leases.SlotOutcome]:
        deadline = Deadline(600)
        first = asyncio.ensure_future(pull_for(api, "node-a", 20, deadline, log))
        await asyncio.sleep(0.5)
        return [await first, await pull_for(api, "node-b", 20, deadline, log)]

    first, second = run_virtual(scenario())
    assert (first.waited_s, first.slot, second.slot) == (0.0, "pf-slot-0", "pf-slot-0")
    ended = next(at for kind, holder, at in log if kind == "end" and holder == "node-a")
    started = next(at for kind, holder, at in log if kind == "start" and holder == "node-b")
    assert started - ended <= leases.FREED_JITTER_S + 0.1  # the fake's 50 ms steps
    # Waiting 20 s took a few LISTs, not one every poll interval (3 s).
    assert api.calls.count(("list", "")) <= 4


def test_six_nodes_two_slots_with_a_watch_waves_follow_each_other_at_once() -> None:
    api = FakeLeaseApi(watchable=True)
    log: list[tuple[str, str, float]] = []

    async def scenario() -> None:
        deadline = Deadline(600)
        await asyncio.gather(*(pull_for(api, f"node-{i}", 60, deadline, log, slots=2) for i in range(6)))

    run_virtual(scenario())
    ends = sorted(at for kind, _h, at in log if kind == "end")
    assert max(ends) <= 3 * 60 + 2 * (leases.FREED_JITTER_S + 0.1) + 1


class StreamClient:
    """A fake in-cluster client whose `stream` plays lines (or raises), recording the paths asked for."""

    server = "https://10.96.0.1:443"

    def __init__(self, lines: list[bytes] | StreamRefused, listed_version: str = "41") -> None:
        self.lines, self.listed_version = lines, listed_version
        self.paths: list[str] = []

    def request(self, method: str, path: str, body: bytes | None, headers: Any, timeout: float) -> ApiResponse:
        listed = {"metadata": {"resourceVersion": self.listed_version}, "items": []}
        return ApiResponse(200, json.dumps(listed).encode())

    def stream(self, path: str, timeout: float, on_connect: Callable[[Any], None]) -> Iterator[bytes]:
        self.paths.append(path)
        if isinstance(self.lines, StreamRefused):
            raise self.lines
        yield from self.lines


def list_then_wait(api: HttpLeaseApi, timeout: float) -> tuple[bool, float]:
    async def scenario() -> tuple[bool, float]:
        await api.list(5)
        started = time.monotonic()
        return await api.wait_freed(timeout), time.monotonic() - started

    return asyncio.run(scenario())


def test_the_watch_starts_at_the_lists_version_and_skips_renewals() -> None:
    client = StreamClient([event("MODIFIED", "node-1"), event("ADDED", "node-2"), event("MODIFIED", "")])
    api = HttpLeaseApi(client, "prefetch")
    freed, _ = list_then_wait(api, 5)
    assert freed
    assert client.paths == ["/apis/coordination.k8s.io/v1/namespaces/prefetch/leases?watch=1&resourceVersion=41"
                            "&timeoutSeconds=5"]
    assert api.can_watch


def test_a_watch_that_ends_without_a_release_waits_out_the_window() -> None:
    api = HttpLeaseApi(StreamClient([event("MODIFIED", "node-1")]), "prefetch")
    freed, took = list_then_wait(api, 1.2)
    assert not freed and took >= 1.1


def test_a_role_without_watch_turns_the_watch_off_for_good() -> None:
    refused = StreamRefused(ApiResponse(403, b'{"message":"leases is forbidden: ... cannot watch"}'))
    client = StreamClient(refused)
    api = HttpLeaseApi(client, "prefetch")
    freed, took = list_then_wait(api, 1.2)
    assert not freed and took >= 1.1  # the caller's poll interval still passes
    assert not api.can_watch
    list_then_wait(api, 1)
    assert len(client.paths) == 1  # never asked again


def test_gone_410_ends_the_watch_and_the_next_list_starts_afresh() -> None:
    client = StreamClient([b'{"type":"ERROR","object":{"kind":"Status","code":410}}\n'])
    api = HttpLeaseApi(client, "prefetch")
    freed, _ = list_then_wait(api, 1)
    assert not freed and api.can_watch
    client.listed_version = "97"
    client.lines = [event("DELETED", "node-1")]
    assert list_then_wait(api, 1)[0]
    assert "resourceVersion=97" in client.paths[-1]


class BlockingClient(StreamClient):
    """A stream that never sends a line: its read ends only when the connection's socket is shut down."""

    def __init__(self) -> None:
        super().__init__([])
        self.shut = threading.Event()
        self.thread_done = threading.Event()

    def stream(self, path: str, timeout: float, on_connect: Callable[[Any], None]) -> Iterator[bytes]:
        client = self

        class Socket:
            def shutdown(self, how: int) -> None:
                client.shut.set()

        class Connection:
            sock = Socket()

            def close(self) -> None:
                pass

        on_connect(Connection())
        try:
            self.shut.wait(30)
            yield from ()
        finally:
            self.thread_done.set()


def test_a_cancelled_wait_shuts_the_watch_down_and_its_thread_ends() -> None:
    client = BlockingClient()
    api = HttpLeaseApi(client, "prefetch")

    async def scenario() -> None:
        await api.list(5)
        waiting = asyncio.ensure_future(api.wait_freed(20))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    assert client.shut.is_set()
    assert client.thread_done.wait(5), "the watch's thread still reads after the cancellation"
