#!/usr/bin/env bash
# ansible-test integration for every target (manifest, apply, rollout) against a simulated 3-node cluster.
# Starts tests/simcluster (API server, nodes with real containerd, its own registry), pushes the test images,
# writes tests/integration/integration_config.yml into a private build of the collection, runs
# `ansible-test integration --local`, and stops the cluster on exit, also on failure and on SIGINT/SIGTERM.
# Usage: scripts/test-integration.sh [target ...]   (default: manifest apply rollout). KEEP=1 keeps the work dir.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py="$top/.venv/bin/python"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest apply rollout)
log() { printf 'test-integration: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-integration.XXXXXX")
sim_pid=""
stop_cluster() {
  [ -n "$sim_pid" ] || return 0
  if kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$sim_pid" 2>/dev/null; then
      log "simcluster did not stop within 60s; killing it"
      kill -KILL "$sim_pid" 2>/dev/null || true
    fi
  fi
  wait "$sim_pid" 2>/dev/null || true
  sim_pid=""
}
cleanup() {
  local status=$?
  stop_cluster
  if [ "${KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private build of the collection: other engineers' builds of build/ cannot remove the generated config.
collection=$(BUILD_ROOT="$work/build" bash scripts/build-tree.sh)

log "starting the simulated cluster in $work/sim"
PYTHONPATH="$top/tests" "$py" -m simcluster up --dir "$work/sim" --nodes 3 >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 300); do
  grep -qx ready "$work/sim.out" 2>/dev/null && break
  if ! kill -0 "$sim_pid" 2>/dev/null; then
    log "simcluster exited before it was ready:"; cat "$work/sim.err" >&2
    tail -n 30 "$work/sim/simcluster.log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 1
done
grep -qx ready "$work/sim.out" || { log "simcluster not ready within 300s"; tail -n 30 "$work/sim/simcluster.log" >&2; exit 1; }

log "pushing the test images and writing integration_config.yml"
PYTHONPATH="$top/tests" "$py" - "$work/sim/cluster.json" "$collection/tests/integration/integration_config.yml" <<'PY'
import json
import sys

import yaml
from infra.images import push_test_image

cluster = json.load(open(sys.argv[1]))
registry = cluster["registry"]
images = []
for repo, tag in (("team/app", "v1"), ("team/db", "v2")):
    push_test_image(registry["upstream"], repo, tag, size_mib=1, layers=2, seed=f"it-{repo}")
    images.append(f"{registry['name']}/{repo}:{tag}")
config = {
    "prefetch_kubeconfig": cluster["kubeconfig"],
    "prefetch_kubeconfig_viewer": cluster["kubeconfig_viewer"],
    "prefetch_api_url": cluster["api_url"].rstrip("/"),
    "prefetch_ca_path": cluster["ca_path"],
    "prefetch_agent_image": cluster["agent_image"]["image"],
    "prefetch_agent_version": cluster["agent_image"]["version"],
    "prefetch_images": images,
    "prefetch_missing_image": f"{registry['name']}/team/missing:v1",
    "prefetch_nodes": sorted(node["name"] for node in cluster["nodes"]),
}
with open(sys.argv[2], "w") as out:
    yaml.safe_dump(config, out)
PY

log "ansible-test integration ${targets[*]}"
cd "$collection"
PATH="$top/.venv/bin:$PATH" ansible-test integration --local --python 3.11 --color no "${targets[@]}"
