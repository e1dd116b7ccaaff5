"""The node-slot semaphore (`leases`): its pure rules, and `NodeSlot` against a fake Lease API on a virtual clock.

Every scenario runs on `virtualclock.run_virtual`: lease durations, renewals, polls and the overall deadline pass in
a fixed order whatever the machine's speed, so the assertions are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from fakelease import NAMESPACE, FakeLeaseApi
from virtualclock import run_virtual

from image_prefetcher import leases
from image_prefetcher.engine import Deadline
from image_prefetcher.incluster import ApiResponse
from image_prefetcher.leases import (
    RELEASED_BY,
    Candidate,
    HttpLeaseApi,
    LeaseApiError,
    NodeSlot,
    Observations,
    SlotConfig,
    candidates,
    claim_body,
    format_micro_time,
    holder_of,
    parse_micro_time,
    poll_delay,
    release_body,
    slot_state,
)
from image_prefetcher.logs import configure_logging

WALL0 = 1_800_000_000.0  # the nodes' wall clock at virtual loop time 0


def config(holder: str = "node-1", slots: int = 1, **overrides: Any) -> SlotConfig:
    return SlotConfig(namespace=NAMESPACE, instance="pf", holder=holder, slots=slots, **overrides)


def node_slot(api: FakeLeaseApi, holder: str = "node-1", slots: int = 1, seed: int = 1, **overrides: Any) -> NodeSlot:
    rng = random.Random(seed)
    return NodeSlot(
        config(holder, slots, **overrides),
        api,
        configure_logging(True, "text", io.StringIO()),
        wall=lambda: WALL0 + now(),
        rand=rng.random,
        shuffle=rng.shuffle,
    )


def acquire(api: FakeLeaseApi, overall: float, **kw: Any) -> leases.SlotOutcome:
    """One node's wait for a slot, on a virtual clock."""

    async def scenario() -> leases.SlotOutcome:
        return await node_slot(api, **kw).acquire(Deadline(overall))

    return run_virtual(scenario())


def now() -> float:
    """Seconds since the scenario started (the virtual clock starts at 1000)."""
    return asyncio.get_running_loop().time() - 1000.0


# --- pure rules -------------------------------------------------------------------------------------------------------


def test_micro_time_round_trips() -> None:
    text = format_micro_time(WALL0 + 0.25)
    assert text == "2027-01-15T08:00:00.250000Z"
    assert parse_micro_time(text) == WALL0 + 0.25
    assert parse_micro_time("garbage") is None and parse_micro_time(None) is None


def lease(holder: str, version: str = "7", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "pf-slot-0", "resourceVersion": version}, "spec": dict(spec)}
    if holder:
        body["spec"]["holderIdentity"] = holder
    return body


@pytest.mark.parametrize(
    ("existing", "unchanged_for", "state"),
    [
        (None, 0.0, "absent"),
        (lease("node-1"), 0.0, "mine"),
        (lease(""), 0.0, "free"),
        (lease("node-2", leaseDurationSeconds=30), 29.9, "held"),
        (lease("node-2", leaseDurationSeconds=30), 30.0, "expired"),
        # The holder's own leaseDurationSeconds counts, not ours.
        (lease("node-2", leaseDurationSeconds=120), 100.0, "held"),
        (lease("node-2"), 30.0, "expired"),  # no duration on the lease: ours (30 s)
    ],
)
def test_slot_state(existing: dict[str, Any] | None, unchanged_for: float, state: str) -> None:
    assert slot_state(config(), existing, unchanged_for, WALL0) == state


def test_a_slot_this_node_just_released_cools_down_for_one_lease_duration() -> None:
    released = release_body(lease("node-1"), "node-1", WALL0)
    assert slot_state(config(), released, 0.0, WALL0 + 29) == "cooling"
    assert slot_state(config(), released, 0.0, WALL0 + 30) == "free"
    assert slot_state(config("node-2"), released, 0.0, WALL0 + 1) == "free"  # other nodes take it at once


