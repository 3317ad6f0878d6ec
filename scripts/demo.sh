#!/usr/bin/env bash
# The README's main job, end to end, on a fresh clone:
#   1. build codi-adapter (npm ci, npm run build) if needed
#   2. build llama-server from pinned llama.cpp source (cached after the first time; progress shown)
#   3. place the example adapter in a temporary models root with `codi-adapter mount --activate`
#      (run serves <root>/adapters/active by default)
#   4. `codi-adapter run` with a demo app that asks one question with the adapter at scale 1 and at
#      scale 0 and prints both answers; when it exits, run stops llama-server and exits 0.
# usage: scripts/demo.sh   (LLAMA_SERVER_BIN=<path> skips step 2; DEMO_PROMPT changes the question)
set -euo pipefail
cd "$(dirname "$0")/.."

bold() { if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then printf '\n\033[1m== %s\033[0m\n' "$*" >&2; else printf '\n== %s\n' "$*" >&2; fi; }

if [ ! -d node_modules ]; then
  bold "installing dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi
if [ ! -f dist/index.js ] || [ -n "$(find src -name '*.ts' -newer dist/index.js -print -quit)" ]; then
  bold "building codi-adapter"
  npm run build
fi
cli() { node bin/run.js "$@"; }

bold "llama-server from pinned llama.cpp (the first build takes 10-20 minutes on 2 cores; then it is cached)"
if [ -z "${LLAMA_SERVER_BIN:-}" ]; then
  LLAMA_SERVER_BIN="$(scripts/build-llama-server.sh | tail -n 1)"
fi
echo "llama-server: $LLAMA_SERVER_BIN" >&2

root="$(mktemp -d "${TMPDIR:-/tmp}/codi-demo.XXXXXX")"
trap 'rm -rf "$root"' EXIT
# the models root must be readable by UID 1000, the runtime user mount checks for
chmod 755 "$root"
mkdir -p "$root/base"
cp examples/base/tiny-qwen2.gguf "$root/base/tiny-qwen2.gguf"

bold "placing the example adapter in the models root $root"
# --base builds the llama.cpp GGUF now, so run finds it cached; --activate makes it run's default
cli mount examples/adapters/tiny-qwen2-lora --root "$root" --base "$root/base/tiny-qwen2.gguf" --activate

port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"

bold "codi-adapter run: verify → GGUF → llama-server → health → demo app (scale 1, then scale 0)"
status=0
MODEL_MOUNT_PATH="$root" \
CODE_MODEL=tiny-qwen2 \
LLAMA_SERVER_BIN="$LLAMA_SERVER_BIN" \
LLM_PORT="$port" \
LLAMA_CPP_THREADS="${LLAMA_CPP_THREADS:-2}" \
CODI_STATE_DIR="$root/state" \
PATTERNS_RULES="$root/rules.yml" \
APP_COMMAND="node examples/demo-app/ask.js" \
  cli run || status=$?

if [ "$status" -eq 0 ]; then bold "demo finished: run stopped llama-server and exited 0"; else bold "demo failed: run exited $status"; fi
exit "$status"
