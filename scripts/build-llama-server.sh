#!/usr/bin/env bash
# Builds llama-server from pinned llama.cpp source, offline, and caches the result outside the repo.
# CI (.ci/run), the README demo and docker/Dockerfile.complete all call this one script.
#
# usage: scripts/build-llama-server.sh [--source <llama.cpp dir>] [--portable] [--cache <dir>] [--jobs N]
#   --source    a local llama.cpp checkout instead of the pinned node-llama-cpp bundle
#   --portable  runtime-dispatched CPU variants (GGML_CPU_ALL_VARIANTS) instead of -march=native;
#               this is what the container uses
#   --cache     cache root (default: $CODI_LLAMA_CACHE, else $XDG_CACHE_HOME/codi-adapter/llama.cpp)
# Progress goes to stderr; the last line on stdout is the absolute path of llama-server.
set -euo pipefail
say() { printf '[llama-build] %s\n' "$*" >&2; }
# Every failure names its cause on stderr, and stdout gets the path only on success: callers take the
# last stdout line (`$(… | tail -n 1)`), so a failure must never leave a path there. A command that
# fails without a message of its own is named by this trap.
trap 'status=$?; say "failed (exit $status): line $LINENO: $BASH_COMMAND"; exit "$status"' ERR
fail() { trap - ERR; say "$1"; exit "${2:-1}"; }

NLC_VERSION="${NODE_LLAMA_CPP_VERSION:-3.21.1}"
source_dir=""
flavour="native"
cache_root=""
jobs="$(nproc 2>/dev/null || echo 2)"

while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --portable) flavour="portable"; shift ;;
    --cache) cache_root="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (see --help)" 2 ;;
  esac
done
[ -n "$cache_root" ] || cache_root="${CODI_LLAMA_CACHE:-${XDG_CACHE_HOME:-${HOME:?is not set: give --cache}/.cache}/codi-adapter/llama.cpp}"

need() { command -v "$1" >/dev/null 2>&1 || fail "missing tool: $1 (install it, e.g. apt-get install $2)" 3; }
need cmake cmake; need git git; need c++ g++; need tar tar; need flock util-linux

mkdir -p "$cache_root"
cache_root="$(cd "$cache_root" && pwd)"

# Resolve the source and a version key that changes whenever the source does.
if [ -z "$source_dir" ]; then
  need npm npm
  pkg_dir="$cache_root/src/node-llama-cpp-$NLC_VERSION"
  if [ ! -d "$pkg_dir/llama.cpp/.git" ]; then
    say "fetching node-llama-cpp@$NLC_VERSION from the npm registry (it carries the llama.cpp source bundle)"
    tmp="$(mktemp -d "$cache_root/.fetch-XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # npm's and git's own error output goes to stderr; only their notices are kept quiet
    (cd "$tmp" && npm pack --loglevel=error "node-llama-cpp@$NLC_VERSION" >/dev/null) \
      || fail "npm pack node-llama-cpp@$NLC_VERSION failed (npm's error above; registry: $(npm config get registry 2>/dev/null || echo '?'))"
    tar -xzf "$tmp"/node-llama-cpp-*.tgz -C "$tmp" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json \
      || fail "node-llama-cpp@$NLC_VERSION's package has no llama.cpp source bundle (tar's error above)"
    git clone --quiet "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.cpp" \
      || fail "git clone of the llama.cpp source bundle in node-llama-cpp@$NLC_VERSION failed (git's error above)"
    cp "$tmp/package/llama/llama.cpp.info.json" "$tmp/llama.cpp.info.json"
    mkdir -p "$(dirname "$pkg_dir")"
    rm -rf "$pkg_dir"
    mkdir "$tmp/out" && mv "$tmp/llama.cpp" "$tmp/llama.cpp.info.json" "$tmp/out/"
    mv "$tmp/out" "$pkg_dir"
    rm -rf "$tmp"; trap - EXIT
  fi
  source_dir="$pkg_dir/llama.cpp"
  tag="$(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' "$pkg_dir/llama.cpp.info.json")"
  commit="$(git -C "$source_dir" rev-parse --short=12 HEAD)"
  version_key="nlc$NLC_VERSION-${tag:-unknown}-$commit"
else
  [ -f "$source_dir/CMakeLists.txt" ] && [ -d "$source_dir/tools/server" ] \
    || fail "$source_dir does not look like a llama.cpp source tree" 3
  if git -C "$source_dir" rev-parse HEAD >/dev/null 2>&1 && [ -z "$(git -C "$source_dir" status --porcelain 2>/dev/null)" ]; then
    version_key="local-$(git -C "$source_dir" rev-parse --short=12 HEAD)"
  else
    # No clean git state: key on the content of the sources that go into the server (those of them
    # this tree has: find fails on a missing one).
    hashed=()
    for p in CMakeLists.txt cmake common ggml include src tools/server tools/ui vendor; do
      if [ -e "$source_dir/$p" ]; then hashed+=("$p"); fi
    done
    version_key="local-$(cd "$source_dir" && find "${hashed[@]}" -type f -not -path '*/node_modules/*' -print0 \
      | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
  fi
fi

key="$version_key-$flavour"
dest="$cache_root/$key"
if [ -x "$dest/bin/llama-server" ]; then
  say "cached: $key"
  echo "$dest/bin/llama-server"
  exit 0
fi

# One build per key at a time; a second caller waits and then finds the cache filled.
exec 9>"$cache_root/.$key.lock"
if ! flock -n 9; then
  say "another build of $key is running; waiting for it"
  flock 9
  if [ -x "$dest/bin/llama-server" ]; then echo "$dest/bin/llama-server"; exit 0; fi
fi

build="$cache_root/.build-$key"
log="$cache_root/.build-$key.log"
cmake_args=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  # offline: no web UI from npm or the Hugging Face bucket, no HTTPS client
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
  -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON '-DCMAKE_BUILD_RPATH=$ORIGIN'
)
if [ "$flavour" = "portable" ]; then
  cmake_args+=(-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON)
else
  cmake_args+=(-DGGML_NATIVE=ON)
fi

say "building llama-server ($key) with $jobs jobs; this takes 10-20 minutes on 2 cores the first time"
say "full log: $log"
start=$(date +%s)
cmake -S "$source_dir" -B "$build" "${cmake_args[@]}" >"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; fail "cmake configure failed (its last lines above; full log: $log)"; }
# Show cmake's own [ NN%] progress lines, one per compiled unit, on stderr.
rc=0
cmake --build "$build" --target llama-server -j "$jobs" 2>&1 | tee -a "$log" \
  | grep --line-buffered -E '^\[ *[0-9]+%\]' | sed -u 's/^/[llama-build] /' >&2 || rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { tail -n 30 "$log" >&2; fail "build failed (exit $rc; cmake's last lines above; full log: $log)"; }

# Install into the cache in one rename so a crash never leaves a half-filled entry.
stage="$(mktemp -d "$cache_root/.stage-XXXXXX")"
mkdir -p "$stage/bin"
cp -a "$build/bin/llama-server" "$stage/bin/"
find "$build/bin" -maxdepth 1 -name '*.so*' -exec cp -a {} "$stage/bin/" \;
"$stage/bin/llama-server" --version >"$stage/VERSION" 2>&1 || { cat "$stage/VERSION" >&2; fail "built binary does not run"; }
printf '%s\n' "$key" >"$stage/KEY"
rm -rf "$dest"
mv "$stage" "$dest"
rm -rf "$build"
say "done in $(( $(date +%s) - start ))s: $(head -n1 "$dest/VERSION")"
echo "$dest/bin/llama-server"