def test_expiry_is_judged_by_our_observation_not_by_the_holders_clock() -> None:
    # renewTime an hour in the past (a holder whose clock is behind) but the record changes: it is alive.
    seen = Observations()
    stale_clock = "2020-01-01T00:00:00.000000Z"
    for step in range(10):
        seen.observe({"pf-slot-0": lease("node-2", str(step), renewTime=stale_clock)}, step * 10.0)
    assert seen.unchanged_for("pf-slot-0", 95.0) == 5.0
    found = candidates(config(), {"pf-slot-0": lease("node-2", "9")}, seen, 95.0, WALL0)
    assert found == []
    # Unchanged for a lease duration: expired.
    assert [c.state for c in candidates(config(), {"pf-slot-0": lease("node-2", "9")}, seen, 120.0, WALL0)] == [
        "expired"
    ]


def test_candidates_put_this_nodes_own_slot_first_then_the_rest_shuffled() -> None:
    existing = {
        "pf-slot-0": lease(""),
        "pf-slot-2": {**lease("node-1"), "metadata": {"name": "pf-slot-2", "resourceVersion": "3"}},
        "pf-slot-3": lease("node-9"),
    }
    found = candidates(config(slots=4), existing, Observations(), 0.0, WALL0, shuffle=lambda c: c.reverse())
    assert [(c.name, c.state) for c in found] == [("pf-slot-2", "mine"), ("pf-slot-1", "absent"), ("pf-slot-0", "free")]


def test_a_claim_updates_on_the_resource_version_it_read() -> None:
    taken = claim_body(config(), Candidate("pf-slot-0", lease("node-2", "41", leaseTransitions=2), "expired"), WALL0)
    assert taken["metadata"]["resourceVersion"] == "41"
    assert taken["spec"]["holderIdentity"] == "node-1"
    assert taken["spec"]["leaseTransitions"] == 3
    assert taken["spec"]["acquireTime"] == taken["spec"]["renewTime"] == format_micro_time(WALL0)
    assert (taken["apiVersion"], taken["kind"]) == ("coordination.k8s.io/v1", "Lease")
    created = claim_body(config(), Candidate("pf-slot-0", None, "absent"), WALL0)
    assert "resourceVersion" not in created["metadata"]
    assert created["metadata"]["labels"]["app.kubernetes.io/instance"] == "pf"
    assert created["spec"]["leaseDurationSeconds"] == 30


def test_a_released_lease_has_no_holder_and_says_who_released_it() -> None:
    released = release_body(lease("node-1", "5"), "node-1", WALL0)
    assert holder_of(released) == ""
    assert released["metadata"]["annotations"] == {RELEASED_BY: "node-1"}
    assert released["metadata"]["resourceVersion"] == "5"
    retaken = claim_body(config("node-2"), Candidate("pf-slot-0", released, "free"), WALL0)
    assert RELEASED_BY not in retaken["metadata"]["annotations"]


def test_renewals_come_more_often_than_a_third_of_the_lease_and_polls_are_jittered() -> None:
    assert config(lease_duration_s=30).renew_interval_s < 30 / 3
    assert poll_delay(config(), lambda: 0.0) == pytest.approx(1.5)
    assert poll_delay(config(), lambda: 1.0) == pytest.approx(4.5)


# --- NodeSlot against the fake API ------------------------------------------------------------------------------------


def test_a_free_slot_is_created_held_renewed_and_released() -> None:
    api = FakeLeaseApi()

    async def scenario() -> None:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)) as outcome:
            assert (outcome.slot, outcome.waited_s, outcome.warning) == ("pf-slot-0", 0.0, None)
            assert api.holders() == {"pf-slot-0": "node-1"}
            await asyncio.sleep(31)  # longer than the lease: renewals keep it
            assert api.calls.count(("update", "pf-slot-0")) == 4  # every 7.5 s
        assert api.holders() == {"pf-slot-0": ""}
        assert api.store["pf-slot-0"]["metadata"]["annotations"] == {RELEASED_BY: "node-1"}
        assert slot.api_writes == 1 + 4 + 1

    run_virtual(scenario())


