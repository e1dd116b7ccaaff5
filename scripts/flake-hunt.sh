#!/usr/bin/env bash
# Flake hunt: run pytest suites several times while busy loops keep other cores loaded, then list every test that
# failed at least once, with how often. A test whose outcome depends on the machine's speed shows up here.
#
#   bash scripts/flake-hunt.sh [-n RUNS] [-b BUSY] [-k] [-o] [PATH...]
#
#   -n RUNS   how many times to run the suites (default 3)
#   -b BUSY   busy-loop processes kept running meanwhile (default 1: the second core of a 2-core machine)
#   -k        keep the work directory (per-run pytest output and JUnit XML) and print its path
#   -o        only the PATHs given, without the default suites
#   PATH...   extra pytest paths (files, directories, node ids), run in addition to tests/agent/unit and
#             tests/agent/integration
#
# Each run is `pytest -p no:cacheprovider --junitxml=...` with the project venv; failures and errors are read from
# the XML. The busy loops and a running pytest are always stopped, also on SIGINT/SIGTERM (pytest gets SIGINT so
# its fixtures stop their daemons). Exit status: 0 when no test failed in any run, 1 otherwise, 130 when
# interrupted, 2 on bad arguments.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
py=$top/.venv/bin/python

runs=3
busy=1
keep=0
only=0
usage() { sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:b:koh" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    b) busy=$OPTARG ;;
    k) keep=1 ;;
    o) only=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "flake-hunt: -n needs a positive number, got '$runs'" >&2; exit 2; }
[[ $busy =~ ^[0-9]+$ ]] || { echo "flake-hunt: -b needs a number, got '$busy'" >&2; exit 2; }
if [ "$only" -eq 1 ]; then
  [ $# -gt 0 ] || { echo "flake-hunt: -o needs at least one PATH" >&2; exit 2; }
  suites=("$@")
else
  suites=(tests/agent/unit tests/agent/integration "$@")
fi
[ -x "$py" ] || { echo "flake-hunt: $py is missing: run make setup (scripts/bootstrap.sh)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-flake-XXXXXX")
busy_pids=()
pytest_pid=""

stop_pytest() {  # SIGINT first (fixtures tear down), SIGKILL if it is still there a minute later
  local pid=$pytest_pid waited=0
  [ -n "$pid" ] || return 0
  pytest_pid=""
  # A Ctrl-C from the terminal reached pytest too: give it a moment before sending another one.
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 5 ]; do sleep 1; waited=$((waited + 1)); done
  kill -INT "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 65 ]; do sleep 1; waited=$((waited + 1)); done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

cleanup() {
  local pid
  stop_pytest
  for pid in "${busy_pids[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  busy_pids=()
  if [ "$keep" -eq 1 ]; then
    echo "flake-hunt: kept $work"
  else
    rm -rf "$work"
  fi
}

report() {  # report XML...: every node id that failed or errored in some run, with its count, most frequent first
  "$py" - "$@" <<'EOF'
import collections
import sys
import xml.etree.ElementTree as ET

failures: collections.Counter[str] = collections.Counter()
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        # xunit1 gives the file; the classname is the module's dotted path (or part of it), then the classes
        file, names = case.get("file", ""), [part for part in case.get("classname", "").split(".") if part]
        module = file.rsplit("/", 1)[-1].removesuffix(".py")
        if module in names:
            names = names[len(names) - names[::-1].index(module) :]
        failures["::".join([file or "?", *names, case.get("name", "?")])] += 1
if not failures:
    print("flake-hunt: no test failed")
else:
    print(f"flake-hunt: {len(failures)} test(s) failed at least once:")
    for node_id, count in sorted(failures.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count}x  {node_id}")
EOF
}

finish() {  # finish STATUS: print the report of the runs done so far, clean up, exit
  local status=$1
  trap - EXIT INT TERM
  shopt -s nullglob
  local xmls=("$work"/run-*.xml)
  shopt -u nullglob
  stop_pytest
  echo "== flake-hunt: ${#xmls[@]} of $runs run(s) done (${suites[*]})"
  report "${xmls[@]}"
  cleanup
  exit "$status"
}

trap 'finish 1' EXIT
trap 'echo "flake-hunt: interrupted" >&2; finish 130' INT TERM

busy_loop() { while :; do :; done; }
for ((i = 0; i < busy; i++)); do
  busy_loop &
  busy_pids+=($!)
done
echo "== flake-hunt: $runs run(s) of ${suites[*]} with $busy busy loop(s)"

failed_runs=0
for ((run = 1; run <= runs; run++)); do
  log=$work/run-$run.log
  # In the background (and waited for) so that a signal to this script is handled at once; SIGINT is ignored in
  # background jobs of a script, so it is reset for pytest, which must be able to stop on it.
  env --default-signal=INT timeout 1800 "$py" -m pytest -p no:cacheprovider -q -rfE -o junit_family=xunit1 \
    --junitxml="$work/run-$run.xml" "${suites[@]}" >"$log" 2>&1 &
  pytest_pid=$!
  wait "$pytest_pid"
  status=$?
  pytest_pid=""
  echo "run $run/$runs: $(tail -n 1 "$log") (exit $status)"
  [ "$status" -eq 0 ] || failed_runs=$((failed_runs + 1))
done
if [ "$failed_runs" -eq 0 ]; then finish 0; else finish 1; fi
