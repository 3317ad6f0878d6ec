# The checks of scripts/test-container.sh (sourced). Test scaffolding.
#
# A check is a function check_<name> that calls pass or fail (lib.sh) once per result. To add one,
# write the function and add its name to a list:
#   MAIN_CHECKS  run against the container started with the README's run command (`main`, healthy,
#                ports published: host_port main 8081), in this order;
#   OWN_CHECKS   start containers of their own (run_once for one that exits, start + wait_healthy for one
#                that serves, e.g. with --network none);
#   graceful_stop runs last, on `main`.
# What a check may use: $IMAGE, $MODELS and $WORK (the host folders mounted at /models and /work),
# $ADAPTER (the adapter's path in the container), run_args (the options of the README's run command),
# and the helpers of lib.sh: http, json, in_container, host_port, host_cli (e.g. to mount a second adapter on
# the host before a `codi-adapter reload` through in_container), start, run_once, wait_healthy.
MAIN_CHECKS=(
  image_healthcheck
  healthcheck_command
  llm_health
  llm_completion
  llm_models
  llm_completion_by_adapter
  app_healthz
  app_llm_route
  uid_1000
  old_verify_entry_point
  old_mount_entry_point
)
OWN_CHECKS=(
  reload_second_adapter
  airgap_enforced
  unreadable_adapter
  missing_adapter
  broken_adapter
  missing_base_model
)

PROMPT='def fibonacci(n):'
BASE_ID=tiny-qwen2
ADAPTER_ID=tiny-qwen2-lora
SECOND_ID=tiny-qwen2-lora-second

check_image_healthcheck() {
  local test
  test="$(podman image inspect "$IMAGE" | json 'j[0].Healthcheck?.Test ?? j[0].Config?.Healthcheck?.Test ?? null')"
  if [ "$test" = '["CMD","node","/opt/codi-adapter/docker/healthcheck.js"]' ]; then
    pass image_healthcheck "the image config has the HEALTHCHECK: $test"
  else
    fail image_healthcheck "the image config has no HEALTHCHECK (got $test): was it built in OCI format?"
  fi
}

check_healthcheck_command() {
  local out status=0
  podman healthcheck run "$(cname main)" >/dev/null 2>&1 || status=$?
  out="$(in_container main node /opt/codi-adapter/docker/healthcheck.js 2>&1)" || status=$?
  if [ "$status" -eq 0 ] && [[ "$out" == healthy:* ]]; then
    pass healthcheck_command "podman healthcheck run: 0; the command says: $out"
  else
    fail healthcheck_command "exit $status: $out"
  fi
}

check_llm_health() {
  http GET "http://$(host_port main 8081)/health"
  if [ "$http_status" = 200 ] && [ "$(json 'j.status' <<<"$http_body")" = ok ]; then
    pass llm_health "GET :8081/health 200 $http_body"
  else
    fail llm_health "GET :8081/health: $http_status $http_body $http_error"
  fi
}

# the LLM's answer to PROMPT, kept to compare with the app's
llm_text=""
check_llm_completion() {
  http POST "http://$(host_port main 8081)/completion" \
    "{\"prompt\": \"$PROMPT\", \"n_predict\": 8, \"temperature\": 0, \"cache_prompt\": false}"
  local tokens
  tokens="$(json 'j.tokens_predicted' <<<"$http_body" || echo '?')"
  if [ "$http_status" = 200 ] && [ "${tokens:-0}" -gt 0 ] 2>/dev/null; then
    llm_text="$(json 'j.content' <<<"$http_body")"
    pass llm_completion "POST :8081/completion 200, $tokens tokens: $(json 'JSON.stringify(j.content)' <<<"$http_body")"
  else
    fail llm_completion "POST :8081/completion: $http_status ${http_body:0:300} $http_error"
  fi
}

check_app_healthz() {
  http GET "http://$(host_port main 8000)/healthz"
  if [ "$http_status" = 200 ]; then
    pass app_healthz "GET :8000/healthz 200 $http_body"
  else
    fail app_healthz "GET :8000/healthz: $http_status $http_body $http_error"
  fi
}

