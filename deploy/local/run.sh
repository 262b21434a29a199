#!/usr/bin/env bash
# Runs Switchyard on this machine: the control plane on the built-in config, one
# Envoy, and - when no provider key (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, AWS_BEARER_TOKEN_BEDROCK) is set - two local
# mock providers (an OpenAI-dialect primary failing ~30% of requests with 503, and
# an Anthropic-dialect fallback).
#
#   deploy/local/run.sh           run until Ctrl-C
#   deploy/local/run.sh --check   start, send a few requests, report, stop
#   SWITCHYARD_CONFIG=file.yaml deploy/local/run.sh   use your own config
#
# Ports: gateway 8080, Envoy admin 9901, xDS 18000, control-plane status 18001,
# admin API 18002, mocks 18101/18102. Keys, the audit log and the admin token are
# kept in .switchyard/data (SWITCHYARD_DATA); the demo's key in its demo-key file.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=.switchyard/run
DATA=${SWITCHYARD_DATA:-.switchyard/data}
BIN=target/debug
mkdir -p "$RUN"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # url, what
  for _ in $(seq 1 150); do
    curl -fs -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "run: $2 did not come up; logs in $RUN/" >&2
  tail -n 30 "$RUN"/*.log >&2 || true
  exit 1
}

if [ -z "${SWITCHYARD_CONFIG:-}" ] && [ -z "${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${GEMINI_API_KEY:-}${AWS_BEARER_TOKEN_BEDROCK:-}" ]; then
  echo "run: no provider keys in the environment: starting two mock providers"
  "$BIN/mock-provider" --name mock-openai --dialect openai --addr 127.0.0.1:18101 \
    --api-key mock-openai-key --fail-rate 0.3 --fail-status 503 > "$RUN/mock-openai.log" 2>&1 &
  pids+=($!)
  "$BIN/mock-provider" --name mock-anthropic --dialect anthropic --addr 127.0.0.1:18102 \
    --api-key mock-anthropic-key > "$RUN/mock-anthropic.log" 2>&1 &
  pids+=($!)
fi

CONFIG_ARGS=()
[ -n "${SWITCHYARD_CONFIG:-}" ] && CONFIG_ARGS=(--config "$SWITCHYARD_CONFIG")
"$BIN/switchyard" serve "${CONFIG_ARGS[@]}" --xds-addr 127.0.0.1:18000 --status-addr 127.0.0.1:18001 \
  --admin-addr 127.0.0.1:18002 --data-dir "$DATA" > "$RUN/switchyard.log" 2>&1 &
pids+=($!)
"$BIN/switchyard" bootstrap "${CONFIG_ARGS[@]}" --node local-envoy --xds 127.0.0.1:18000 --admin 127.0.0.1:9901 > "$RUN/bootstrap.yaml"
.venv/bin/envoy -c "$RUN/bootstrap.yaml" --base-id 4171 --concurrency 2 > "$RUN/envoy.log" 2>&1 &
pids+=($!)

wait_for_code() { # url, what, codes (regex)
  for _ in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)
    [[ "$code" =~ ^($3)$ ]] && return 0
    sleep 0.2
  done
  echo "run: $2 did not come up; logs in $RUN/" >&2
  tail -n 30 "$RUN"/*.log >&2 || true
  exit 1
}

wait_for http://127.0.0.1:9901/ready "Envoy"
# 401 once keys exist: the listener is up either way.
wait_for_code http://127.0.0.1:8080/v1/models "the gateway listener" "200|401"

# The demo's virtual key: created on the first run (shown once by the CLI, kept
# in $DATA/demo-key for the next runs). With a key, the gateway requires one.
KEYS=("$BIN/switchyard" keys --admin-addr 127.0.0.1:18002 --data-dir "$DATA")
if [ ! -s "$DATA/demo-key" ]; then
  out=$("${KEYS[@]}" create --name demo --owner "$(whoami)" --direct --rpm 600 --budget-day 5)
  key=$(echo "$out" | grep -o 'sk-sy-[A-Za-z0-9_-]*' | head -n 1)
  [ -n "$key" ] || { echo "run: could not create the demo key: $out" >&2; exit 1; }
  (umask 077; echo "$key" > "$DATA/demo-key")
fi
KEY=$(cat "$DATA/demo-key")
# In force once a request without it is refused and one with it is served (the
# first key turns authentication on: a listener update, then the key table).
for _ in $(seq 1 50); do
  anon=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/models || true)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $KEY" http://127.0.0.1:8080/v1/models || true)
  [ "$anon" = 401 ] && [ "$code" = 200 ] && break
  sleep 0.2
done

cat <<MSG

Switchyard is up: OpenAI-compatible API on http://127.0.0.1:8080/v1 (model "chat").

  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -H "authorization: Bearer $KEY" \\
    -d '{"model":"chat","messages":[{"role":"user","content":"Hello"}]}' -D - 

  (x-switchyard-provider / -attempts headers show who answered and after how many tries)
  OpenAI SDK: OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="$KEY")
  Keys: target/debug/switchyard keys list --data-dir $DATA   (create, update, revoke: keys help)
  Where to look:
    Envoy stats (Prometheus): http://127.0.0.1:9901/stats/prometheus   (names: docs/metrics.md)
    Fleet view:  target/debug/switchyard status   (targets, circuits, fail-over rates)
    Drill:       target/debug/switchyard drill help   (a real fail-over test against this gateway)
    Dashboard:   import deploy/observability/switchyard-dashboard.json in Grafana; alerts: deploy/observability/
    Logs:        .switchyard/run/   (decision log per request: decision_log: in the config, docs/observability.md)
MSG

if [ "$CHECK" = 1 ]; then
  ok=0; failover=0
  for i in $(seq 1 20); do
    h=$(curl -s -D - -o "$RUN/last.json" http://127.0.0.1:8080/v1/chat/completions \
      -H 'content-type: application/json' -H "authorization: Bearer $KEY" \
      -d '{"model":"chat","stream":'"$([ $((i % 2)) = 0 ] && echo true || echo false)"',"messages":[{"role":"user","content":"Hello"}]}')
    if echo "$h" | grep -q '^HTTP/1.1 200'; then ok=$((ok + 1)); else
      echo "check: request $i: $(echo "$h" | head -n 1) $(head -c 300 "$RUN/last.json")" >&2; fi
    echo "$h" | grep -qi '^x-switchyard-attempts: 2' && failover=$((failover + 1))
  done
  echo "check: $ok/20 requests answered with 200, $failover after fail-over"
  [ "$ok" = 20 ] || { echo "check failed; logs in $RUN/" >&2; exit 1; }
  anon=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/chat/completions \
    -H 'content-type: application/json' -d '{"model":"chat","messages":[{"role":"user","content":"Hello"}]}')
  echo "check: a request without the key got $anon"
  [ "$anon" = 401 ] || { echo "check failed: the gateway is open; logs in $RUN/" >&2; exit 1; }
  exit 0
fi
echo "Ctrl-C stops everything."
wait
