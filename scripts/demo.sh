#!/usr/bin/env bash
# make demo: a local registry with a few demo images, a simulated 3-node cluster (real containerd per node, simulated
# API server), then `ansible-playbook stackrox.prefetch.prefetch` from the installed collection tarball against it,
# which prints the per-node report. Everything is torn down at the end, unless KEEP=1 (then it prints the
# kubeconfig path and how to stop the cluster).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x .venv/bin/ansible-playbook ] || bash scripts/bootstrap.sh
py=$top/.venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-demo-XXXXXX")
sim_pid=""
started=$(date +%s)
say() { printf '\n==> %s\n' "$*"; }

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${KEEP:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
    exit 0
  fi
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    say "tearing down the simulated cluster"
    kill -TERM "$sim_pid" 2>/dev/null || true
    for _ in $(seq 120); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$sim_pid" 2>/dev/null || true
  fi
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

say "starting a registry and a simulated 3-node cluster (API server, containerd per node) in $work/cluster"
mkdir -p "$work/cluster"
# setsid: with KEEP=1 the cluster outlives this script and is stopped later with `kill <pid>`.
PYTHONPATH=tests setsid "$py" -m simcluster up --dir "$work/cluster" --nodes 3 --name demo \
  >"$work/cluster/up.out" 2>&1 </dev/null &
sim_pid=$!
for _ in $(seq 240); do
  grep -q '^ready' "$work/cluster/up.out" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/cluster/up.out" >&2; exit 1; }
  sleep 0.5
done
grep -q '^ready' "$work/cluster/up.out" || { echo "the simulated cluster did not become ready" >&2; exit 1; }

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
nodes = ", ".join(f"{n['name']}{' (control-plane, tainted)' if n['taints'] else ''}" for n in info["nodes"])
print(f"registry {info['registry']['upstream']} (as registry.test:5000), nodes: {nodes}")
PY
cat "$work/images.txt"

agent=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['agent_image']['image'])" "$work/cluster/cluster.json")
say "ansible-playbook stackrox.prefetch.prefetch (from the installed tarball)"
(
  cd "$work"
  ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
    "$top/.venv/bin/ansible-playbook" stackrox.prefetch.prefetch \
    -e kubeconfig="$work/cluster/kubeconfig" -e images_file="$work/images.txt" \
    -e name=demo -e namespace=prefetch-demo \
    -e images_image="$agent" -e images_version=sim -e images_initial_pull_attempt_timeout=10s
) | tee "$work/playbook.out"

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
  stop it:     kill $sim_pid && rm -rf $work
MSG
fi
