#!/usr/bin/env bash
# Agent tests: everything under tests/agent with the project venv (newest grpcio/protobuf; the integration tests
# on each runtime of $PREFETCH_RUNTIMES, default containerd 1.6, containerd 2.x and CRI-O, the latter two built
# first), then the unit tests again under Debian's /usr/bin/python3 with python3-grpcio 1.51 / python3-protobuf
# 3.21 / python3-pytest (the runtime the agent image is built on). Exits non-zero if either run fails.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
status=0
log() { printf 'test-agent: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib-cluster.sh
. scripts/lib-cluster.sh
ensure_runtimes || { log "building the runtimes failed"; exit 1; }

echo "== agent tests (.venv: $(.venv/bin/python -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)'))"
timeout 1800 .venv/bin/python -m pytest -p no:cacheprovider -q -rfE tests/agent || status=1

echo "== agent unit tests (Debian: $(/usr/bin/python3 -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)'))"
# -p no:asyncio etc. are not needed: Debian's pytest has no pytest-asyncio; the unit tests use asyncio.run.
PYTHONPATH="$top/agent/src:$top/tests:$top/tests/agent" timeout 900 /usr/bin/python3 -m pytest -p no:cacheprovider -q -rfE \
  -W "ignore::pytest.PytestConfigWarning" tests/agent/unit || status=1

if [ "$status" -ne 0 ]; then
  echo "test-agent: FAILED" >&2
else
  echo "test-agent: ok"
fi
exit "$status"
