"""parallel_nodes on the real cluster: the agents' own token takes the node-slot Leases through the namespaced Role
the collection renders (real RBAC), one node pulls at a time, and state=absent removes the Leases.

"One at a time" is read from the per-node fault proxies, as orders of events, never as speeds: while the first
node's blob requests are held unanswered, no other node may send a request for the image (with the cap off, every
node does at once); and once released, the nodes' pull windows (first request to the end of the last) never overlap.
While held, a second `rollout` task (a short timeout: the hold outlasts it) sees the other nodes `waiting` for a
slot, in its result, its timeout message and its progress lines (the state it reports cannot change before the
test releases the hold).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from e2e.support import HELD_HOST, VENV_BIN, Cluster, HeldRollout, nodes_by_name, ref, role_vars, run_playbook
from infra._util import wait_until

IMAGE = ref("e2e/slots-a")
# How long the other nodes are watched for a request while the slot holder is held. A correct cap holds for any
# length; a broken one shows in a fraction of it (each agent sends its first request right after starting).
HELD_WATCH_S = 8.0


def leases(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    listed = cluster.raw_get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
    assert listed is not None
    return list(listed["items"])


def image_requests(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return [r for r in cluster.proxy_requests(node) if "/e2e/slots-a/" in str(r["path"])]


def pull_window(cluster: Cluster, node: str) -> tuple[float, float]:
    records = image_requests(cluster, node)
    assert records, f"{node}: no request for the image reached its proxy"
    return min(r["started"] for r in records), max(r["ended"] or r["started"] for r in records)


def agents_running(cluster: Cluster, namespace: str) -> int:
    listed = cluster.raw_get(f"/api/v1/namespaces/{namespace}/pods") or {}
    return sum(1 for pod in listed.get("items", []) for status in pod["status"].get("initContainerStatuses") or []
               if status["name"] == "prefetch" and (status.get("state") or {}).get("running"))


def rollout_while_held(cluster: Cluster, collections_path: Path, workdir: Path, name: str,
                       connection: str = "local") -> tuple[str, Any]:
    """The rollout module alone, on the held instance (timeout 10 s, a progress line a second): its output and
    registered result. ``connection`` ``elsewhere`` (tests/e2e/connection_plugins): as if on another host."""
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "rollout.json"
    task = {"name": name, "namespace": name, "kubeconfig": str(cluster.kubeconfig), "timeout": 10,
            "progress_interval": 1}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"stackrox.prefetch.rollout": task, "register": "seen", "ignore_errors": True},
        {"ansible.builtin.copy": {"content": "{{ seen | to_json }}", "dest": str(saved), "mode": "0644"}}]}]
    (workdir / "rollout.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env.pop("K8S_AUTH_KUBECONFIG", None)
    env["ANSIBLE_CONNECTION_PLUGINS"] = str(Path(__file__).parent / "connection_plugins")
    command = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", connection,
               "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}", str(workdir / "rollout.yml")]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and saved.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(saved.read_text())


def test_one_node_slot_serialises_the_nodes_and_absent_removes_the_leases(
    cluster: Cluster, collections_path: Path, workdir: Path
) -> None:
    name = "e2e-slots"
    cluster.clear_proxy_requests()
    # The agents' overall timeout covers the hold and the other nodes' wait for the slot (the role_vars' 60 s would
    # not, with the second rollout run during the hold).
    held = HeldRollout(cluster, collections_path, workdir / "1", name, IMAGE, cluster.node_names, action="hold",
                       images_parallel_nodes=1, images_overall_timeout="300s")
    try:
        assert wait_until(lambda: any(image_requests(cluster, n) for n in cluster.node_names), 180, 0.5), \
            "no node ever asked for the image"
        time.sleep(HELD_WATCH_S)
        asking = [n for n in cluster.node_names if image_requests(cluster, n)]
        assert len(asking) == 1, f"nodes pulling at once with parallel_nodes=1: {asking}"
        holders = [lease["spec"].get("holderIdentity") for lease in leases(cluster, name)]
        assert holders == [asking[0]], holders

        assert wait_until(lambda: agents_running(cluster, name) == len(cluster.node_names), 180, 0.5)
        output, seen = rollout_while_held(cluster, collections_path, workdir / "held-rollout", name)
        others = sorted(n for n in cluster.node_names if n != asking[0])
        statuses = {n["node"]: n["status"] for n in seen["nodes"]}
        assert statuses == {asking[0]: "pulling", **{n: "waiting" for n in others}}, seen["nodes"]
        assert f"{len(others)} node(s) still waiting for a node slot (parallel_nodes=1)" in seen["msg"], seen["msg"]
        assert f"1 pulling, {len(others)} waiting for a slot" in output, output[-3000:]
    finally:
        held.release()
    result, _ = held.result()
    assert result.rc == 0, result.stdout[-6000:]
    nodes = nodes_by_name(result, HELD_HOST)
    assert sorted(nodes) == sorted(cluster.node_names)
    assert all(n["status"] == "succeeded" for n in nodes.values()), nodes
    # A denied or unreachable Lease API makes the agent pull without a slot and say so: no such warning here.
    assert not [n["warnings"] for n in nodes.values() if n["warnings"]], nodes
    assert all(cluster.image_present(node, IMAGE) for node in cluster.node_names)

    windows = sorted(pull_window(cluster, node) for node in cluster.node_names)
    for (_start, end), (next_start, _end) in zip(windows, windows[1:]):
        assert next_start >= end, windows

    held_leases = leases(cluster, name)
    assert [lease["metadata"]["name"] for lease in held_leases] == [f"{name}-slot-0"]
    assert held_leases[0]["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    assert not held_leases[0]["spec"].get("holderIdentity"), held_leases[0]  # released when done

    hosts = {HELD_HOST: role_vars(cluster, name, [IMAGE], images_state="absent")}
    removed = run_playbook(workdir / "2", collections_path, hosts)
    assert removed.rc == 0, removed.stdout[-6000:]
    assert leases(cluster, name) == []