async def pull_for(
    api: FakeLeaseApi, holder: str, seconds: float, deadline: Deadline, log: list[tuple[str, str, float]], **kw: Any
) -> leases.SlotOutcome:
    slot = node_slot(api, holder, seed=hash(holder) % 1000, **kw)
    async with slot.hold(deadline) as outcome:
        log.append(("start", holder, now()))
        await asyncio.sleep(seconds)
        log.append(("end", holder, now()))
    return outcome


def peak(log: list[tuple[str, str, float]]) -> int:
    active = highest = 0
    for kind, _holder, _at in sorted(log, key=lambda e: (e[2], e[0] == "start")):
        active += 1 if kind == "start" else -1
        highest = max(highest, active)
    return highest


def test_six_nodes_two_slots_never_more_than_two_pull_and_all_finish_in_waves() -> None:
    api = FakeLeaseApi()
    log: list[tuple[str, str, float]] = []

    async def scenario() -> list[leases.SlotOutcome]:
        deadline = Deadline(600)
        return list(await asyncio.gather(*(pull_for(api, f"node-{i}", 60, deadline, log, slots=2) for i in range(6))))

    outcomes = run_virtual(scenario())
    assert peak(log) == 2
    assert sorted(o.slot or "" for o in outcomes).count("pf-slot-0") == 3
    assert all(o.warning is None and not o.timed_out for o in outcomes)
    ends = [at for kind, _h, at in log if kind == "end"]
    # Three waves of 60 s; a freed slot is found within one poll (at most 4.5 s).
    assert max(ends) <= 3 * 60 + 2 * 4.5
    assert sorted(round(o.waited_s) for o in outcomes)[:2] == [0, 0]
    assert api.holders() == {"pf-slot-0": "", "pf-slot-1": ""}


def test_the_loser_of_a_race_for_one_slot_gets_409_and_waits_for_the_release() -> None:
    api = FakeLeaseApi(latency=0.1)  # both LISTs see no lease, both create: one AlreadyExists
    log: list[tuple[str, str, float]] = []

    async def scenario() -> list[leases.SlotOutcome]:
        deadline = Deadline(600)
        return list(
            await asyncio.gather(pull_for(api, "node-a", 20, deadline, log), pull_for(api, "node-b", 20, deadline, log))
        )

    first, second = run_virtual(scenario())
    assert api.calls.count(("create", "pf-slot-0")) == 2
    assert peak(log) == 1
    assert {first.slot, second.slot} == {"pf-slot-0"}
    assert sorted([first.waited_s, second.waited_s])[1] >= 20


def test_a_conflict_on_one_slot_moves_on_to_the_next() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "")
    api.put("pf-slot-1", "")
    api.faults["update"] = [LeaseApiError("the object has been modified", 409)]

    async def scenario() -> leases.SlotOutcome:
        slot = node_slot(api, slots=2)
        outcome = await slot.acquire(Deadline(60))
        await slot.release()
        return outcome

    outcome = run_virtual(scenario())
    assert outcome.slot is not None and outcome.waited_s == 0.0
    first, second = [name for verb, name in api.calls if verb == "update"][:2]
    assert {first, second} == {"pf-slot-0", "pf-slot-1"}  # the 409 on the first, then the other one
    assert outcome.slot == second
    assert api.calls.count(("list", "")) == 1


def test_a_dead_holders_slot_is_taken_after_one_lease_duration_of_silence() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-dead", duration=30)

    async def scenario() -> leases.SlotOutcome:
        slot = node_slot(api)
        outcome = await slot.acquire(Deadline(600))
        await slot.release()
        return outcome

    outcome = run_virtual(scenario())
    assert outcome.slot == "pf-slot-0"
    assert 30 <= outcome.waited_s <= 30 + 4.5
    assert api.store["pf-slot-0"]["spec"]["leaseTransitions"] == 1


