#!/usr/bin/env bash
# Tests of the Ansible collection stackrox.prefetch, each step printed with its result and time:
#   build tree → ansible-test sanity → ansible-test units → checkov over every render (tests/security, allow-list
#   tests/security/checkov-allow.yml) → ansible-lint (production profile) → tarball build and
#   content check → offline install into a temp path → ansible-doc of every module and the role → role/module
#   option cross-check → the playbook from the INSTALLED collection: check mode against a closed port (must fail
#   cleanly, per host, without a traceback or a credential in the output), state=rendered (writes a manifest).
#   Sanity and the playbook also run with ansible-core 2.16 (.venv-ansible216), the oldest the collection supports.
# Runs every step even after a failure (a step that needs a failed one fails too); exit status 1 if any failed.
# KEEP=1 keeps the temp dir (logs, tarball, installed collection).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
venv=$top/.venv/bin
export PATH="$venv:$PATH"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

work=$(mktemp -d "${TMPDIR:-/tmp}/prefetch-collection-XXXXXX")
mkdir -p "$work/logs"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "test-collection: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

MODULES=(manifest apply rollout report)
passed=(); failed=()
notes=()

# step NAME CMD...: run one step with its output in logs/NAME.log; print the result, and the log's tail on failure.
step() {
  local name=$1; shift
  local log="$work/logs/$name.log" start=$SECONDS
  if ( "$@" ) >"$log" 2>&1; then
    printf 'test-collection: %-22s ok (%ss)\n' "$name" "$((SECONDS - start))"
    passed+=("$name")
    return 0
  fi
  printf 'test-collection: %-22s FAILED (%ss), last lines of %s:\n' "$name" "$((SECONDS - start))" "$log"
  grep -v -e '^WARNING: Location ' -e '^\s*━' "$log" | tail -n 40 | sed 's/^/    /'
  failed+=("$name")
  return 1
}
needs() {  # needs NAME STEP...: fail NAME without running it when a step it needs failed
  local name=$1 dep; shift
  for dep in "$@"; do
    if [[ " ${failed[*]} " == *" $dep "* ]]; then
      printf 'test-collection: %-22s FAILED (not run: %s failed)\n' "$name" "$dep"
      failed+=("$name")
      return 1
    fi
  done
}