check_app_llm_route() {
  http POST "http://$(host_port main 8000)/ask" "{\"prompt\": \"$PROMPT\", \"n_predict\": 8}"
  if [ "$http_status" != 200 ]; then
    fail app_llm_route "POST :8000/ask: $http_status ${http_body:0:300} $http_error"
    return
  fi
  local text endpoint
  text="$(json 'j.text' <<<"$http_body")"
  endpoint="$(json 'j.endpoint' <<<"$http_body")"
  if [ -n "$llm_text" ] && [ "$text" != "$llm_text" ]; then
    fail app_llm_route "through $endpoint: $(json 'JSON.stringify(j.text)' <<<"$http_body"), not the LLM's own answer"
  else
    pass app_llm_route "POST :8000/ask 200 through LLM_ENDPOINT=$endpoint: $(json 'JSON.stringify(j.text)' <<<"$http_body")"
  fi
}

check_uid_1000() {
  local id
  id="$(in_container main id)"
  if [ "$(in_container main id -u)" = 1000 ]; then pass uid_1000 "$id"; else fail uid_1000 "$id"; fi
}

# exit_status COMMAND…: the exit status of a command in `main`
exit_status() {
  local status=0
  in_container main "$@" >/dev/null 2>&1 || status=$?
  printf '%s' "$status"
}

check_old_verify_entry_point() {
  local adapter want cli wrapper ok=true detail=""
  for adapter in tiny-qwen2-lora:0 broken-checksum:1; do
    want="${adapter#*:}"
    adapter="/models/adapters/${adapter%%:*}"
    cli="$(exit_status codi-adapter verify "$adapter")"
    wrapper="$(exit_status python docker/scripts/verify_adapter.py "$adapter")"
    detail+="${adapter##*/}: CLI $cli, wrapper $wrapper; "
    if [ "$cli" != "$want" ] || [ "$wrapper" != "$cli" ]; then ok=false; fi
  done
  if $ok; then pass old_verify_entry_point "${detail%; }"; else fail old_verify_entry_point "${detail%; } (want 0, then 1)"; fi
}

check_old_mount_entry_point() {
  local adapter want cli wrapper ok=true detail=""
  in_container main mkdir -p /tmp/ct-mount-cli /tmp/ct-mount-wrapper
  for adapter in tiny-qwen2-lora:0 broken-checksum:1; do
    want="${adapter#*:}"
    adapter="/models/adapters/${adapter%%:*}"
    cli="$(exit_status codi-adapter mount "$adapter" --root /tmp/ct-mount-cli)"
    wrapper="$(exit_status /opt/codi/scripts/mount_adapter.sh "$adapter" --root /tmp/ct-mount-wrapper)"
    detail+="${adapter##*/}: CLI $cli, wrapper $wrapper; "
    if [ "$cli" != "$want" ] || [ "$wrapper" != "$cli" ]; then ok=false; fi
  done
  if $ok; then pass old_mount_entry_point "${detail%; }"; else fail old_mount_entry_point "${detail%; } (want 0, then 1)"; fi
}

# expect_run NAME STATUS PATTERN: judges the last run_once by its exit status and an output line
expect_run() {
  local line said
  line="$(grep -m 1 -E "$3" <<<"$run_output" || true)"
  if [ "$run_status" = "$2" ] && [ -n "$line" ]; then
    pass "$1" "exit $run_status: $line"
    return
  fi
  # what run said about it: its first error or status line, else its last line
  said="$(grep -m 1 -E '✖|Adapter Status' <<<"$run_output" || tail -n 1 <<<"$run_output")"
  if [ -n "$line" ]; then
    fail "$1" "exit $run_status (want $2): $line"
  else
    fail "$1" "exit $run_status (want $2); no line matches /$3/; it says: $said"
  fi
}

