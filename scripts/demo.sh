#!/usr/bin/env bash
# make demo: a real local 3-node Kubernetes cluster (tests/kube: kube-apiserver, controller-manager, scheduler and
# real kubelets on real containerd, built from their Go modules on the first run, which says so), a registry with a
# few demo images, then `ansible-playbook stackrox.prefetch.prefetch` from the installed collection tarball against
# it, which prints the per-node report. Everything is torn down at the end, unless KEEP=1 (then it prints the
# kubeconfig path and how to stop the cluster).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x .venv/bin/ansible-playbook ] || bash scripts/bootstrap.sh
py=$top/.venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-demo-XXXXXX")
kube_pid=""
started=$(date +%s)
say() { printf '\n==> %s\n' "$*"; }
log() { printf '    %s\n' "$*"; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${KEEP:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
    exit 0
  fi
  [ -z "$kube_pid" ] || say "tearing down the cluster"
  stop_cluster
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "demo failed; logs kept in $work" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building the collection tarball and installing it into $work/collections"
tree=$(BUILD_ROOT="$work/tree" bash scripts/build-tree.sh 2>/dev/null)
.venv/bin/ansible-galaxy collection build "$tree" --output-path "$work/dist" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/collections" .venv/bin/ansible-galaxy collection install --offline "$work"/dist/stackrox-prefetch-*.tar.gz -p "$work/collections" >/dev/null
ls "$work"/dist

say "the agent image, the Kubernetes binaries and a 3-node cluster with its registry in $work/cluster"
ensure_agent_image
start_cluster "$work/cluster" demo 3

say "pushing demo images"
PYTHONPATH=tests "$py" - "$work/cluster/cluster.json" "$work/images.txt" <<'PY'
import json, sys
from infra.images import push_test_image
info = json.load(open(sys.argv[1]))
images = [("demo/web", "1.0", 8), ("demo/api", "1.0", 6), ("demo/worker", "2.3", 4), ("demo/db", "14", 10)]
with open(sys.argv[2], "w") as listing:
    listing.write("# demo image list (same format as the agent's --image-list-file)\n")
    for repo, tag, mib in images:
        push_test_image(info["registry"]["upstream"], repo, tag, size_mib=mib, layers=2, seed=repo)
        listing.write(f"registry.test:5000/{repo}:{tag}\n")
nodes = ", ".join(f"{n['name']}{' (control-plane, tainted)' if n['control_plane'] else ''}" for n in info["nodes"])
print(f"registry {info['registry']['upstream']} (as registry.test:5000), nodes: {nodes}")
PY
cat "$work/images.txt"

agent=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['agent_image']['image'])" "$work/cluster/cluster.json")
version=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['agent_image']['version'])" "$work/cluster/cluster.json")
say "ansible-playbook stackrox.prefetch.prefetch (from the installed tarball)"
(
  cd "$work"
  ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
    "$top/.venv/bin/ansible-playbook" stackrox.prefetch.prefetch \
    -e kubeconfig="$work/cluster/kubeconfig" -e images_file="$work/images.txt" \
    -e name=demo -e namespace=prefetch-demo \
    -e images_image="$agent" -e images_version="$version" -e images_initial_pull_attempt_timeout=10s
) | tee "$work/playbook.out"

kubectl=("$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['bin_dir'])" "$work/cluster/cluster.json")/kubectl" --kubeconfig "$work/cluster/kubeconfig")
say "kubectl get nodes; kubectl rollout status daemonset/demo (the real cluster's own word)"
"${kubectl[@]}" get nodes -o wide -L image-prefetcher.stackrox.io/demo
"${kubectl[@]}" -n prefetch-demo rollout status daemonset/demo --timeout=60s

say "images now in each node's containerd (ctr -n k8s.io images ls, not the agent's word)"
"$py" - "$work/cluster/cluster.json" <<'PY'
import json, subprocess, sys
info = json.load(open(sys.argv[1]))
for node in info["nodes"]:
    out = subprocess.run(["ctr", "--address", node["socket"], "-n", "k8s.io", "images", "ls", "-q"],
                         capture_output=True, text=True, check=True).stdout.split()
    demo = sorted(i for i in out if i.startswith("registry.test:5000/demo/") and "@" not in i)
    print(f"{node['name']}: {' '.join(demo)}")
PY
say "demo finished in $(( $(date +%s) - started ))s"
if [ "${KEEP:-0}" = 1 ]; then
  cat <<MSG

The cluster keeps running (KEEP=1):
  kubeconfig:  $work/cluster/kubeconfig   (e.g. KUBECONFIG=$work/cluster/kubeconfig kubectl get pods -A)
  cluster:     $work/cluster/cluster.json
  kubectl:     ${kubectl[0]}
  stop it:     kill $kube_pid   (it stops everything it started; then rm -rf $work)
MSG
fi
