#!/usr/bin/env bash
# The container test (npm run test:container): builds docker/Dockerfile.complete for real with
# `make build-complete` (buildah, docker format) on stand-in base images, runs the image with podman the
# way the README shows, and checks what an operator relies on (test/container/checks.sh). On demand,
# not part of `npm test`: the image's portable llama.cpp build takes long the first time (then it is in
# the build's cache mount).
#
# usage: scripts/test-container.sh [--cold | --skip-build] [--keep] [--list] [CHECK…]
#   --cold        the first build from scratch: no layer cache, llama.cpp's cache mount emptied
#   --skip-build  use the image the last run built
#   --keep        leave the main container running at the end (its name is printed)
#   --list        print the checks' names
#   CHECK…        run only these checks
# Needs root (rootful podman and buildah with the runc runtime), podman, buildah, runc, debootstrap,
# make, node, npm, curl. Docker Hub is not needed: the bases are stand-ins built from a
# `debootstrap --variant=minbase bookworm` rootfs (test/container/*.Containerfile), kept with the logs in
# $CODI_CONTAINER_SCAFFOLD (default ${XDG_CACHE_HOME:-~/.cache}/codi-adapter/container).
# CODI_SCAFFOLD_ROOTFS=<dir> copies such a rootfs instead of running debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/container/lib.sh
. test/container/checks.sh

skip_build=false
cold=false
keep=false
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cold) cold=true ;;
    --skip-build) skip_build=true ;;
    --keep) keep=true ;;
    --list) printf '%s\n' start_to_healthy "${MAIN_CHECKS[@]}" "${OWN_CHECKS[@]}" graceful_stop; exit 0 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "test-container: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) only+=("$1") ;;
  esac
  shift
