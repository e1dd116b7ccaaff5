#!/usr/bin/env bash
# Builds the agent image from the Dockerfile (make image), then tests it: contents, pull through CRI into a real
# containerd, start there, and `image-prefetcher fetch` from the image pulling into that containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/image.sh
PYTHONPATH=tests exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/agent_image "$@"