def test_a_live_holder_is_never_taken_over_and_the_wait_ends_at_the_overall_deadline() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-busy")

    async def keep_renewing() -> None:
        while True:
            await asyncio.sleep(7.5)
            api.touch("pf-slot-0")

    async def scenario() -> leases.SlotOutcome:
        renewer = asyncio.ensure_future(keep_renewing())
        try:
            return await node_slot(api).acquire(Deadline(100))
        finally:
            renewer.cancel()

    outcome = run_virtual(scenario())
    assert (outcome.slot, outcome.timed_out) == (None, True)
    assert outcome.waited_s == pytest.approx(100)
    assert api.holders() == {"pf-slot-0": "node-busy"}
    assert "waiting 100s for a node slot" in leases.waiting_note(outcome, 1)


def test_a_restarted_pod_of_the_holding_node_keeps_its_slot_at_once() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-1")

    outcome = acquire(api, 60)
    assert (outcome.slot, outcome.waited_s) == ("pf-slot-0", 0.0)


def test_a_node_that_just_released_leaves_the_slot_to_a_waiter() -> None:
    """Fairness: node-1 released (its previous pod); node-1 again and node-2 both wait: node-2 gets it."""
    api = FakeLeaseApi()
    api.store["pf-slot-0"] = {
        **release_body(lease("node-1", "1"), "node-1", WALL0),
        "metadata": {"name": "pf-slot-0", "resourceVersion": "1", "annotations": {RELEASED_BY: "node-1"}},
    }
    log: list[tuple[str, str, float]] = []

    async def scenario() -> tuple[leases.SlotOutcome, leases.SlotOutcome]:
        deadline = Deadline(600)
        again = asyncio.ensure_future(pull_for(api, "node-1", 10, deadline, log))
        await asyncio.sleep(1)  # node-1 asks first, and still waits
        other = await pull_for(api, "node-2", 10, deadline, log)
        return await again, other

    again, other = run_virtual(scenario())
    assert other.waited_s == 0.0
    assert [h for kind, h, _ in log if kind == "start"] == ["node-2", "node-1"]
    assert again.waited_s >= 11


def test_alone_a_node_retakes_its_own_released_slot_after_the_cool_down() -> None:
    api = FakeLeaseApi()
    api.store["pf-slot-0"] = {
        **release_body(lease("node-1", "1"), "node-1", WALL0),
        "metadata": {"name": "pf-slot-0", "resourceVersion": "1", "annotations": {RELEASED_BY: "node-1"}},
    }
    outcome = acquire(api, 600)
    assert outcome.slot == "pf-slot-0"
    assert 30 <= outcome.waited_s <= 30 + 4.5


def test_many_waiters_one_slot_everyone_gets_a_turn() -> None:
    api = FakeLeaseApi()
    log: list[tuple[str, str, float]] = []

    async def scenario() -> list[leases.SlotOutcome]:
        deadline = Deadline(3600)
        return list(await asyncio.gather(*(pull_for(api, f"node-{i}", 30, deadline, log) for i in range(10))))

    outcomes = run_virtual(scenario())
    assert peak(log) == 1
    assert all(o.slot == "pf-slot-0" for o in outcomes)
    assert max(at for kind, _h, at in log if kind == "end") <= 10 * 30 + 9 * 4.5


# --- API server trouble -----------------------------------------------------------------------------------------------


def test_an_unreachable_api_server_is_waited_for_up_to_the_bound_then_the_node_pulls_without_a_slot() -> None:
    api = FakeLeaseApi(down=True)

    outcome = acquire(api, 600, unreachable_bound_s=60)
    assert (outcome.slot, outcome.timed_out) == (None, False)
    assert 60 <= outcome.waited_s <= 60 + 4.5
    assert outcome.warning is not None
    assert outcome.warning.startswith("the Lease API did not answer for 6")
    assert "pulled without a node slot (--parallel-nodes 1 not enforced)" in outcome.warning


