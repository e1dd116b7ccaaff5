#!/usr/bin/env bash
# End-to-end tests: first the simulator's own tests (tests/simcluster_tests/test_{scheduling,controllers,kubelet,
# cluster}.py), then the collection tarball (built from scripts/build-tree.sh's tree, installed into a temp
# ANSIBLE_COLLECTIONS_PATH), a simulated 3-node cluster (`python -m simcluster up`, with its own registry) and the
# test images pushed to it, then pytest tests/e2e. Everything started here is stopped on exit, also on failure and on
# SIGINT/SIGTERM.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=$top/.venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-e2e-XXXXXX")
sim_pid=""
test_pid=""
log() { printf 'test-e2e: %s\n' "$*" >&2; }

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
    kill -TERM "$test_pid" 2>/dev/null || true   # tests/e2e/conftest.py turns SIGTERM into a teardown
    wait "$test_pid" 2>/dev/null || true
  fi
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    log "stopping the simulated cluster"
    kill -TERM "$sim_pid" 2>/dev/null || true
    for _ in $(seq 120); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    log "kept $work for inspection (simcluster.log, nodes/*/pods/*/containers/*)"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
log "simulator tests (scheduling, controllers, kubelet, a 3-node SimCluster with the real agent)"
PYTHONPATH=tests "$py" -m pytest -p no:cacheprovider -q --basetemp "$work/pytest-sim" tests/simcluster_tests/test_scheduling.py \
  tests/simcluster_tests/test_controllers.py tests/simcluster_tests/test_kubelet.py tests/simcluster_tests/test_cluster.py

log "building and installing the collection tarball"
tree=$(BUILD_ROOT="$work/tree" bash scripts/build-tree.sh)
.venv/bin/ansible-galaxy collection build "$tree" --output-path "$work/dist" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/collections" .venv/bin/ansible-galaxy collection install --offline "$work"/dist/stackrox-prefetch-*.tar.gz -p "$work/collections" >/dev/null

log "starting the simulated cluster in $work/cluster"
mkdir -p "$work/cluster"
PYTHONPATH=tests "$py" -m simcluster up --dir "$work/cluster" --nodes 3 --name sim >"$work/cluster/up.out" 2>&1 &
sim_pid=$!
for _ in $(seq 240); do
  grep -q '^ready' "$work/cluster/up.out" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/cluster/up.out" >&2; exit 1; }
  sleep 0.5
done
grep -q '^ready' "$work/cluster/up.out" || { log "the simulated cluster did not become ready"; exit 1; }

log "pushing the test images"
PYTHONPATH=tests "$py" - "$work/cluster/cluster.json" <<'PY'
import json, sys
from e2e.support import push_all
info = json.load(open(sys.argv[1]))
print(f"pushed {len(push_all(info['registry']['upstream']))} test images", file=sys.stderr)
PY

log "running pytest tests/e2e"
E2E_CLUSTER_DIR="$work/cluster" E2E_COLLECTIONS_PATH="$work/collections" PYTHONPATH=tests \
  "$py" -m pytest -p no:cacheprovider -q --basetemp "$work/pytest" tests/e2e "$@" &
test_pid=$!
set +e
wait "$test_pid"
rc=$?
set -e
test_pid=""
log "e2e finished in $(( $(date +%s) - start ))s (pytest exit $rc)"
exit "$rc"
