#!/usr/bin/env bash
# make image: builds the agent image from the repo's Dockerfile with Debian's buildah.
# Public registries are unreachable here, so the Debian base (stand-in for debian:bookworm-slim) is made with
# mmdebstrap, pushed to a local docker-registry, and the Dockerfile is built with --build-arg BASE_IMAGE=<that>.
# Result: build/image/prefetch-agent.oci.tar (OCI archive, tag stackrox/prefetch-agent:$VERSION) and the local
# buildah image localhost/stackrox/prefetch-agent:$VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH=tests .venv/bin/python -m agent_image.build "$@"