check_unreadable_adapter() {
  run_once unreadable 120 "${run_args[@]}" -e ADAPTER_PATH=/models/adapters/unreadable-lora
  if ! grep -q 'chown -R 1000:1000 /models/adapters/unreadable-lora' <<<"$run_output"; then
    fail unreadable_adapter "exit $run_status: no hint to chown the folder to UID 1000; it says: $(grep -m 1 -E '✖|Adapter Status' <<<"$run_output" || tail -n 1 <<<"$run_output")"
    return
  fi
  expect_run unreadable_adapter 3 'Adapter Status: not_mounted \(UID 1000 .*cannot read /models/adapters/unreadable-lora'
}

check_missing_adapter() {
  run_once missing-adapter 120 "${run_args[@]}" -e ADAPTER_PATH=/models/adapters/not-there
  expect_run missing_adapter 3 'Adapter Status: not_mounted'
}

check_broken_adapter() {
  run_once broken 120 "${run_args[@]}" -e ADAPTER_PATH=/models/adapters/broken-checksum
  expect_run broken_adapter 1 'CHECKSUM_MISMATCH|checksum mismatch'
}

check_missing_base_model() {
  run_once missing-base 120 "${run_args[@]}" -e "ADAPTER_PATH=$ADAPTER" -e BASE_MODEL_PATH=/models/base/not-there.gguf
  expect_run missing_base_model 3 'BASE_MODEL_PATH /models/base/not-there.gguf does not exist'
}

# model_ids NAME: sets ids to what GET :8081/v1/models lists in container NAME (sorted, comma-separated;
# empty unless 200), and http_status and http_body
model_ids() {
  ids=""
  http GET "http://$(host_port "$1" 8081)/v1/models"
  if [ "$http_status" = 200 ]; then
    ids="$(json '(j.data ?? []).map((m) => m.id).sort().join(",")' <<<"$http_body" || true)"
  fi
}

check_llm_models() {
  local ids
  model_ids main
  if [ "$http_status" = 200 ] && [ "$ids" = "$BASE_ID,$ADAPTER_ID" ]; then
    pass llm_models "GET :8081/v1/models 200: $ids"
  else
    fail llm_models "GET :8081/v1/models: $http_status, ids '$ids' (want $BASE_ID,$ADAPTER_ID) ${http_body:0:300} $http_error"
  fi
}

check_llm_completion_by_adapter() {
  http POST "http://$(host_port main 8081)/v1/completions" \
    "{\"model\": \"$ADAPTER_ID\", \"prompt\": \"$PROMPT\", \"max_tokens\": 8, \"temperature\": 0}"
  local text
  text="$(json 'j.choices?.[0]?.text ?? null' <<<"$http_body" || echo null)"
  if [ "$http_status" = 200 ] && [ "$text" != null ]; then
    pass llm_completion_by_adapter "POST :8081/v1/completions model=$ADAPTER_ID 200: $(json 'JSON.stringify(j.choices[0].text)' <<<"$http_body")"
  else
    fail llm_completion_by_adapter "POST :8081/v1/completions model=$ADAPTER_ID: $http_status ${http_body:0:300} $http_error"
  fi
}

