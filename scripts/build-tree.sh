#!/usr/bin/env bash
# Syncs the collection into build/ansible_collections/stackrox/prefetch/ (or $BUILD_ROOT/ansible_collections/...),
# the layout every ansible-test run needs: the tarball's files (galaxy.yml build_ignore) plus galaxy.yml, so
# tests/unit, tests/integration and tests/sanity are kept. Prints the collection's path on stdout.
# Several engineers and scripts build at once: the sync is serialised by a lock and rewrites only changed files.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build_root=${BUILD_ROOT:-$top/build}
py="$top/.venv/bin/python"
[ -x "$py" ] || py=python3
mkdir -p "$build_root"
exec 9>"$build_root/.build-tree.lock"
flock -w 300 9 || { echo "build-tree: could not lock $build_root within 300s" >&2; exit 1; }
"$py" "$top/scripts/build_tree.py" "$top" "$build_root"
