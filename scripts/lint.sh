#!/usr/bin/env bash
# Static checks: ruff and mypy over the agent, the test infrastructure, the benchmarks, the scripts and the
# collection (mypy for the collection runs in the built tree, where ansible_collections.stackrox.prefetch.*
# imports resolve), shellcheck over the shell scripts. Directories that do not exist yet are reported and skipped.
# Exit status: non-zero when any check has findings.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
venv=$top/.venv/bin
failed=()
skipped=()

run() {  # run NAME CMD...: print the result of one check, remember failures
  local name=$1; shift
  local start=$SECONDS
  if "$@"; then
    printf 'lint: %-28s ok (%ss)\n' "$name" "$((SECONDS - start))"
  else
    printf 'lint: %-28s FAILED (%ss)\n' "$name" "$((SECONDS - start))"
    failed+=("$name")
  fi
}

existing() {  # print the arguments that exist, note the others as skipped
  local p
  for p in "$@"; do
    if [ -e "$p" ]; then echo "$p"; else skipped+=("$p"); fi
  done
}

# --- ruff: every Python file of the repository, new directories included (the root pyproject.toml excludes
# generated code and build output; ruff's defaults exclude .venv and site-packages) -------------------------------
run "ruff" "$venv/ruff" check --no-cache --extend-exclude '.venv-*' .

# --- mypy: one run per tree, so that module names (conftest, infra, ...) do not collide ----------------------
mypy_run() {  # mypy_run NAME MYPYPATH PATH...
  local name=$1 path=$2; shift 2
  MYPYPATH=$path run "mypy $name" "$venv/mypy" --explicit-package-bases --no-error-summary "$@"
}
[ -d agent/src/image_prefetcher ] && mypy_run agent agent/src agent/src/image_prefetcher
for d in tests/infra tests/kube tests/runtimes tests/e2e tests/agent_image tests/security; do
  [ -d "$d" ] && mypy_run "$d" tests "$d"
done
# The agent's tests import their own helpers (casedata, fakecri, conftest fixtures) from their directory.
for d in tests/agent/unit tests/agent/integration; do
  [ -d "$d" ] && mypy_run "$d" "tests:agent/src:$d" "$d"
done
[ -d bench ] && mypy_run bench "bench:tests" bench
mypy_run scripts scripts scripts/*.py

mypy_collection() {  # mypy_collection BUILD_ROOT PATH...
  # cwd is the build root so that the root config's exclude of build/ does not hide the tree.
  local build_root=$1; shift
  (cd "$build_root" && MYPYPATH=. "$venv/mypy" --config-file "$top/pyproject.toml" --cache-dir "$top/.mypy_cache" \
    --explicit-package-bases --no-error-summary "$@")
}
# The collection: import names are ansible_collections.stackrox.prefetch.*, so check the built tree.
if [ -d plugins ] || [ -d tests/unit ]; then
  collection=$(bash scripts/build-tree.sh) || { echo "lint: build-tree failed" >&2; exit 1; }
  build_root=${collection%/ansible_collections/*}
  mapfile -t coll_paths < <(cd "$build_root" && for d in plugins tests/unit; do
    [ -d "ansible_collections/stackrox/prefetch/$d" ] && echo "ansible_collections/stackrox/prefetch/$d"; done)
  run "mypy collection" mypy_collection "$build_root" "${coll_paths[@]}"
else
  skipped+=(plugins tests/unit)
fi

# --- shellcheck --------------------------------------------------------------------------------------------
mapfile -t sh_files < <(ls scripts/*.sh tests/kube/*.sh tests/runtimes/*.sh 2>/dev/null; existing .ci/run)
run "shellcheck" shellcheck -x "${sh_files[@]}"

[ ${#skipped[@]} -gt 0 ] && printf 'lint: skipped (not there yet): %s\n' "${skipped[*]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'lint: FAILED: %s\n' "${failed[*]}"
  exit 1
fi
echo "lint: all checks passed"
