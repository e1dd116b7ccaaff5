#!/usr/bin/env bash
# End-to-end tests on a real local Kubernetes cluster (tests/kube: etcd, kube-apiserver, controller-manager,
# scheduler, CoreDNS, kube-proxy and per node a real kubelet on a real containerd, built from their Go modules on the
# first run and cached): the collection tarball (built from scripts/build-tree.sh's tree, installed into a temp
# ANSIBLE_COLLECTIONS_PATH), the agent image (scripts/image.sh, rebuilt when its sources changed) pulled by the
# kubelets from the cluster's registry, the test images pushed to it, then pytest tests/e2e.
# Everything started here is stopped on exit, also on failure and on SIGINT/SIGTERM.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=$top/.venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-e2e-XXXXXX")
kube_pid=""
test_pid=""
log() { printf 'test-e2e: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
    kill -TERM "$test_pid" 2>/dev/null || true   # tests/e2e/conftest.py turns SIGTERM into a teardown
    wait "$test_pid" 2>/dev/null || true
  fi
  stop_cluster
  if [ "$rc" -ne 0 ]; then
    log "kept $work for inspection (cluster/kube.log, cluster/nodes/*/kubelet.log, cluster/apiserver/*.log)"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
ensure_agent_image
log "building and installing the collection tarball"
tree=$(BUILD_ROOT="$work/tree" bash scripts/build-tree.sh)
.venv/bin/ansible-galaxy collection build "$tree" --output-path "$work/dist" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/collections" .venv/bin/ansible-galaxy collection install --offline "$work"/dist/stackrox-prefetch-*.tar.gz -p "$work/collections" >/dev/null

start_cluster "$work/cluster" e2e 3

log "pushing the test images"
PYTHONPATH=tests "$py" - "$work/cluster/cluster.json" <<'PY'
import json, sys
from e2e.support import push_all
info = json.load(open(sys.argv[1]))
print(f"pushed {len(push_all(info['registry']['upstream']))} test images", file=sys.stderr)
PY

log "running pytest tests/e2e"
E2E_CLUSTER_DIR="$work/cluster" E2E_COLLECTIONS_PATH="$work/collections" PYTHONPATH=tests \
  "$py" -m pytest -p no:cacheprovider -q --durations=20 --basetemp "$work/pytest" tests/e2e "$@" &
test_pid=$!
set +e
wait "$test_pid"
rc=$?
set -e
test_pid=""
log "e2e finished in $(( $(date +%s) - start ))s (pytest exit $rc)"
exit "$rc"
