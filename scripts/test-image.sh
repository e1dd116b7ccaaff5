#!/usr/bin/env bash
# Tests the agent image built from the Dockerfile (make image; rebuilt here when a file it is built from changed):
# contents, pull through CRI into a real containerd, start there, and `image-prefetcher fetch` from the image
# pulling into that containerd. FORCE_BUILD=1 rebuilds it even when it is up to date.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
log() { printf 'test-image: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh
if [ "${FORCE_BUILD:-0}" = 1 ]; then bash scripts/image.sh; else ensure_agent_image; fi
PYTHONPATH=tests exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/agent_image "$@"
