"""`fetch --parallel-nodes`: the node slot around the pulls, in-process against a gRPC fake CRI and a fake Lease API.

Real time, small durations; assertions on time are bounds taken from the settings.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakecri import HANG, FakeCri, fail, main_beside
from fakelease import NAMESPACE, FakeLeaseApi

from image_prefetcher import leases
from image_prefetcher.cli import FETCH_FLAGS, fetch_options
from image_prefetcher.credentials import ChainedCredentials
from image_prefetcher.fetch import Extensions, FetchRun, node_slot_for
from image_prefetcher.flags import FlagError, parse_flags
from image_prefetcher.incluster import InClusterConfig, load_incluster_config
from image_prefetcher.leases import NodeSlot, SlotConfig, holder_of, list_fingerprint
from image_prefetcher.logs import configure_logging

IMAGE = "registry.test:5000/team/app:v1"


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NODE_NAME", "INSTANCE_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


def run_fetch(
    tmp_path: Path,
    api: FakeLeaseApi | str,
    *flags: str,
    script: dict[str, Any] | None = None,
    during: Any = None,
    present: set[str] | None = None,
    images: tuple[str, ...] = (IMAGE,),
    **slot_settings: Any,
) -> tuple[int, dict[str, Any], FakeCri]:
    termination_log = tmp_path / "termination-log"
    fake = FakeCri(tmp_path / "cri.sock", scripts=script or {}, present=set(present or ()))
    argv = [f"--termination-log={termination_log}", f"--cri-socket={fake.socket_path}", "--parallel-nodes=1", *flags]
    options = fetch_options(parse_flags(FETCH_FLAGS, argv))
    log = configure_logging(True, "text", io.StringIO())
    run = FetchRun(options, list(images), ChainedCredentials([]), Extensions(), log)
    config = SlotConfig(**{"namespace": NAMESPACE, "instance": "pf", "holder": "node-1", "slots": 1, **slot_settings})
    run.node_slot = (lambda: api) if isinstance(api, str) else (lambda: NodeSlot(config, api, log))

    code = asyncio.run(main_beside(fake, run, during))
    return code, json.loads(termination_log.read_bytes()), fake


def test_the_pulls_run_inside_the_slot_and_the_summary_says_how_long_the_node_waited(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    code, summary, _fake = run_fetch(tmp_path, api)
    assert code == 0
    assert (summary["ok"], summary["complete"], summary["waited"]) == (1, True, 0.0)
    assert "warnings" not in summary
    assert [verb for verb, _ in api.calls] == ["list", "create", "update"]
    assert api.holders() == {"pf-slot-0": ""}


def test_without_parallel_nodes_there_is_no_waited_key(tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    options = fetch_options(parse_flags(FETCH_FLAGS, [f"--termination-log={termination_log}"]))
    run = FetchRun(options, [], ChainedCredentials([]), Extensions(), configure_logging(False, "text", io.StringIO()))
    assert run.node_slot is None
    assert asyncio.run(run.main()) == 0
    assert "waited" not in json.loads(termination_log.read_bytes())


def test_a_wait_that_outlasts_the_overall_timeout_fails_the_images_with_the_reason(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-busy")

    async def keep_renewing(_run: FetchRun, _fake: FakeCri) -> None:
        for _ in range(20):
            await asyncio.sleep(0.2)
            api.touch("pf-slot-0")

    code, summary, fake = run_fetch(tmp_path, api, "--overall-timeout=2s", during=keep_renewing)
    assert code == 0 and fake.calls == []
    assert (summary["failed"], summary["complete"]) == (1, False)
    # The overall deadline starts with the run, before the CRI connection and the wait, so the wait that lasted
    # until it is a little shorter than the 2 s (1.99 s on a loaded machine); giving up early would be far shorter.
    assert 1.0 <= summary["waited"] < 4.0
    assert summary["errors"][IMAGE].startswith("timeout: the overall timeout passed while waiting 2s for a node slot")
    assert api.holders() == {"pf-slot-0": "node-busy"}


def test_sigterm_while_pulling_releases_the_slot(tmp_path: Path) -> None:
    api = FakeLeaseApi()

    async def terminate(run: FetchRun, fake: FakeCri) -> None:
        while not fake.calls:
            await asyncio.sleep(0.01)
        assert api.holders() == {"pf-slot-0": "node-1"}
        run._on_signal(signal.SIGTERM)  # as the loop's handler does

    code, summary, fake = run_fetch(tmp_path, api, script={IMAGE: [HANG]}, during=terminate)
    assert code == 128 + signal.SIGTERM
    assert summary["complete"] is False
    assert api.holders() == {"pf-slot-0": ""}
    assert fake.calls[0].cancelled


def test_no_slot_to_be_had_pulls_anyway_and_warns(tmp_path: Path) -> None:
    code, summary, _ = run_fetch(tmp_path, "no instance name (--instance-name or INSTANCE_NAME), pulled without ...")
    assert code == 0 and summary["ok"] == 1 and summary["waited"] == 0.0
    assert summary["warnings"] == ["node slot: no instance name (--instance-name or INSTANCE_NAME), pulled without ..."]


def test_an_unreachable_lease_api_pulls_after_the_bound_and_warns(tmp_path: Path) -> None:
    api = FakeLeaseApi(down=True)
    code, summary, _ = run_fetch(tmp_path, api, unreachable_bound_s=0.0)
    assert code == 0 and summary["ok"] == 1
    (warning,) = summary["warnings"]
    assert warning.startswith("node slot: the Lease API did not answer for 0s, pulled without a node slot")


# --- node_slot_for: where the settings come from ----------------------------------------------------------------------


def options(*flags: str) -> Any:
    return fetch_options(parse_flags(FETCH_FLAGS, ["--parallel-nodes=2", *flags]))


Load = Callable[[Mapping[str, str]], InClusterConfig]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    (tmp_path / "token").write_text("secret-token")
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "namespace").write_text("sa-ns")
    return lambda env: load_incluster_config(env, tmp_path)


CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "NODE_NAME": "node-7"}


def test_node_slot_settings_from_the_downward_api(load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-7")
    log = configure_logging(False, "text", io.StringIO())
    env = {**CLUSTER, "INSTANCE_NAME": "pf"}
    slot = node_slot_for(options("--lease-duration=20500ms", "--canary"), log, [IMAGE], env, load)
    assert isinstance(slot, NodeSlot)
    fingerprint = list_fingerprint([IMAGE], False)
    assert slot.config == SlotConfig("sa-ns", "pf", "node-7", 2, 21, 60.0, canary=True, list_hash=fingerprint)
    env = {**CLUSTER, "INSTANCE_NAME": "pf", "POD_NAMESPACE": "pod-ns"}
    slot = node_slot_for(options("--instance-name=other"), log, environ=env, load_config=load)
    assert isinstance(slot, NodeSlot) and (slot.config.namespace, slot.config.instance) == ("pod-ns", "other")
    slot = node_slot_for(options("--lease-namespace=flag-ns"), log, environ=env, load_config=load)
    assert isinstance(slot, NodeSlot) and slot.config.namespace == "flag-ns"


def test_node_slot_problems_are_reasons_not_errors(load: Load) -> None:
    log = configure_logging(False, "text", io.StringIO())
    missing = node_slot_for(options(), log, environ=CLUSTER, load_config=load)
    assert missing == (
        "no instance name (--instance-name or INSTANCE_NAME), pulled without a node slot "
        "(--parallel-nodes 2 not enforced)"
    )
    outside = node_slot_for(options(), log, environ={"INSTANCE_NAME": "pf"}, load_config=load)
    assert isinstance(outside, str) and outside.startswith("no Kubernetes client (unable to load in-cluster")
    assert "secret-token" not in outside


def test_with_if_not_present_and_every_image_there_no_slot_is_waited_for(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    api.put("pf-slot-0", "node-busy")
    code, summary, fake = run_fetch(tmp_path, api, "--pull-policy=IfNotPresent", script={}, present={IMAGE})
    assert code == 0 and (summary["skipped"], summary["waited"]) == (1, 0.0)
    assert api.calls == [] and fake.calls == []


MISSING = "registry.test:5000/team/missing:v1"
TYPO = "registry.test:5000/Team/app:v1"


def test_the_canary_publishes_its_permanent_failures_and_a_later_node_skips_them(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    images = (IMAGE, MISSING, TYPO)
    script = {
        MISSING: [fail(grpc.StatusCode.NOT_FOUND, f'failed to resolve reference "{MISSING}": not found')],
        TYPO: [fail(grpc.StatusCode.UNKNOWN, f'failed to parse image reference "{TYPO}": invalid reference format')],
    }
    flags = ("--canary", "--not-found=fail")
    canary: dict[str, Any] = {"canary": True, "list_hash": list_fingerprint(images, True)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, first, fake = run_fetch(tmp_path / "a", api, *flags, script=script, images=images, holder="node-0", **canary)
    assert code == 0 and first["canary"] is True and (first["ok"], first["failed"]) == (1, 2)
    assert len(fake.calls) == 3
    code, later, fake = run_fetch(tmp_path / "b", api, *flags, script=script, images=images, holder="node-1", **canary)
    assert code == 0 and "canary" not in later and (later["ok"], later["failed"]) == (1, 2)
    assert [c.image for c in fake.calls] == [IMAGE]  # the failures were not tried again
    assert later["errors"][MISSING] == (
        f'not_found: failed to resolve reference "{MISSING}": not found (found by the canary node node-0)'
    )
    assert later["errors"][TYPO].startswith("invalid_reference: failed to parse image reference")
    assert later["errors"][TYPO].endswith("(found by the canary node node-0)")


def test_an_image_not_found_under_retry_is_no_finding(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    script = {MISSING: [fail(grpc.StatusCode.NOT_FOUND, "not found")]}
    canary: dict[str, Any] = {"canary": True, "list_hash": "h"}
    _code, summary, _ = run_fetch(
        tmp_path, api, "--canary", "--overall-timeout=1s", script=script, images=(MISSING,), **canary
    )
    # Retried until the overall timeout: the canary's run did not complete, so it publishes nothing.
    assert summary["complete"] is False
    notes = api.store["pf-canary"]["metadata"]["annotations"]
    assert leases.CANARY_DONE not in notes and holder_of(api.store["pf-canary"]) == ""


def test_canary_needs_parallel_nodes() -> None:
    with pytest.raises(FlagError, match="--canary needs --parallel-nodes"):
        fetch_options(parse_flags(FETCH_FLAGS, ["--canary"]))