def test_an_api_server_back_within_the_bound_gives_a_slot() -> None:
    api = FakeLeaseApi(down=True)

    async def scenario() -> leases.SlotOutcome:
        async def recover() -> None:
            await asyncio.sleep(50)
            api.down = False

        recovering = asyncio.ensure_future(recover())
        outcome = await node_slot(api, unreachable_bound_s=60).acquire(Deadline(600))
        await recovering
        return outcome

    outcome = run_virtual(scenario())
    assert outcome.slot == "pf-slot-0" and outcome.warning is None


def test_the_bound_counts_from_the_first_failure_in_a_row() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-busy")

    async def scenario() -> leases.SlotOutcome:
        async def renew() -> None:
            while True:
                await asyncio.sleep(7.5)
                api.touch("pf-slot-0")

        async def flap() -> None:
            while True:
                await asyncio.sleep(40)
                api.down = not api.down

        helpers = [asyncio.ensure_future(renew()), asyncio.ensure_future(flap())]
        try:
            return await node_slot(api, unreachable_bound_s=60).acquire(Deadline(300))
        finally:
            for helper in helpers:
                helper.cancel()

    outcome = run_virtual(scenario())
    assert outcome.timed_out and outcome.warning is None  # never 60 s of failures in a row


def test_a_denied_lease_api_is_not_waited_for() -> None:
    api = FakeLeaseApi(deny=True)
    outcome = acquire(api, 600)
    assert (outcome.slot, outcome.waited_s) == (None, 0.0)
    assert outcome.warning is not None and outcome.warning.startswith("the Lease API refused")
    assert "forbidden" in outcome.warning


def test_a_renewal_that_fails_for_a_while_recovers() -> None:
    api = FakeLeaseApi()

    async def scenario() -> NodeSlot:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            await asyncio.sleep(8)  # after the first renewal
            api.down = True
            await asyncio.sleep(20)  # less than the lease duration since the last renewal
            api.down = False
            await asyncio.sleep(10)
            assert slot.lost is None and slot.held == "pf-slot-0"
        return slot

    run_virtual(scenario())
    assert api.holders() == {"pf-slot-0": ""}


def test_a_renewal_that_fails_past_the_lease_duration_loses_the_slot_and_the_pull_goes_on() -> None:
    api = FakeLeaseApi()

    async def scenario() -> NodeSlot:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            await asyncio.sleep(1)
            api.down = True
            await asyncio.sleep(40)
            assert slot.lost == "the slot could not be renewed within 30s"
            assert slot.held is None
            api.down = False
            calls = len(api.calls)
        assert len(api.calls) == calls  # a lost slot is not released: it may be someone else's now
        return slot

    run_virtual(scenario())


def test_a_slot_taken_over_while_renewing_is_lost() -> None:
    api = FakeLeaseApi()

    async def scenario() -> NodeSlot:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            api.store["pf-slot-0"]["spec"]["holderIdentity"] = "node-thief"
            api.touch("pf-slot-0")
            await asyncio.sleep(8)
            assert slot.lost == "slot pf-slot-0 was taken over by node-thief"
        return slot

    run_virtual(scenario())
    assert api.holders() == {"pf-slot-0": "node-thief"}


def test_a_renewal_conflict_from_someone_elses_edit_keeps_the_slot() -> None:
    api = FakeLeaseApi()

    async def scenario() -> NodeSlot:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            api.store["pf-slot-0"]["metadata"]["annotations"] = {"someone": "else"}
            api.touch("pf-slot-0")
            await asyncio.sleep(8)
            assert slot.lost is None
            assert api.calls[-3:] == [("update", "pf-slot-0"), ("get", "pf-slot-0"), ("update", "pf-slot-0")]
        return slot

    run_virtual(scenario())
    assert api.holders() == {"pf-slot-0": ""}


# --- cancellation -----------------------------------------------------------------------------------------------------


def run_then_cancel(api: FakeLeaseApi, after: float, body: Callable[[NodeSlot], Awaitable[None]]) -> None:
    async def scenario() -> None:
        slot = node_slot(api)
        task = asyncio.ensure_future(body(slot))
        await asyncio.sleep(after)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_virtual(scenario())


