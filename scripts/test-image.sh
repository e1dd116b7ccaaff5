#!/usr/bin/env bash
# Tests the agent image built from the Dockerfile (make image; rebuilt here when a file it is built from changed):
# contents, pull through CRI into each runtime of $PREFETCH_RUNTIMES (containerd 1.6, 2.x, CRI-O), start there, and `image-prefetcher fetch` from the image
# pulling into that containerd.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
log() { printf 'test-image: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh
ensure_agent_image
ensure_runtimes
PYTHONPATH=tests exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/agent_image "$@"
