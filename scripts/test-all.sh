#!/usr/bin/env bash
# Runs every suite, even after a failure, then prints one closing line: "suites: N passed, N failed".
#
# Two lanes run side by side, because the end-to-end suite spends much of its time waiting on kubelets, pods and
# timeouts while the others keep a core busy (the split balances the two lanes' times):
#   e2e lane:    test-e2e                                                  (the longest suite, on its own cluster)
#   other lane:  lint, test-agent, test-integration, test-collection, test-image   (integration on a second cluster)
# The agent image both lanes use is built (or found up to date) first; the Kubernetes build takes a lock
# (tests/kube/build.sh), so a cold run builds it once for both lanes.
# Each suite's output goes to build/test-logs/<suite>.log and is printed whole when the suite ends, so the two
# lanes never interleave. SERIAL=1 runs the suites one after the other, streaming their output.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
log() { printf 'test-all: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh

e2e_lane=(test-e2e)
other_lane=(lint test-agent test-integration test-collection test-image)
logs=$top/build/test-logs
results=$logs/results
rm -rf "$logs"
mkdir -p "$logs"
: >"$results"
start_all=$(date +%s)

# run_suite NAME: runs scripts/NAME.sh in a session of its own (its pid is the session's id, kept in
# $logs/.sid-NAME while it runs, for stop_lanes: a session, not a process group, because `timeout` makes groups);
# records "NAME passed|FAILED SECONDS" in $results; prints the log when buffered (the lock keeps two suites' logs
# from mixing).
run_suite() {
  local name=$1 start status pid out
  out=$logs/$name.log
  start=$(date +%s)
  if [ "${SERIAL:-0}" = 1 ]; then printf '\n==== %s ====\n' "$name"; out=/dev/stdout; else
    printf '==== %s started (log: build/test-logs/%s.log) ====\n' "$name" "$name"; fi
  setsid bash "scripts/$name.sh" >"$out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$logs/.sid-$name"
  if wait "$pid"; then status=passed; else status=FAILED; fi
  rm -f "$logs/.sid-$name"
  local took=$(( $(date +%s) - start ))
  (
    flock 9
    if [ "${SERIAL:-0}" != 1 ]; then printf '\n==== %s ====\n' "$name"; cat "$logs/$name.log"; fi
    printf '==== %s %s in %ss ====\n' "$name" "$status" "$took"
    echo "$name $status $took" >>"$results"
  ) 9>"$logs/.lock"
}

run_lane() {
  local s
  for s in "$@"; do run_suite "$s"; done
}

lane_pids=()
# shellcheck disable=SC2317  # invoked by the trap
stop_lanes() {
  trap - INT TERM
  # The lanes first, so that none goes on to its next suite; then TERM to every process of the running suites' sessions
  # (their own traps stop their clusters and daemons), and a wait for that clean-up (stop_cluster bounds it).
  local f sid
  [ ${#lane_pids[@]} -gt 0 ] && kill -TERM "${lane_pids[@]}" 2>/dev/null
  for f in "$logs"/.sid-*; do [ -f "$f" ] && pkill -TERM -s "$(cat "$f")"; done
  for f in "$logs"/.sid-*; do
    [ -f "$f" ] || continue
    sid=$(cat "$f")
    for _ in $(seq 360); do pgrep -s "$sid" >/dev/null || break; sleep 0.5; done
  done
  exit 130
}
trap stop_lanes INT TERM

if ! ensure_agent_image >"$logs/agent-image.log" 2>&1; then
  cat "$logs/agent-image.log"
  log "building the agent image failed: the suites that use it will fail too"
fi

if [ "${SERIAL:-0}" = 1 ]; then
  run_lane "${other_lane[@]}" "${e2e_lane[@]}"
else
  run_lane "${e2e_lane[@]}" & lane_pids+=($!)
  run_lane "${other_lane[@]}" & lane_pids+=($!)
  wait "${lane_pids[@]}"
fi

passed=$(grep -c ' passed ' "$results")
failed=$(grep -c ' FAILED ' "$results")
failed_names=$(awk '$2 == "FAILED" {print $1}' "$results" | tr '\n' ' ')
[ -n "$failed_names" ] && printf '\nfailed suites: %s\n' "$failed_names"
printf '\nsuites: %d passed, %d failed (%ss)\n' "$passed" "$failed" "$(( $(date +%s) - start_all ))"
[ "$failed" -eq 0 ] && [ "$passed" -eq $(( ${#e2e_lane[@]} + ${#other_lane[@]} )) ]