done
selected() { [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $1 "* ]]; }

die() { printf 'test-container: %s\n' "$*" >&2; exit 3; }

SCAFFOLD="${CODI_CONTAINER_SCAFFOLD:-${XDG_CACHE_HOME:-$HOME/.cache}/codi-adapter/container}"
PREFIX=localhost/codi-test-scaffold
ROOTFS_IMAGE="$PREFIX/bookworm:rootfs"
DEBIAN_IMAGE="$PREFIX/debian:bookworm-slim"
NODE_IMAGE="$PREFIX/node:20-bookworm-slim"
SLIM_IMAGE="$PREFIX/codi:slim"
IMAGE="$PREFIX/codi:complete"
BUILD="buildah bud --format docker --isolation chroot --layers"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

preflight() {
  section "preflight"
  [ "$(id -u)" -eq 0 ] || die "needs root: rootful podman and buildah (sudo npm run test:container)"
  local tool
  for tool in podman buildah runc debootstrap make node npm curl tar timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (Debian: apt-get install podman buildah runc debootstrap make curl)"
  done
  podman info >/dev/null 2>&1 || die "podman does not work here: $(podman info 2>&1 | tail -n 1)"
  [ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (the stand-in images copy it for npm)"
  note "podman $(podman version --format '{{.Client.Version}}'), $(buildah --version), runc $(runc --version | head -n 1 | awk '{print $3}')"
  note "scaffolding: $SCAFFOLD"
  mkdir -p "$SCAFFOLD/logs"
}

# The stand-in bases: a minbase bookworm rootfs imported as an image, debian:bookworm-slim on it, then
# node:20-bookworm-slim and codi:slim. Rebuilt layers come from buildah's layer cache when nothing
# changed.
scaffold() {
  section "stand-in base images ($PREFIX/…)"
  if [ ! -f "$SCAFFOLD/rootfs/etc/debian_version" ]; then
    rm -rf "$SCAFFOLD/rootfs.tmp"
    if [ -n "${CODI_SCAFFOLD_ROOTFS:-}" ]; then
      note "copying the minbase rootfs $CODI_SCAFFOLD_ROOTFS"
      cp -a "$CODI_SCAFFOLD_ROOTFS" "$SCAFFOLD/rootfs.tmp"
    else
      note "debootstrap --variant=minbase bookworm (a few minutes, once)"
      debootstrap --variant=minbase bookworm "$SCAFFOLD/rootfs.tmp" http://deb.debian.org/debian \
        >"$SCAFFOLD/logs/debootstrap.log" 2>&1 \
        || { tail -n 20 "$SCAFFOLD/logs/debootstrap.log" >&2; die "debootstrap failed (log: $SCAFFOLD/logs/debootstrap.log)"; }
    fi
    mv "$SCAFFOLD/rootfs.tmp" "$SCAFFOLD/rootfs"
    podman rmi -f "$ROOTFS_IMAGE" >/dev/null 2>&1 || true
  fi
  if ! podman image exists "$ROOTFS_IMAGE"; then
    note "importing the rootfs as $ROOTFS_IMAGE"
    tar -C "$SCAFFOLD/rootfs" --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/cache/apt/*.bin' \
      --exclude='./var/lib/apt/lists/*' --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
      --exclude='./usr/share/info/*' --exclude='./usr/share/locale/*' -c . \
      | podman import --quiet - "$ROOTFS_IMAGE" >/dev/null
  fi
  build_scaffold debian "$DEBIAN_IMAGE" test/container/debian.Containerfile test/container \
    "SCAFFOLD_ROOTFS=$ROOTFS_IMAGE"
  # node:20-bookworm-slim from this machine's node and npm
  local context="$SCAFFOLD/node-context"
  rm -rf "$context"
  mkdir -p "$context"
  cp "$(command -v node)" "$context/node"
  cp -a "$(npm root -g)/npm" "$context/npm"
  cp "$CA_BUNDLE" "$context/ca-certificates.crt"
  build_scaffold node "$NODE_IMAGE" test/container/node.Containerfile "$context" "SCAFFOLD_BASE=$DEBIAN_IMAGE"
  build_scaffold slim "$SLIM_IMAGE" test/container/slim.Containerfile test/container "SCAFFOLD_BASE=$DEBIAN_IMAGE"
}

# build_scaffold NAME IMAGE CONTAINERFILE CONTEXT BUILD_ARG
build_scaffold() {
  local log="$SCAFFOLD/logs/scaffold-$1.log"
  buildah build --isolation chroot --format docker --layers --build-arg "$5" -f "$3" -t "$2" "$4" >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; die "building the stand-in $2 failed (log: $log)"; }
  note "$2: $(podman image inspect --format '{{.Id}}' "$2" | cut -c1-12)"
}

# clear_llama_cache: empties the Dockerfile's llama.cpp cache mount (for --cold)
clear_llama_cache() {
  local log="$SCAFFOLD/logs/clear-llama-cache.log"
  buildah build --isolation chroot --no-cache --build-arg "SCAFFOLD_BASE=$DEBIAN_IMAGE" \
    -f test/container/clear-llama-cache.Containerfile test/container >"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; die "emptying the llama.cpp cache mount failed (log: $log)"; }
  note "emptied the llama.cpp cache mount"
}

# build_complete LABEL [BUILD OPTION…]: one `make build-complete`, timed; its output goes to a log,
# llama.cpp's progress to the terminal.
build_count=0
build_complete() {
  build_count=$((build_count + 1))
  local log="$SCAFFOLD/logs/build-$build_count.log" label="$1" t0 t1 status=0 what command steps
  shift
  command="$BUILD${*:+ $*}"
  note "make build-complete DOCKER=\"$command\" (log: $log)"
  t0="$(now_ms)"
  make build-complete DOCKER="$command" BASE_IMAGE="$SLIM_IMAGE" NODE_IMAGE="$NODE_IMAGE" IMAGE="$IMAGE" 2>&1 \
    | tee "$log" | grep --line-buffered -E '^\[llama-build\]|^\[[0-9]/[0-9]\] STEP' >&2 || status=${PIPESTATUS[0]}
  t1="$(now_ms)"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "make build-complete failed (exit $status; log: $log)"
  fi
  # every step but FROM either ran or was taken from the layer cache
  steps="$(grep -E '^\[[0-9]+/[0-9]+\] STEP ' "$log" | grep -c -v ': FROM ' || true)"
  what="$(grep -c '^--> Using cache' "$log" || true) of $steps steps from the layer cache"
  if grep -q '^\[llama-build\] building llama-server' "$log"; then what="llama.cpp compiled, $what"
  elif grep -q '^\[llama-build\] cached:' "$log"; then what="llama.cpp from the cache mount, $what"
  fi
  measure "build $build_count ($label)" "$(elapsed "$t0" "$t1") s: $what"
}

# The models and work volumes, as an operator prepares them on the host with the CLI: the tiny base
# model and adapter that the project's own code generates (examples/, npm run examples), mounted with
# --base and --activate; a broken adapter and one UID 1000 cannot read beside it.
fixtures() {
  section "volumes"
  if [ ! -f dist/index.js ]; then npm run build >&2; fi
  RUN_DIR="$SCAFFOLD/run"
  rm -rf "$RUN_DIR"
  MODELS="$RUN_DIR/models"
  WORK="$RUN_DIR/work"
  mkdir -p "$MODELS/base" "$WORK/patterns"
  chmod 755 "$RUN_DIR" "$MODELS" "$WORK"
  cp examples/base/tiny-qwen2.gguf "$MODELS/base/tiny-qwen2.gguf"
  cp examples/patterns/rules.yml "$WORK/patterns/rules.yml"
  host_cli mount examples/adapters/tiny-qwen2-lora --root "$MODELS" \
    --base "$MODELS/base/tiny-qwen2.gguf" --activate --no-color >"$SCAFFOLD/logs/mount.log" 2>&1 \
    || { cat "$SCAFFOLD/logs/mount.log" >&2; die "codi-adapter mount of the example adapter failed"; }
  cp -a examples/adapters/broken-checksum "$MODELS/adapters/broken-checksum"
  cp -a examples/adapters/tiny-qwen2-lora "$MODELS/adapters/unreadable-lora"
  chmod -R go-rwx "$MODELS/adapters/unreadable-lora"
  ADAPTER=/models/adapters/tiny-qwen2-lora
  run_args=(-v "$MODELS:/models" -v "$WORK:/work" -e AIRGAP=true -e LLM_ENABLED=true
    -e CODE_MODEL=tiny-qwen2 -e LLAMA_CPP_THREADS=2)
  note "models: $MODELS ($(ls "$MODELS/adapters" | tr '\n' ' '))"
}

on_exit() {
  if $keep && [ -n "${main_started:-}" ]; then
    note "kept: $(cname main) (podman rm -f $(cname main))"
    started=("${started[@]/$(cname main)/}")
  fi
  cleanup_containers
}
trap on_exit EXIT

preflight
if ! $skip_build; then
  scaffold
  section "make build-complete, twice (the second with unchanged sources)"
  if $cold; then
    clear_llama_cache
    build_complete "cold" --no-cache
  else
    build_complete "first"
  fi
  build_complete "again, unchanged"
else
  podman image exists "$IMAGE" || die "--skip-build: no image $IMAGE yet"
fi
measure "image size" "$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
fixtures

section "the README's run command: podman run -d ${run_args[*]} -e ADAPTER_PATH=$ADAPTER -p 8000 -p 8081 $IMAGE"
t0="$(now_ms)"
main_started=1
if ! start main "${run_args[@]}" -e "ADAPTER_PATH=$ADAPTER" -p 8000 -p 8081; then
  fail start_to_healthy "podman run failed (its error above)"
elif wait_healthy main 240 "$t0"; then
  pass start_to_healthy "the HEALTHCHECK passes $healthy_after s after podman run"
  measure "start to healthy" "$healthy_after s"
else
  fail start_to_healthy "not healthy within 240 s; last lines: $(podman logs --tail 5 "$(cname main)" 2>&1 | tr '\n' ' ')"
fi
# a check reports its own outcome; one that breaks off (an unexpected error) is a FAIL, not the end
run_check() { "check_$1" || fail "$1" "the check broke off (exit $?)"; }
for check in "${MAIN_CHECKS[@]}"; do
  if selected "$check"; then run_check "$check"; fi
done
section "failure cases, each in a container of its own"
for check in "${OWN_CHECKS[@]}"; do
  if selected "$check"; then run_check "$check"; fi
done
if ! $keep && selected graceful_stop; then
  section "podman stop"
  run_check graceful_stop
fi
podman logs "$(cname main)" >"$SCAFFOLD/logs/main.log" 2>&1 || true
note "the main container's output: $SCAFFOLD/logs/main.log"
summary