# A container serving every adapter of the catalog (ADAPTERS=all); a second adapter mounted on the
# host, then `codi-adapter reload` inside: /v1/models lists both, and the container never restarted.
check_reload_second_adapter() {
  local t0 ids deadline out status=0 restarts
  t0="$(now_ms)"
  if ! start reload "${run_args[@]}" -e ADAPTERS=all -e "ADAPTER_PATH=$ADAPTER" -p 8000 -p 8081 \
    || ! wait_healthy reload 240 "$t0"; then
    fail reload_second_adapter "the container serving ADAPTERS=all did not become healthy: $(podman logs --tail 5 "$(cname reload)" 2>&1 | tr '\n' ' ')"
    return
  fi
  model_ids reload
  if [[ ",$ids," == *",$SECOND_ID,"* ]]; then
    fail reload_second_adapter "$SECOND_ID is served before it was mounted: $ids"
    return
  fi
  # a second adapter is another adapter: the example's files under another id in its metadata.json
  # (a copy under another folder name only would be two adapters claiming one id)
  local second="$SCAFFOLD/second-adapter/$SECOND_ID"
  rm -rf "$SCAFFOLD/second-adapter" && mkdir -p "$SCAFFOLD/second-adapter"
  cp -a examples/adapters/tiny-qwen2-lora "$second"
  node -e 'const fs = require("fs"); const [f, id] = process.argv.slice(1);
    const m = JSON.parse(fs.readFileSync(f, "utf8")); m.id = id;
    fs.writeFileSync(f, JSON.stringify(m, null, 2) + "\n");' "$second/metadata.json" "$SECOND_ID"
  host_cli mount "$second" --root "$MODELS" \
    --base "$MODELS/base/tiny-qwen2.gguf" --no-color >"$SCAFFOLD/logs/mount-second.log" 2>&1 \
    || { fail reload_second_adapter "codi-adapter mount of $SECOND_ID failed: $(tail -n 3 "$SCAFFOLD/logs/mount-second.log" | tr '\n' ' ')"; return; }
  out="$(in_container reload codi-adapter reload 2>&1)" || status=$?
  if [ "$status" -ne 0 ]; then
    fail reload_second_adapter "podman exec … codi-adapter reload: exit $status: $(tr '\n' ' ' <<<"$out")"
    return
  fi
  deadline=$(($(date +%s) + 120))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    model_ids reload
    if [[ ",$ids," == *",$ADAPTER_ID,"* ]] && [[ ",$ids," == *",$SECOND_ID,"* ]]; then break; fi
    sleep 1
  done
  restarts="$(podman inspect --format '{{.RestartCount}}' "$(cname reload)" 2>/dev/null || echo '?')"
  if [[ ",$ids," == *",$ADAPTER_ID,"* ]] && [[ ",$ids," == *",$SECOND_ID,"* ]] && [ "$restarts" = 0 ]; then
    pass reload_second_adapter "codi-adapter reload: exit 0; GET :8081/v1/models: $ids; restarts: $restarts"
  else
    fail reload_second_adapter "after codi-adapter reload, /v1/models: $http_status '$ids' (want $ADAPTER_ID and $SECOND_ID); restarts: $restarts; reload said: $(tr '\n' ' ' <<<"$out")"
  fi
}

# --network none: no interface but loopback, and run records the air gap as enforced
check_airgap_enforced() {
  local t0 enforced
  t0="$(now_ms)"
  if ! start airgap "${run_args[@]}" --network none -e "ADAPTER_PATH=$ADAPTER" \
    || ! wait_healthy airgap 240 "$t0"; then
    fail airgap_enforced "the container with --network none did not become healthy: $(podman logs --tail 5 "$(cname airgap)" 2>&1 | tr '\n' ' ')"
    return
  fi
  enforced="$(in_container airgap cat /tmp/codi-adapter/environment.json | json 'j.airgap?.enforced ?? null' || echo '?')"
  if [ "$enforced" = true ]; then
    pass airgap_enforced "--network none: environment.json records airgap.enforced: true"
  else
    fail airgap_enforced "--network none: environment.json records airgap.enforced: $enforced (want true)"
  fi
}

check_graceful_stop() {
  local t0 t1 status
  t0="$(now_ms)"
  podman_ stop -t 10 "$(cname main)" >/dev/null
  t1="$(now_ms)"
  status="$(podman inspect --format '{{.State.ExitCode}}' "$(cname main)")"
  measure "stop time" "$(elapsed "$t0" "$t1") s"
  if { [ "$status" = 0 ] || [ "$status" = 143 ]; } && [ $((t1 - t0)) -lt 10000 ]; then
    pass graceful_stop "podman stop: exit $status after $(elapsed "$t0" "$t1") s"
  else
    fail graceful_stop "podman stop: exit $status after $(elapsed "$t0" "$t1") s (want 0 or 143, well within 10 s)"
  fi
}
