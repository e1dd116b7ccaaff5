# shellcheck shell=bash
# Sourced by the scripts that run a local Kubernetes cluster (test-e2e.sh, test-integration.sh, demo.sh), the agent
# image or the built runtimes (test-image.sh, test-agent.sh).
# Expects $top (the repo) and a log function; sets kube_pid. Callers stop the cluster in their EXIT trap.
: "${top:?lib-cluster.sh needs \$top}"

# The agent image (build/image/prefetch-agent.oci.tar), built by scripts/image.sh unless it is newer than every
# file it is built from (the agent, its protos, the Dockerfile and the build script itself): the kubelets pull it
# from the cluster's registry as a user's cluster pulls it; test-image tests that archive.
agent_image_fresh() {
  local archive="$top/build/image/prefetch-agent.oci.tar"
  [ -f "$archive" ] && [ -z "$(find "$top/agent" "$top/protos" "$top/Dockerfile" "$top/scripts/image.sh" \
        "$top/tests/agent_image/build.py" -newer "$archive" -type f \
        -not -path '*/__pycache__/*' -not -path '*.egg-info*' -not -path '*/build/*' -print -quit)" ]
}
ensure_agent_image() {
  if agent_image_fresh; then
    log "agent image up to date: $top/build/image/prefetch-agent.oci.tar"
    return 0
  fi
  mkdir -p "$top/build/image"
  # One build at a time (make test's two lanes both need the image): the second waits, then finds it fresh.
  (
    flock 9
    agent_image_fresh && exit 0
    log "building the agent image (scripts/image.sh)"
    bash "$top/scripts/image.sh"
  ) 9>"$top/build/image/.build.lock"
}

# start_cluster DIR NAME NODES: `python -m kube up` in the background (its own session, so a Ctrl-C reaches only
# this script, whose trap stops it in order); waits for its "ready" line.
start_cluster() {
  local dir=$1 name=$2 nodes=$3
  log "Kubernetes binaries (tests/kube/build.sh; the first run builds them)"
  bash "$top/tests/kube/build.sh" >/dev/null
  log "starting a $nodes-node Kubernetes cluster in $dir"
  mkdir -p "$dir"
  PYTHONPATH="$top/tests" setsid "$top/.venv/bin/python" -m kube up --dir "$dir" --nodes "$nodes" --name "$name" \
    >"$dir/up.out" 2>&1 </dev/null &
  kube_pid=$!
  for _ in $(seq 600); do
    grep -q '^ready' "$dir/up.out" 2>/dev/null && break
    kill -0 "$kube_pid" 2>/dev/null || { cat "$dir/up.out" >&2; tail -n 40 "$dir/kube.log" >&2 2>/dev/null; return 1; }
    sleep 0.5
  done
  grep -q '^ready' "$dir/up.out" || { log "the cluster did not become ready in 300s"; tail -n 40 "$dir/kube.log" >&2; return 1; }
  log "cluster ready: KUBECONFIG=$dir/kubeconfig"
}

# Stops the cluster started by start_cluster (SIGTERM, then waits up to 120 s, then SIGKILL).
stop_cluster() {
  [ -n "${kube_pid:-}" ] || return 0
  if kill -0 "$kube_pid" 2>/dev/null; then
    log "stopping the cluster"
    kill -TERM "$kube_pid" 2>/dev/null || true
    for _ in $(seq 240); do kill -0 "$kube_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$kube_pid" 2>/dev/null || true
  fi
  wait "$kube_pid" 2>/dev/null || true
  kube_pid=""
}

# The runtimes of $PREFETCH_RUNTIMES (default: all) that the project builds (tests/runtimes/build.sh; cached, so
# only a first run pays its few minutes), built before a suite starts: the build's progress goes to the terminal,
# not into a test's timeout.
ensure_runtimes() {
  local runtime
  for runtime in containerd2 crio; do
    case ",${PREFETCH_RUNTIMES:-containerd,containerd2,crio}," in
      *",$runtime,"*) bash "$top/tests/runtimes/build.sh" "$runtime" >/dev/null || return 1 ;;
    esac
  done
}
