#!/usr/bin/env bash
# ansible-test integration for every target (manifest, apply, rollout) against a real local 3-node Kubernetes
# cluster (tests/kube; see scripts/lib-cluster.sh): pushes the test images to the cluster's registry, writes
# tests/integration/integration_config.yml into a private build of the collection, runs
# `ansible-test integration --local`, and stops the cluster on exit, also on failure and on SIGINT/SIGTERM.
# Usage: scripts/test-integration.sh [target ...]   (default: manifest apply rollout). KEEP=1 keeps the work dir.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py="$top/.venv/bin/python"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest apply rollout)
log() { printf 'test-integration: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-integration.XXXXXX")
kube_pid=""
cleanup() {
  local status=$?
  stop_cluster
  if [ "${KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private build of the collection: other engineers' builds of build/ cannot remove the generated config.
collection=$(BUILD_ROOT="$work/build" bash scripts/build-tree.sh)
ensure_agent_image
start_cluster "$work/kube" it 3

log "pushing the test images and writing integration_config.yml"
PYTHONPATH="$top/tests" "$py" - "$work/kube/cluster.json" "$collection/tests/integration/integration_config.yml" <<'PY'
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
    "prefetch_audit_log": cluster["audit_log"],
}
with open(sys.argv[2], "w") as out:
    yaml.safe_dump(config, out)
PY

log "ansible-test integration ${targets[*]}"
cd "$collection"
PATH="$top/.venv/bin:$PATH" ansible-test integration --local --python 3.11 --color no "${targets[@]}"