def test_cancelled_while_pulling_the_slot_is_released() -> None:
    api = FakeLeaseApi()

    async def body(slot: NodeSlot) -> None:
        async with slot.hold(Deadline(600)):
            await asyncio.sleep(1000)

    run_then_cancel(api, 12, body)
    assert api.holders() == {"pf-slot-0": ""}


def test_cancelled_while_the_claim_is_on_its_way_the_slot_taken_is_released() -> None:
    api = FakeLeaseApi(latency=1.0)  # list ends at 1 s, the create lands at 2 s

    async def body(slot: NodeSlot) -> None:
        async with slot.hold(Deadline(600)):
            await asyncio.sleep(1000)

    run_then_cancel(api, 1.5, body)
    assert api.holders() == {"pf-slot-0": ""}
    assert [verb for verb, _ in api.calls] == ["list", "create", "update"]


def test_cancelled_while_waiting_nothing_is_written() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-busy")

    async def body(slot: NodeSlot) -> None:
        async with slot.hold(Deadline(600)):
            raise AssertionError("no slot was free")

    run_then_cancel(api, 10, body)
    assert {verb for verb, _ in api.calls} == {"list"}


def test_a_release_that_cannot_reach_the_api_server_gives_up_within_its_bound() -> None:
    api = FakeLeaseApi()

    async def scenario() -> float:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            api.latency = 100.0  # every call hangs
        return now()

    ended = run_virtual(scenario())
    assert ended <= leases.RELEASE_TIMEOUT_S


# --- the HTTP adapter -------------------------------------------------------------------------------------------------


class FakeClient:
    server = "https://10.96.0.1:443"

    def __init__(self, *answers: ApiResponse | OSError) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, bytes | None, dict[str, str], float]] = []

    def request(self, method: str, path: str, body: bytes | None, headers: Any, timeout: float) -> ApiResponse:
        self.requests.append((method, path, body, dict(headers), timeout))
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    def stream(self, path: str, timeout: float, on_connect: Callable[[Any], None]) -> Iterator[bytes]:
        raise AssertionError(f"no watch expected here: {path}")


STATUS_409 = b'{"kind":"Status","message":"Operation cannot be fulfilled on leases \\"pf-slot-0\\"","code":409}'


def test_http_lease_api_paths_and_errors() -> None:
    client = FakeClient(
        ApiResponse(200, b'{"items":[{"metadata":{"name":"pf-slot-0"}}]}'),
        ApiResponse(404, b"{}"),
        ApiResponse(201, b'{"metadata":{"name":"pf-slot-1"}}'),
        ApiResponse(409, STATUS_409),
        ConnectionRefusedError(111, "Connection refused"),
        ApiResponse(403, b'{"message":"leases is forbidden"}'),
    )
    api = HttpLeaseApi(client, "prefetch")

    async def scenario() -> list[Any]:
        found: list[Any] = [await api.list(5), await api.get("pf-slot-9", 5), await api.create({"metadata": {}}, 5)]
        for _ in range(3):
            try:
                await api.update({"metadata": {"name": "pf-slot-0"}}, 5)
            except LeaseApiError as err:
                found.append((err.status, err.conflict, err.transient, str(err)))
        return found

    listed, missing, created, conflict, refused, denied = asyncio.run(scenario())
    assert listed == [{"metadata": {"name": "pf-slot-0"}}] and missing is None and created["metadata"]["name"]
    assert conflict[:3] == (409, True, False)
    assert refused[:3] == (None, False, True) and "Connection refused" in refused[3]
    assert denied[:3] == (403, False, False) and "leases is forbidden" in denied[3]
    base = "/apis/coordination.k8s.io/v1/namespaces/prefetch/leases"
    assert [(m, p) for m, p, *_ in client.requests] == [
        ("GET", base),
        ("GET", base + "/pf-slot-9"),
        ("POST", base),
        ("PUT", base + "/pf-slot-0"),
        ("PUT", base + "/pf-slot-0"),
        ("PUT", base + "/pf-slot-0"),
    ]
    assert client.requests[2][3] == {"Content-Type": "application/json"}


