#!/usr/bin/env bash
# `make bench`: the agent benchmark (bench/agent_bench.py, one JSON object on stdout) once per runtime of
# $BENCH_RUNTIMES (default: containerd containerd2 crio; the latter two built first, cached), then every other
# bench/*_bench.py / bench/*_bench.sh found. Not a test: it prints figures; it fails only when a benchmark crashes.
# Each benchmark stops what it starts (registry, proxy, containerd) itself, also on failure.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
export PYTHONPATH="$top/tests${PYTHONPATH:+:$PYTHONPATH}"
PY=.venv/bin/python
BENCH_TIMEOUT=${BENCH_TIMEOUT:-1200}
failed=()

run_bench() {  # run_bench FILE [ARGS...]
  local file=$1; shift
  printf '\n==== %s %s ====\n' "$file" "$*" >&2
  case "$file" in
    *.py) timeout --kill-after=30 "$BENCH_TIMEOUT" "$PY" "$file" "$@" ;;
    *.sh) timeout --kill-after=30 "$BENCH_TIMEOUT" bash "$file" "$@" ;;
  esac || failed+=("$file $*")
}

for runtime in ${BENCH_RUNTIMES:-containerd containerd2 crio}; do
  if [ "$runtime" != containerd ] && ! bash tests/runtimes/build.sh "$runtime" >/dev/null; then
    failed+=("build $runtime")
    continue
  fi
  run_bench bench/agent_bench.py --runtime "$runtime"
done
shopt -s nullglob
for file in bench/*_bench.py bench/*_bench.sh; do
  [ "$file" = bench/agent_bench.py ] && continue
  run_bench "$file"
done

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nbench: failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nbench: done\n' >&2
