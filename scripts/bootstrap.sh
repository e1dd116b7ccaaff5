#!/usr/bin/env bash
# Installs everything the project's tests, demo and benchmarks need, on a fresh Debian 12 machine.
# Idempotent and non-interactive: a second run only checks. Run as root (CI and the dev machines are).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
log() { printf 'bootstrap: %s\n' "$*" >&2; }

# --- Debian packages (one list; add what you need here) -------------------------------------------
APT_PACKAGES=(
  containerd runc conmon docker-registry   # CRI nodes (conmon: CRI-O's, built by tests/runtimes) and the test registry
  python3 python3-venv python3-grpcio python3-protobuf python3-yaml python3-pytest  # Debian-runtime compat tests
  shellcheck openssl util-linux iproute2 ca-certificates
  mmdebstrap buildah skopeo uidmap fuse-overlayfs  # agent image build without a public registry
  librsvg2-bin                             # rsvg-convert: the report tests render the timeline SVG to PNG
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

# --- Python: the project venv (newest grpcio/protobuf, ansible-core, kubernetes client, linters) ----
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.bootstrap-stamp
want=$( (cat requirements/dev.txt agent/pyproject.toml 2>/dev/null || true) | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -r requirements/dev.txt"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt </dev/null
  if [ -f agent/pyproject.toml ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ./agent </dev/null
  fi
  echo "$want" >"$stamp"
fi

# --- Python: protoc of grpcio-tools 1.51 (protoc 3.21): its output works with protobuf 3.21..7.x ---
if [ ! -x .venv-protogen/bin/python ]; then
  log "creating .venv-protogen (grpcio-tools 1.51.3)"
  "$PY" -m venv .venv-protogen
  .venv-protogen/bin/pip install -q --disable-pip-version-check 'grpcio-tools==1.51.3' </dev/null
fi

# --- ansible-core 2.16, the oldest the collection supports: test-collection.sh runs sanity and the playbook with it
if [ ! -x .venv-ansible216/bin/ansible-test ]; then
  log "creating .venv-ansible216 (ansible-core 2.16)"
  "$PY" -m venv .venv-ansible216
  .venv-ansible216/bin/pip install -q --disable-pip-version-check 'ansible-core>=2.16,<2.17' kubernetes </dev/null
fi

# --- checkov, for the security checks of the renders (tests/security): its own venv, since its pins
# (python-dateutil<3 through botocore, an old packaging) conflict with .venv's kubernetes client and pytest ----
checkov_stamp=.venv-checkov/.bootstrap-stamp
checkov_want=$(sha256sum requirements/checkov.txt | cut -c1-16)
if [ "$(cat "$checkov_stamp" 2>/dev/null)" != "$checkov_want" ]; then
  log "creating .venv-checkov (pip install -r requirements/checkov.txt)"
  [ -x .venv-checkov/bin/python ] || "$PY" -m venv .venv-checkov
  .venv-checkov/bin/pip install -q --disable-pip-version-check -r requirements/checkov.txt </dev/null
  echo "$checkov_want" >"$checkov_stamp"
fi

# --- ansible-test offline: its get-pip download is unreachable here; stand in with ensurepip --------
# 24_2: ansible-test 2.19; 23_1_2: ansible-test 2.16.
for v in 24_2 23_1_2; do
  getpip="$HOME/.ansible/test/cache/get_pip_$v.py"
  if [ ! -f "$getpip" ]; then
    mkdir -p "$(dirname "$getpip")"
    cp scripts/get_pip_standin.py "$getpip"
  fi
done
log "ready"