# --- the built tree (what ansible-test needs) ----------------------------------------------------------------
build_tree() { bash scripts/build-tree.sh >"$work/collection-path"; }
step build-tree build_tree
collection=$(cat "$work/collection-path" 2>/dev/null)
build_root=${collection%/ansible_collections/*}

# The sanity ignore files exist for every supported ansible-core and stay empty: findings are fixed, not ignored.
ignore_files() {
  local v f bad=0
  for v in 2.16 2.17 2.18 2.19 2.20; do
    f=tests/sanity/ignore-$v.txt
    if [ ! -f "$f" ]; then echo "$f is missing"; bad=1
    elif [ -s "$f" ]; then echo "$f is not empty:"; cat "$f"; bad=1
    else echo "$f: empty"; fi
  done
  return "$bad"
}
step ignore-files ignore_files

sanity() {
  cd "$collection" || return 1
  # --python 3.11: the only Python here with ansible-core 2.19; --venv: requirements from PyPI (no --docker here).
  timeout 1200 ansible-test sanity --venv --python 3.11 --color no
}
if needs sanity build-tree; then
  step sanity sanity
  # What sanity could not run here, and why, from its own output.
  skipped=$(grep -i -E 'skipping|skipped' "$work/logs/sanity.log" | grep -v '^WARNING: Location' | sort -u)
  [ -n "$skipped" ] && notes+=("sanity skipped: $(echo "$skipped" | tr '\n' ';')")
  count=$(grep -c '^Running sanity test' "$work/logs/sanity.log")
  notes+=("sanity ran $count tests; compile and import on Python 3.11 only (--python 3.11: the controller's Python)")
fi

# The oldest ansible-core the collection supports (requires_ansible >=2.16), in its own build tree so that the two
# ansible-test versions do not share tests/output.
venv216=$top/.venv-ansible216/bin
sanity_216() {
  local col216
  [ -x "$venv216/ansible-test" ] || { echo "$venv216/ansible-test missing: run scripts/bootstrap.sh"; return 1; }
  col216=$(BUILD_ROOT=$top/build/ansible-2.16 bash "$top/scripts/build-tree.sh") || return 1
  cd "$col216" || return 1
  PATH="$venv216:$PATH" timeout 1200 "$venv216/ansible-test" sanity --venv --python 3.11 --color no
}
step sanity-2.16 sanity_216

units() {
  cd "$collection" || return 1
  timeout 900 ansible-test units --venv --python 3.11 --color no
}
needs units build-tree && step units units

# Security checks of every render: checkov (its own venv, .venv-checkov) over each flavor with and without metrics
# and a pull secret; a failed check must be in the allow-list with its reason, and every entry must still match.
security() {
  timeout 900 "$venv/python" -m pytest -p no:cacheprovider -q -s tests/security
}
step security security

lint() {
  cd "$collection" || return 1
  ANSIBLE_COLLECTIONS_PATH=$build_root timeout 600 ansible-lint --offline --profile production --nocolor
}
needs ansible-lint build-tree && step ansible-lint lint

# --- tarball: build from the repository (its build_ignore), check its content, install it offline ---------------
galaxy_build() {
  mkdir -p "$work/dist"
  ansible-galaxy collection build --output-path "$work/dist" "$top"
}
step galaxy-build galaxy_build
tarballs=("$work"/dist/stackrox-prefetch-*.tar.gz)
tarball=${tarballs[0]}

tarball_content() {
  "$venv/python" - "$tarball" "$top" "${MODULES[@]}" <<'EOF'
import json, os, sys, tarfile
from pathlib import Path
tarball, top, modules = sys.argv[1], sys.argv[2], sys.argv[3:]
with tarfile.open(tarball) as tar:
    names = {m.name for m in tar.getmembers() if m.isfile()}
    files = json.load(tar.extractfile("FILES.json"))["files"]
problems = []
required = ["MANIFEST.json", "FILES.json", "README.md", "COPYING", "LICENSE", "CHANGELOG.rst", "meta/runtime.yml",
            "changelogs/changelog.yaml", "roles/images/meta/argument_specs.yml", "playbooks/prefetch.yml"]
required += [f"plugins/modules/{m}.py" for m in modules]
problems += [f"missing: {r}" for r in required if r not in names]
forbidden = ("agent/", "protos/", "bench/", "scripts/", "build/", ".venv", ".ci/", ".git/", "Dockerfile", "Makefile",
             "tests/output/", "tests/integration/inventory", "docs/DESIGN.md", "requirements/", ".ansible/")
problems += [f"must not be in the tarball: {n}" for n in sorted(names) if n.startswith(forbidden)]
allowed_tests = {"unit", "integration", "sanity", "config.yml"}
problems += [f"not a collection test (add it to build_ignore): {n}" for n in sorted(names)
             if n.startswith("tests/") and n.split("/")[1] not in allowed_tests]
problems += [f"compiled file: {n}" for n in names if n.endswith(".pyc") or "__pycache__" in n]
# scripts/build_tree.py (which makes the tree every ansible-test run uses) selects the same files as the tarball,
# plus galaxy.yml. Computed now from the source, not read from the tree, so files others add meanwhile do not count.
sys.path.insert(0, os.path.join(top, "scripts"))
from build_tree import collection_files
tree_files = set(collection_files(Path(top))) - {"galaxy.yml"}
tar_files = {f["name"] for f in files if f["ftype"] == "file"}
for extra in sorted(tree_files - tar_files):
    problems.append(f"build_tree.py selects it, the tarball lacks it: {extra}")
for missing in sorted(tar_files - tree_files):
    problems.append(f"in the tarball, build_tree.py does not select it: {missing}")
print(f"{tarball}: {len(names)} files, {os.path.getsize(tarball)} bytes")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
}
needs tarball-content galaxy-build && step tarball-content tarball_content

install() {
  ansible-galaxy collection install --offline -p "$work/collections" "$tarball"
  test -f "$work/collections/ansible_collections/stackrox/prefetch/MANIFEST.json"
}
needs install galaxy-build && step install install

# Everything below uses only the installed collection.
installed() {
  ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false "$@"
}

docs() {
  local m out
  for m in "${MODULES[@]}"; do
    out=$(installed ansible-doc "stackrox.prefetch.$m" 2>"$work/doc-$m.err") || { echo "ansible-doc $m failed"; cat "$work/doc-$m.err"; return 1; }
    [ "$(echo "$out" | wc -l)" -gt 20 ] || { echo "ansible-doc $m: output too short"; return 1; }
    grep -q -i -e error -e warning "$work/doc-$m.err" && { echo "ansible-doc $m:"; cat "$work/doc-$m.err"; return 1; }
    installed ansible-doc --json "stackrox.prefetch.$m" | python3 -c '
import json, sys
doc = next(iter(json.load(sys.stdin).values()))
for key in ("doc", "examples", "return"):
    assert doc.get(key), f"{sys.argv[1]}: no {key}"
assert doc["doc"].get("options"), f"{sys.argv[1]}: no options"
' "$m" || return 1
    echo "ansible-doc $m: $(echo "$out" | wc -l) lines"
  done
  out=$(installed ansible-doc -t role stackrox.prefetch.images 2>&1) || { echo "$out"; return 1; }
  echo "$out" | grep -q images_state || { echo "role doc lacks images_state"; return 1; }
  # The module list of the collection is exactly the expected modules: a missing one is a failure.
  listed=$(installed ansible-doc -l stackrox.prefetch 2>/dev/null | awk '{print $1}' | sort | tr '\n' ' ')
  want=$(printf 'stackrox.prefetch.%s\n' "${MODULES[@]}" | sort | tr '\n' ' ')
  [ "$listed" = "$want" ] || { echo "ansible-doc -l: got [$listed], want [$want]"; return 1; }
}
needs ansible-doc install && step ansible-doc docs

check_role() {
  installed python3 "$top/scripts/check_role.py" "$work/collections/ansible_collections/stackrox/prefetch/roles/images" \
    "$venv/ansible-doc"
}
needs role-options install && step role-options check_role

# --- the playbook from the installed collection (ANSIBLE_BIN: the ansible-core to run it with)  ----------------------------------------------------------------
run_dir=$work/run
mkdir -p "$run_dir/out"
printf '# images to prefetch\nregistry.test:5000/team/app:v1\n\n  registry.test:5000/team/db:v2  \n' >"$run_dir/images.txt"
closed_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
sentinel="prefetch-sentinel-token-$RANDOM$RANDOM"
kubeconfig() {  # kubeconfig FILE: an API server on the closed port, with a token that must never be printed
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: closed
    cluster: {server: "https://127.0.0.1:$closed_port", insecure-skip-tls-verify: true}
users:
  - name: u
    user: {token: "$sentinel"}
contexts:
  - name: closed
    context: {cluster: closed, user: u}
current-context: closed
EOF
}
kubeconfig "$run_dir/kubeconfig"
kubeconfig "$run_dir/kubeconfig-b"

playbook() {  # playbook LOG ARGS...: ansible-playbook stackrox.prefetch.prefetch from the run dir; echoes the exit code
  local log=$1; shift
  (cd "$run_dir" && installed timeout 300 "${ANSIBLE_BIN:-$venv}/ansible-playbook" stackrox.prefetch.prefetch "$@") \
    >"$log" 2>&1
  echo $?
}
# assert_clean_failure LOG RC HOST...: failed (not timed out), each host named with the API address, nothing leaked
assert_clean_failure() {
  local log=$1 rc=$2 host; shift 2
  cat "$log"
  echo "--- exit code $rc"
  [ "$rc" -ne 0 ] || { echo "expected a failure, got exit code 0"; return 1; }
  [ "$rc" -ne 124 ] || { echo "timed out"; return 1; }
  for host in "$@"; do
    grep -q "^fatal: \[$host\( -> [^]]*\)\?\]" "$log" || { echo "no failure reported for host $host"; return 1; }
    grep -q "$host *: .*failed=1" "$log" || { echo "PLAY RECAP does not show $host failed"; return 1; }
  done
  grep -q "127.0.0.1:$closed_port" "$log" || { echo "the error does not name the API server 127.0.0.1:$closed_port"; return 1; }
  ! grep -q 'Traceback' "$log" || { echo "Python traceback in the output"; return 1; }
  ! grep -q "$sentinel" "$log" || { echo "the kubeconfig token appears in the output"; return 1; }
}

closed_port_localhost() {
  local rc
  rc=$(playbook "$work/closed-local.log" --check -e flavor=vanilla -e images_file=images.txt -e kubeconfig=kubeconfig \
    -e context=closed)
  assert_clean_failure "$work/closed-local.log" "$rc" localhost || return 1
  # -e context reaches the modules: an unknown context is named in the error.
  rc=$(playbook "$work/closed-context.log" --check -e images_file=images.txt -e kubeconfig=kubeconfig -e context=nope)
  cat "$work/closed-context.log"
  [ "$rc" -ne 0 ] && grep -q '^fatal: \[localhost\].*nope' "$work/closed-context.log" \
    && ! grep -q Traceback "$work/closed-context.log"
}
needs closed-port-localhost install && step closed-port-localhost closed_port_localhost

closed_port_inventory() {
  local rc
  cat >"$run_dir/inventory.yml" <<EOF
clusters:
  hosts:
    cluster-a: {images_kubeconfig: kubeconfig}
    cluster-b: {images_kubeconfig: kubeconfig-b, images_flavor: k3s}
EOF
  rc=$(playbook "$work/closed-inventory.log" -i inventory.yml --check -e images=registry.test:5000/team/app:v1)
  assert_clean_failure "$work/closed-inventory.log" "$rc" cluster-a cluster-b
}
needs closed-port-inventory install && step closed-port-inventory closed_port_inventory

rendered() {
  local rc
  rc=$(playbook "$work/rendered.log" -e state=rendered -e dest=out/prefetch.yaml -e flavor=ocp -e name=demo \
    -e namespace=prefetch -e images_file=images.txt -e images=registry.test:5000/team/extra:v3,registry.test:5000/x:1 \
    -e secret=team-pull)
  cat "$work/rendered.log"
  [ "$rc" -eq 0 ] || { echo "--- exit code $rc"; return 1; }
  python3 - "$run_dir/out/prefetch.yaml" <<'EOF' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
for want in [("DaemonSet", "demo"), ("ConfigMap", "demo"), ("ServiceAccount", "demo"), ("Role", "demo-privileged-scc-use")]:
    assert want in kinds, f"{want} not rendered: {sorted(kinds)}"
assert all(d["metadata"].get("namespace", "prefetch") == "prefetch" for d in docs), "wrong namespace"
images = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["images.txt"]
for image in ["registry.test:5000/team/app:v1", "registry.test:5000/team/db:v2", "registry.test:5000/team/extra:v3",
              "registry.test:5000/x:1"]:
    assert image in images, f"{image} not in the image list: {images!r}"
ds = next(d for d in docs if d["kind"] == "DaemonSet")
secrets = [v["secret"]["secretName"] for v in ds["spec"]["template"]["spec"]["volumes"] if "secret" in v]
assert secrets == ["team-pull"], f"pull secret volumes: {secrets}"
print(f"{sys.argv[1]}: {len(docs)} objects: {sorted(k for k, _ in kinds)}")
EOF
  # Same settings again: the file is not rewritten.
  rc=$(playbook "$work/rendered-again.log" -e state=rendered -e dest=out/prefetch.yaml -e flavor=ocp -e name=demo \
    -e namespace=prefetch -e images_file=images.txt -e images=registry.test:5000/team/extra:v3,registry.test:5000/x:1 \
    -e secret=team-pull)
  if [ "$rc" -ne 0 ] || ! grep -q 'localhost *: .*changed=0' "$work/rendered-again.log"; then
    cat "$work/rendered-again.log"; echo "second identical render failed or changed something"; return 1
  fi
  # No dest: a clean failure that says what is missing.
  rc=$(playbook "$work/rendered-nodest.log" -e state=rendered -e images_file=images.txt)
  if [ "$rc" -eq 0 ] || ! grep -q 'images_dest' "$work/rendered-nodest.log" \
    || grep -q Traceback "$work/rendered-nodest.log"; then
    cat "$work/rendered-nodest.log"; echo "state=rendered without dest did not fail cleanly"; return 1
  fi
}
needs rendered install && step rendered rendered

# The same playbook runs with ansible-core 2.16: closed port, and a render.
playbook_216() {
  local rc
  [ -x "$venv216/ansible-playbook" ] || { echo "$venv216/ansible-playbook missing: run scripts/bootstrap.sh"; return 1; }
  export ANSIBLE_BIN=$venv216
  "$venv216/ansible-playbook" --version | head -n 1
  rc=$(playbook "$work/closed-216.log" --check -e images_file=images.txt -e kubeconfig=kubeconfig)
  assert_clean_failure "$work/closed-216.log" "$rc" localhost || return 1
  rc=$(playbook "$work/rendered-216.log" -e state=rendered -e dest=out/p216.yaml -e flavor=k3s \
    -e images=registry.test:5000/team/app:v1)
  cat "$work/rendered-216.log"
  [ "$rc" -eq 0 ] && grep -q 'kind: DaemonSet' "$run_dir/out/p216.yaml"
}
needs playbook-2.16 install && step playbook-2.16 playbook_216

# --- summary -----------------------------------------------------------------------------------------------------
for n in "${notes[@]}"; do echo "test-collection: note: $n"; done
printf 'test-collection: %d steps passed, %d failed%s\n' "${#passed[@]}" "${#failed[@]}" \
  "$([ ${#failed[@]} -gt 0 ] && echo ": ${failed[*]}")"
[ ${#failed[@]} -eq 0 ]