def test_a_slot_deleted_between_list_and_claim_is_passed_over_not_a_refusal() -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "")
    api.faults["update"] = [LeaseApiError('leases.coordination.k8s.io "pf-slot-0" not found', 404)]
    outcome = acquire(api, 600)
    assert outcome.slot == "pf-slot-0" and outcome.warning is None
    assert 1.5 <= outcome.waited_s <= 4.5  # the next poll


def test_a_lease_that_cannot_be_read_pulls_without_a_slot() -> None:
    api = FakeLeaseApi()
    api.store["pf-slot-0"] = {"metadata": {"name": "pf-slot-0", "resourceVersion": "1"}, "spec": []}
    outcome = acquire(api, 600)
    assert outcome.slot is None and outcome.warning is not None
    assert "unexpected Lease content" in outcome.warning


def test_a_slot_deleted_while_held_releases_quietly() -> None:
    api = FakeLeaseApi()

    async def scenario() -> NodeSlot:
        slot = node_slot(api)
        async with slot.hold(Deadline(600)):
            del api.store["pf-slot-0"]
        return slot

    slot = run_virtual(scenario())
    assert api.store == {} and slot.held is None


# --- the canary -------------------------------------------------------------------------------------------------------

LIST = "list-1"


def canary_lease(holder: str, *, done: bool = False, list_hash: str = LIST, failures: str = "{}") -> dict[str, Any]:
    notes = {leases.CANARY_LIST: list_hash, leases.CANARY_NODE: holder or "node-c"}
    if done:
        notes.update({leases.CANARY_DONE: "true", leases.CANARY_FAILURES: failures})
    body = lease(holder, leaseDurationSeconds=30)
    body["metadata"].update(name="pf-canary", annotations=notes)
    return body


@pytest.mark.parametrize(
    ("existing", "unchanged_for", "state"),
    [
        (None, 0.0, "claim"),
        (canary_lease("node-c"), 0.0, "wait"),  # a live canary pulls
        (canary_lease("node-c"), 30.0, "claim"),  # it died
        (canary_lease(""), 0.0, "claim"),  # released without finishing (interrupted)
        (canary_lease("node-1"), 0.0, "claim"),  # ours (a restarted pod)
        (canary_lease("", done=True), 0.0, "done"),
        (canary_lease("", done=True, list_hash="list-0"), 0.0, "claim"),  # finished an older list
        (canary_lease("node-c", list_hash="list-0"), 0.0, "wait"),  # a live canary of another list: wait
    ],
)
def test_canary_state(existing: dict[str, Any] | None, unchanged_for: float, state: str) -> None:
    assert leases.canary_state(config(canary=True, list_hash=LIST), existing, unchanged_for) == state


def test_list_fingerprint_is_the_unique_list_and_the_not_found_setting() -> None:
    fingerprint = leases.list_fingerprint
    assert fingerprint(["b", "a", "a"], False) == fingerprint(["a", "b"], False)
    assert fingerprint(["a", "b"], False) != fingerprint(["a", "b"], True)
    assert fingerprint(["a"], False) != fingerprint(["a", "b"], False)


def test_findings_are_bounded_and_unreadable_entries_ignored() -> None:
    findings = {f"r/image-{i}:v1": ("NOT_FOUND", "x" * 150) for i in range(100)}
    encoded = leases.encode_findings(findings)
    assert len(encoded.encode()) <= leases.MAX_FINDINGS_BYTES
    kept = json.loads(encoded)
    assert 40 < len(kept) < 100 and list(kept) == list(findings)[: len(kept)]
    odd = canary_lease("", done=True, failures='{"a":["NOT_FOUND","gone"],"b":"junk","c":[1,2]}')
    assert leases.canary_findings(odd) == ("node-c", {"a": ("NOT_FOUND", "gone")})
    assert leases.canary_findings(canary_lease("", done=True, failures="not json")) == ("node-c", {})


def canary_slot(api: FakeLeaseApi, holder: str, list_hash: str = LIST, **kw: Any) -> NodeSlot:
    return node_slot(api, holder, slots=2, seed=hash(holder) % 1000, canary=True, list_hash=list_hash, **kw)


