#!/usr/bin/env bash
# Runs every suite, even after a failure, then prints one closing line: "suites: N passed, N failed".
#
# Two lanes run side by side, because the end-to-end suite spends much of its time waiting on kubelets, pods and
# timeouts while the others keep a core busy (the split balances the two lanes: about 12 minutes each here):
#   e2e lane:    test-e2e                                                  (the longest suite, on its own cluster)
#   other lane:  lint, test-agent, test-integration, test-collection, test-image   (integration on a second cluster)
# The agent image both lanes use is built (or found up to date) first, so no suite rebuilds it under another.
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

# run_suite NAME: runs scripts/NAME.sh; records "NAME passed|FAILED SECONDS" in $results; prints the log when
# buffered (the lock keeps two suites' logs from mixing).
run_suite() {
  local name=$1 start status
  start=$(date +%s)
  if [ "${SERIAL:-0}" = 1 ]; then
    printf '\n==== %s ====\n' "$name"
    if bash "scripts/$name.sh" </dev/null; then status=passed; else status=FAILED; fi
  else
    printf '==== %s started (log: build/test-logs/%s.log) ====\n' "$name" "$name"
    if bash "scripts/$name.sh" >"$logs/$name.log" 2>&1 </dev/null; then status=passed; else status=FAILED; fi
  fi
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
  # Each suite's own trap stops what it started (clusters, daemons); TERM reaches them through their lane.
  [ ${#lane_pids[@]} -gt 0 ] && kill -TERM "${lane_pids[@]}" 2>/dev/null
  pkill -TERM -P "$$" 2>/dev/null
  wait
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
