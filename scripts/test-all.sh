#!/usr/bin/env bash
# Runs every suite, even after a failure, then prints one closing line: "suites: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# test-image first among the cluster suites: it builds the agent image that integration and e2e then reuse.
suites=(lint test-agent test-collection test-image test-integration test-e2e)
passed=0; failed=0; failed_names=()
for s in "${suites[@]}"; do
  script=scripts/${s}.sh
  printf '\n==== %s ====\n' "$s"
  start=$(date +%s)
  if bash "$script"; then
    passed=$((passed + 1)); status=passed
  else
    failed=$((failed + 1)); failed_names+=("$s"); status=FAILED
  fi
  printf '==== %s %s in %ss ====\n' "$s" "$status" "$(( $(date +%s) - start ))"
done
[ ${#failed_names[@]} -gt 0 ] && printf '\nfailed suites: %s\n' "${failed_names[*]}"
printf '\nsuites: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
