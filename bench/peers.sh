#!/usr/bin/env bash
# make bench-peers: Switchyard (native build) against other LLM gateways, same machine,
# same run, same workload as `make bench`: the 200-byte chat request of bench/post.lua,
# the same fixed-response upstream (an Envoy answering as OpenAI's chat completions),
# one worker / process each, p50 / p99 at 1 connection, req/s and CPU time per request
# (of the server's whole process tree) at 16 connections; interleaved rounds, medians.
#   bare               bare Envoy (the base; always runs)
#   switchyard-native  Switchyard, native build (bench/switchyard.yaml, model `chat`)
#   litellm            LiteLLM proxy (PyPI litellm[proxy]), model `chat` = openai/gpt-4o-mini
#                      at the upstream's api_base (bench/peers/litellm.yaml), 1 uvicorn worker
#   portkey            Portkey gateway (npm @portkey-ai/gateway), provider openai with the
#                      upstream as custom host (per-request headers, its documented way), Node
#   Neither peer authenticates clients (nor does Switchyard here).
# The peers are installed on first use, pinned, under .switchyard/peers/ (a venv and a
# node_modules; not part of `make setup`). `bench/peers.sh --install` only installs.
# Environment: BENCH_SECONDS (10), BENCH_ROUNDS (3), BENCH_ONLY="litellm" (a subset),
#   PYTHON (python3, >= 3.10) for the LiteLLM venv.
# Output: .switchyard/bench-peers/ (results.md is the table).
LITELLM_VERSION=1.108.7   # the newest whose [proxy] extra resolves on PyPI (2026-12-01)
PORTKEY_VERSION=1.15.2
OUT=.switchyard/bench-peers
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
PEERS=.switchyard/peers
PYTHON=${PYTHON:-python3}

# --- install (idempotent: only what is missing or at another version) ----------------
install_litellm() {
  local venv=$PEERS/litellm have
  have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)
  [ "$have" = "$LITELLM_VERSION" ] && [ -x "$venv/bin/litellm" ] && return 0
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    fail "LiteLLM needs Python >= 3.10 ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON"
  echo "bench: installing litellm[proxy]==$LITELLM_VERSION into $venv" >&2
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" >&2 ||
    fail "pip install litellm[proxy]==$LITELLM_VERSION failed"
}
install_portkey() {
  local dir=$PEERS/portkey have
  have=$(node -p "require('./$dir/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true)
  [ "$have" = "$PORTKEY_VERSION" ] && return 0
  command -v npm > /dev/null || fail "npm missing (Portkey's gateway is a Node package)"
  echo "bench: installing @portkey-ai/gateway@$PORTKEY_VERSION into $dir" >&2
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{ "private": true }' > "$dir/package.json"
  npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
    "@portkey-ai/gateway@$PORTKEY_VERSION" >&2 || fail "npm install @portkey-ai/gateway@$PORTKEY_VERSION failed"
}

ALL="bare switchyard-native litellm portkey"
read -ra PATTERNS <<< "${BENCH_ONLY:-$ALL}"
want() {
  [ "$1" = bare ] && return 0
  local p
  # shellcheck disable=SC2053 # a pattern on purpose
  for p in "${PATTERNS[@]}"; do [[ $1 == $p || $1 == *-"$p" ]] && return 0; done
  return 1
}
if [ "${1:-}" = --install ]; then install_litellm; install_portkey; exit 0; fi
start_run
want litellm && install_litellm
want portkey && install_portkey
SCENARIOS=()
for s in $ALL; do want "$s" && SCENARIOS+=("$s"); done
[ "${#SCENARIOS[@]}" -gt 1 ] || fail "BENCH_ONLY=${BENCH_ONLY:-} selects no scenario besides bare (ids: $ALL)"

# --- start ----------------------------------------------------------------------------
# upstream 18201 (admin 18291); bare 18202 (18292); LiteLLM 18206; Portkey 18207;
# Switchyard: GW_NATIVE (bench/lib.sh). The same ports as `make bench`: one at a time.
ports=(18201 18291 18202 18292)
want switchyard-native && ports+=("${GW_NATIVE[@]:0:5}")
want litellm && ports+=(18206)
want portkey && ports+=(18207)
require_free "${ports[@]}"

snap target/debug/switchyard
want switchyard-native && snap target/release/libswitchyard_native.so
envoy upstream bench/upstream.envoy.yaml 4301 18291
envoy bare bench/bare.envoy.yaml 4302 18292
scenario bare 18202 chat "$ENVOY_PID" "bare Envoy"
if want switchyard-native; then
  gateway gateway-native bench/switchyard.yaml native "$BIN/libswitchyard_native.so" "${GW_NATIVE[@]}"
  scenario switchyard-native "${GW_NATIVE[0]}" chat "$ENVOY_PID" "Switchyard, native, no failures"
fi
if want litellm; then
  # No network at start-up (bundled model cost map), no telemetry, logs at ERROR.
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_TELEMETRY=False \
    spawn litellm "$PEERS/litellm/bin/litellm" --config bench/peers/litellm.yaml \
      --host 127.0.0.1 --port 18206 --num_workers 1
  wait_up http://127.0.0.1:18206/health/liveliness litellm "$SPAWNED" 300
  scenario litellm 18206 chat "$SPAWNED" "LiteLLM proxy $LITELLM_VERSION (1 uvicorn worker)"
fi
if want portkey; then
  # bench/peers/loopback.mjs keeps its listener on 127.0.0.1; --headless: no UI.
  NODE_ENV=production spawn portkey node --import "$PWD/bench/peers/loopback.mjs" \
    "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" --port=18207 --headless
  wait_up http://127.0.0.1:18207/ portkey "$SPAWNED" 120
  EXTRA_HEADERS[portkey]="x-portkey-provider: openai
x-portkey-custom-host: http://127.0.0.1:18201/v1
authorization: Bearer bench"
  scenario portkey 18207 chat "$SPAWNED" "Portkey gateway $PORTKEY_VERSION (Node $(node --version), 1 process)"
fi

# --- sanity, then measure -------------------------------------------------------------
for s in "${SCENARIOS[@]}"; do check_200 "$s" "${URL[$s]}" "${MODEL[$s]}"; done
[[ " ${SCENARIOS[*]} " == *" switchyard-native "* ]] && expect_attempts switchyard-native 1
: > "$OUT/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
  echo "bench: round $r/$ROUNDS: ${SCENARIOS[*]}" >&2
  for s in "${SCENARIOS[@]}"; do
    measure "$s" "${URL[$s]}" "${MODEL[$s]}" "${PID[$s]}" >> "$OUT/rounds.txt"
  done
done
medians "${SCENARIOS[@]}" > "$OUT/results.txt"
for s in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$s" "${LABEL[$s]}"; done > "$OUT/labels.txt"
table "Switchyard and other gateways" | tee "$OUT/results.md"