async def canary_run(
    api: FakeLeaseApi,
    holder: str,
    seconds: float,
    log: list[tuple[str, str, float]],
    findings: dict[str, tuple[str, str]] | None = None,
    list_hash: str = LIST,
) -> NodeSlot:
    slot = canary_slot(api, holder, list_hash)
    async with slot.hold(Deadline(600)):
        log.append(("start", holder, now()))
        await asyncio.sleep(seconds)
        if slot.is_canary and findings is not None:
            slot.publish(findings)
        log.append(("end", holder, now()))
    return slot


def test_the_first_node_is_the_canary_and_pulls_alone_then_the_others_read_its_findings() -> None:
    api = FakeLeaseApi()
    log: list[tuple[str, str, float]] = []
    found = {"r/missing:v1": ("NOT_FOUND", "r/missing:v1: not found")}

    async def scenario() -> list[NodeSlot]:
        first = asyncio.ensure_future(canary_run(api, "node-0", 40, log, found))
        await asyncio.sleep(0.5)
        others = [canary_run(api, f"node-{i}", 20, log, found) for i in range(1, 5)]
        return [await first, *await asyncio.gather(*others)]

    slots = run_virtual(scenario())
    assert [s.is_canary for s in slots] == [True, False, False, False, False]
    starts = sorted((at, h) for kind, h, at in log if kind == "start")
    assert starts[0] == (0.0, "node-0")
    assert all(at >= 40 for at, _h in starts[1:])  # nobody pulled while the canary did
    assert peak(log) == 2  # afterwards the two slots as usual
    assert all(s.findings == found and s.canary_node == "node-0" for s in slots[1:])
    canary = api.store["pf-canary"]["metadata"]["annotations"]
    assert canary[leases.CANARY_DONE] == "true" and canary[leases.CANARY_LIST] == LIST
    assert holder_of(api.store["pf-canary"]) == ""


def test_an_interrupted_canary_leaves_the_canary_to_the_next_node() -> None:
    api = FakeLeaseApi()
    log: list[tuple[str, str, float]] = []

    async def scenario() -> NodeSlot:
        first = asyncio.ensure_future(canary_run(api, "node-0", 1000, log))
        await asyncio.sleep(10)
        second = asyncio.ensure_future(canary_run(api, "node-1", 5, log, {}))
        await asyncio.sleep(10)
        first.cancel()  # SIGTERM: released without findings
        with contextlib.suppress(asyncio.CancelledError):
            await first
        return await second

    second = run_virtual(scenario())
    assert second.is_canary
    assert api.store["pf-canary"]["metadata"]["annotations"][leases.CANARY_NODE] == "node-1"
    assert api.store["pf-canary"]["metadata"]["annotations"][leases.CANARY_DONE] == "true"


def test_a_dead_canary_is_taken_over_after_the_lease_duration() -> None:
    api = FakeLeaseApi()
    api.store["pf-canary"] = canary_lease("node-dead")
    api.store["pf-canary"]["metadata"]["resourceVersion"] = "1"
    log: list[tuple[str, str, float]] = []
    slot = run_virtual(canary_run(api, "node-1", 1, log, {}))
    assert slot.is_canary
    assert 30 <= log[0][2] <= 30 + 4.5


def test_a_new_list_gets_a_new_canary() -> None:
    api = FakeLeaseApi()
    old = json.dumps({"r/typo:v1": ["UNKNOWN", "invalid reference format"]})
    api.store["pf-canary"] = canary_lease("", done=True, list_hash="list-0", failures=old)
    api.store["pf-canary"]["metadata"]["resourceVersion"] = "1"
    log: list[tuple[str, str, float]] = []
    slot = run_virtual(canary_run(api, "node-1", 1, log, {}))
    assert slot.is_canary and slot.findings == {}
    notes = api.store["pf-canary"]["metadata"]["annotations"]
    assert notes[leases.CANARY_LIST] == LIST and notes[leases.CANARY_FAILURES] == "{}"
