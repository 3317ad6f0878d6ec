# Helpers of scripts/test-container.sh (sourced): results, HTTP, containers, JSON. Test scaffolding.

# --- results -----------------------------------------------------------------------------------------
results=()   # "PASS|FAIL<TAB>name<TAB>detail", in order
measures=()  # "name<TAB>value", printed with the summary

note() { printf '   %s\n' "$*" >&2; }
section() { printf '\n== %s\n' "$*" >&2; }
pass() { results+=("PASS	$1	${2:-}"); printf 'PASS  %-34s %s\n' "$1" "${2:-}"; }
fail() { results+=("FAIL	$1	${2:-}"); printf 'FAIL  %-34s %s\n' "$1" "${2:-}"; }
measure() { measures+=("$1	$2"); printf '      %-34s %s\n' "$1" "$2"; }

summary() {
  local passed=0 failed=0 r
  printf '\n== summary\n'
  for r in "${results[@]}"; do
    IFS=$'\t' read -r status name detail <<<"$r"
    printf '%s  %-34s %s\n' "$status" "$name" "$detail"
    if [ "$status" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done
  for r in "${measures[@]}"; do
    IFS=$'\t' read -r name value <<<"$r"
    printf '      %-34s %s\n' "$name" "$value"
  done
  printf '%d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ]
}

# --- time --------------------------------------------------------------------------------------------
now_ms() { date +%s%3N; }
# seconds with one decimal between two now_ms values
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

# --- HTTP (from the host, through the published ports) ------------------------------------------------
# http METHOD URL [JSON body]: sets http_status ("000" when nothing answered), http_body, http_error
http() {
  local out err args
  out="$(mktemp)"
  err="$(mktemp)"
  args=(-sS -m 60 -o "$out" -w '%{http_code}' -X "$1")
  if [ -n "${3:-}" ]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
  http_status="$(curl "${args[@]}" "$2" 2>"$err")" || true
  http_body="$(cat "$out")"
  http_error="$(cat "$err")"
  rm -f "$out" "$err"
}

# json EXPR: evaluates EXPR on the JSON read from stdin (as `j`) with node; prints the result
json() {
  node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j;
      try { j = JSON.parse(s); } catch { process.exit(2); }
      const v = eval(process.argv[1]);
      process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));
    });' "$1"
}

# --- the host -----------------------------------------------------------------------------------------
# host_cli ARGS…: codi-adapter on the host, as an operator prepares the volumes (e.g. mount --root "$MODELS")
host_cli() { node bin/run.js "$@"; }

# --- containers --------------------------------------------------------------------------------------
# Without systemd, podman cannot schedule the HEALTHCHECK's timer and says so whenever a container
# starts or stops; the checks run the HEALTHCHECK themselves (podman healthcheck run).
no_systemd_timer='unable to get systemd connection to .*healthchecks'
podman_() {
  local err status=0
  err="$(mktemp)"
  podman "$@" 2>"$err" || status=$?
  grep -v "$no_systemd_timer" "$err" >&2 || true
  rm -f "$err"
  return "$status"
}

# Every container this run starts is named codi-ct-<run id>-<name> and removed at exit.
run_id="$$"
started=()
cname() { printf 'codi-ct-%s-%s' "$run_id" "$1"; }

# start NAME [podman run options…]: starts the image detached, as the README's run command does
start() {
  local name
  name="$(cname "$1")"
  shift
  started+=("$name")
  podman_ run -d --runtime runc --name "$name" "$@" "$IMAGE" >/dev/null
}

# run_once NAME TIMEOUT [podman run options…]: runs the image in the foreground until it exits; sets
# run_status and run_output (stdout and stderr)
run_once() {
  local name timeout_s
  name="$(cname "$1")"
  timeout_s="$2"
  shift 2
  started+=("$name")
  run_status=0
  run_output="$(timeout "$timeout_s" podman run --runtime runc --name "$name" "$@" "$IMAGE" 2>&1)" || run_status=$?
  run_output="$(grep -v "$no_systemd_timer" <<<"$run_output" || true)"
}

# in_container NAME COMMAND…: runs a command in a running container (as its user, in its WORKDIR)
in_container() {
  local name
  name="$(cname "$1")"
  shift
  podman exec "$name" "$@"
}

# host_port NAME PORT: the published host address of a container port, as 127.0.0.1:N
host_port() { podman port "$(cname "$1")" "$2/tcp" | head -n 1 | sed 's/^0\.0\.0\.0:/127.0.0.1:/'; }

# wait_healthy NAME TIMEOUT START_MS: polls the image's HEALTHCHECK until it passes; sets healthy_after,
# the seconds since START_MS (now_ms before podman run)
wait_healthy() {
  local start_ms="$3" deadline
  deadline=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if podman healthcheck run "$(cname "$1")" >/dev/null 2>&1; then
      healthy_after="$(elapsed "$start_ms" "$(now_ms)")"
      return 0
    fi
    if [ "$(podman inspect --format '{{.State.Running}}' "$(cname "$1")" 2>/dev/null)" != true ]; then
      return 1
    fi
    sleep 0.25
  done
  return 1
}

cleanup_containers() {
  local name
  for name in "${started[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; done
}
