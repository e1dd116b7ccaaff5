#!/usr/bin/env bash
# Builds the container runtimes the agent is tested on besides Debian's containerd 1.6, from their Go modules, once,
# into the user's cache directory:
#   build.sh containerd2   containerd, ctr, containerd-shim-runc-v2  (github.com/containerd/containerd/v2@$CONTAINERD2_VERSION)
#   build.sh crio          crio, pinns                                (github.com/cri-o/cri-o@$CRIO_VERSION)
# runc and conmon come from Debian (scripts/bootstrap.sh). Each is built inside a copy of its module's source (so
# its own go.mod and go.sum pin every dependency, as its release build does). Not `go install module@version`:
# that also asks the proxy for the module's version list ("loading deprecation"), which this proxy refuses for
# cri-o with 403 "This module version is not available".
# Flags as the projects' own Makefiles: -trimpath, version ldflags; containerd's default tags (CGO_ENABLED=0 as its
# static release; no btrfs/devmapper C headers here), CRI-O's tags with the C-library features this VM lacks left
# out (containers_image_openpgp instead of gpgme, no btrfs, no devicemapper, no seccomp/apparmor/selinux/libsubid);
# pinns (CRI-O's small C helper) with the C compiler, as pinns/Makefile does.
# Prints the bin directory on stdout; progress on stderr. A second run with the same inputs only checks the stamp.
set -euo pipefail
CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
CRIO_VERSION=${CRIO_VERSION:-v1.34.0}
cache_root=${STACKROX_PREFETCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stackrox-prefetch}
runtime=${1:?usage: build.sh containerd2|crio}
log() { printf 'runtime-build(%s): %s\n' "$runtime" "$*" >&2; }
quiet_go() { grep -v '^go: downloading' >&2 || true; }
command -v go >/dev/null || { log "go is not on PATH (the Go toolchain is needed to build $runtime)"; exit 1; }

case $runtime in
  containerd2)
    module=github.com/containerd/containerd/v2 version=$CONTAINERD2_VERSION
    tags=urfave_cli_no_docs,no_btrfs,no_devmapper
    cmds=(cmd/containerd cmd/ctr cmd/containerd-shim-runc-v2)
    ldflags="-s -w -X $module/version.Version=$version -X $module/version.Package=$module"
    expect="about 2-3 minutes"
    ;;
  crio)
    module=github.com/cri-o/cri-o version=$CRIO_VERSION
    tags=containers_image_ostree_stub,containers_image_openpgp,exclude_graphdriver_btrfs,btrfs_noversion,exclude_graphdriver_devicemapper
    cmds=(cmd/crio)
    ldflags="-s -w -X $module/internal/version.buildDate=1970-01-01T00:00:00Z"
    expect="about 4-6 minutes"
    ;;
  *) log "unknown runtime (containerd2 or crio)"; exit 2 ;;
esac

# The cache key: everything that changes the output.
key=$(printf '%s\n' "$module" "$version" "$(go env GOVERSION)" "$tags" "${cmds[*]}" "$ldflags" \
  "$(sha256sum "$0" | cut -c1-64)" | sha256sum | cut -c1-12)
out=$cache_root/$runtime/$version-$key
stamp=$out/bin/.complete
if [ -f "$stamp" ]; then echo "$out/bin"; exit 0; fi
mkdir -p "$cache_root/$runtime"
exec 8>"$cache_root/$runtime/.build.lock"   # one build at a time per cache; a second caller finds the result
flock 8
if [ -f "$stamp" ]; then echo "$out/bin"; exit 0; fi

log "building $module@$version into $out ($expect cold on 2 cores; done once)"
rm -rf "$out"
mkdir -p "$out/bin"
started=$(date +%s)
log "downloading $module@$version"
modsrc=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
[ -f "$modsrc/go.mod" ] || { log "go mod download gave no source for $module@$version"; exit 1; }
src=$out/src
cp -r "$modsrc" "$src"
chmod -R u+w "$src"   # the module cache is read-only; the build may add go.sum lines for the tool chain
pkgs=()
for c in "${cmds[@]}"; do pkgs+=("./$c"); done
log "compiling ${cmds[*]} (tags $tags)"
(cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/bin/" "${pkgs[@]}") \
  2>&1 | quiet_go

if [ "$runtime" = crio ]; then
  [ -d "$src/pinns/src" ] || { log "no pinns/src in $src"; exit 1; }
  log "compiling pinns with ${CC:-cc}"
  # pinns/Makefile's flags; static, so it runs wherever CRI-O starts it.
  "${CC:-cc}" -std=c99 -Os -Wall -Wextra -static -o "$out/bin/pinns" "$src"/pinns/src/*.c
fi
for c in "${cmds[@]}"; do [ -x "$out/bin/${c##*/}" ] || { log "missing $out/bin/${c##*/}"; exit 1; }; done
rm -rf "$src"   # only the binaries are kept
touch "$stamp"
log "done in $(( $(date +%s) - started ))s"
echo "$out/bin"
