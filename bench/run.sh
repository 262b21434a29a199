#!/usr/bin/env bash
# make bench: bare Envoy vs Switchyard, same machine, same run, one Envoy worker each.
#   - latency: wrk, 1 connection, p50 / p99
#   - throughput: wrk, 16 connections, requests/s
# Scenarios: bare Envoy proxy; the floor (bare Envoy plus two proxy-wasm filters
# that do nothing, where the planner and adapter sit); Switchyard (no failures);
# Switchyard with the primary refusing connections (fail-over on every request);
# Switchyard with the primary's circuit open.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
# BENCH_ONLY="floor switchyard" runs a subset (bare always runs: it is the base).
ONLY=${BENCH_ONLY:-bare floor switchyard failover open-circuit}
want() { [ "$1" = bare ] || [[ " $ONLY " == *" $1 "* ]]; }
OUT=.switchyard/bench
mkdir -p "$OUT"
ENVOY=.venv/bin/envoy
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

up() { for _ in $(seq 1 100); do curl -fs -m 2 -o /dev/null "$1" && return 0; sleep 0.1; done; echo "bench: $1 not up" >&2; tail -n 20 "$OUT"/*.log >&2; exit 1; }

$ENVOY -c bench/upstream.envoy.yaml --concurrency 1 --base-id 4301 > "$OUT/upstream.log" 2>&1 & pids+=($!)
$ENVOY -c bench/bare.envoy.yaml --concurrency 1 --base-id 4302 > "$OUT/bare.log" 2>&1 & pids+=($!)
bash deploy/local/build-wasm.sh switchyard-bench-noop >&2
$ENVOY -c bench/floor.envoy.yaml --concurrency 1 --base-id 4305 > "$OUT/floor.log" 2>&1 & pids+=($!)
target/debug/switchyard serve --config bench/switchyard.yaml --xds-addr 127.0.0.1:18210 --status-addr 127.0.0.1:18211 > "$OUT/switchyard.log" 2>&1 & pids+=($!)
target/debug/switchyard bootstrap --node bench --xds 127.0.0.1:18210 --admin 127.0.0.1:18293 > "$OUT/bootstrap.yaml"
$ENVOY -c "$OUT/bootstrap.yaml" --concurrency 1 --base-id 4303 > "$OUT/gateway.log" 2>&1 & pids+=($!)
target/debug/switchyard serve --config bench/switchyard-breaker.yaml --xds-addr 127.0.0.1:18220 --status-addr 127.0.0.1:18221 > "$OUT/switchyard-breaker.log" 2>&1 & pids+=($!)
target/debug/switchyard bootstrap --node bench-breaker --xds 127.0.0.1:18220 --admin 127.0.0.1:18294 > "$OUT/bootstrap-breaker.yaml"
$ENVOY -c "$OUT/bootstrap-breaker.yaml" --concurrency 1 --base-id 4304 > "$OUT/gateway-breaker.log" 2>&1 & pids+=($!)
up http://127.0.0.1:18291/ready; up http://127.0.0.1:18292/ready; up http://127.0.0.1:18293/ready; up http://127.0.0.1:18295/ready
# The gateway's listener arrives over xDS after Envoy is ready: wait for it to answer.
for _ in $(seq 1 100); do
  curl -s -m 2 -o /dev/null http://127.0.0.1:18203/ 2>/dev/null && curl -s -m 2 -o /dev/null http://127.0.0.1:18223/ 2>/dev/null && break
  sleep 0.1
done

body_for() { sed "s/\"model\":\"chat\"/\"model\":\"$1\"/" bench/post.lua > "$OUT/post-$1.lua"; echo "$OUT/post-$1.lua"; }
# Sanity: each scenario answers 200 from the upstream.
for m in chat failover; do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:18203/v1/chat/completions -H 'content-type: application/json' -d "{\"model\":\"$m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}")
  [ "$code" = 200 ] || { echo "bench: scenario $m answered $code" >&2; exit 1; }
done
# Open the breaker gateway's circuit for `down` (3 failures), and check it is open:
# the answer must come from the first attempt.
if want open-circuit; then
for _ in 1 2 3 4 5; do
  curl -s -m 5 -o /dev/null http://127.0.0.1:18223/v1/chat/completions -H 'content-type: application/json' -d '{"model":"open","messages":[{"role":"user","content":"x"}]}'
done
attempts=$(curl -s -m 5 -D - -o /dev/null http://127.0.0.1:18223/v1/chat/completions -H 'content-type: application/json' -d '{"model":"open","messages":[{"role":"user","content":"x"}]}' | tr -d '\r' | awk -F': ' 'tolower($1)=="x-switchyard-attempts"{print $2}')
[ "$attempts" = 1 ] || { echo "bench: the open-circuit scenario still made $attempts attempts" >&2; exit 1; }
fi

to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000} }'; }
measure() { # name url model
  local script; script=$(body_for "$3")
  wrk -t1 -c1 -d1s -s "$script" "$2" > /dev/null   # warm-up
  wrk -t1 -c1 -d"${DUR}s" --latency -s "$script" "$2" > "$OUT/$1-c1.txt"
  wrk -t2 -c16 -d"${DUR}s" -s "$script" "$2" > "$OUT/$1-c16.txt"
  local p50 p99 rps non2xx
  p50=$(awk '$1=="50%"{print $2}' "$OUT/$1-c1.txt" | to_us)
  p99=$(awk '$1=="99%"{print $2}' "$OUT/$1-c1.txt" | to_us)
  rps=$(awk '/^Requests\/sec/{print $2}' "$OUT/$1-c16.txt")
  non2xx=$(cat "$OUT/$1-c1.txt" "$OUT/$1-c16.txt" | awk '/Non-2xx/{s+=$NF} END{print s+0}')
  [ "$non2xx" = 0 ] || { echo "bench: $1 had $non2xx non-2xx responses" >&2; exit 1; }
  echo "$1 $p50 $p99 $rps"
}

# Rounds interleave the scenarios so that drift on a shared machine hits all of
# them alike; each figure reported is the median over the rounds.
: > "$OUT/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
  echo "bench: round $r/$ROUNDS" >&2
  while read -r name port model; do
    if want "$name"; then measure "$name" "http://127.0.0.1:$port/v1/chat/completions" "$model" < /dev/null; fi
  done >> "$OUT/rounds.txt" <<'SCENARIOS'
bare 18202 chat
floor 18204 chat
switchyard 18203 chat
failover 18203 failover
open-circuit 18223 open
SCENARIOS
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
for s in bare floor switchyard failover open-circuit; do
  want "$s" || continue
  echo "$s $(awk -v s=$s '$1==s{print $2}' "$OUT/rounds.txt" | median) $(awk -v s=$s '$1==s{print $3}' "$OUT/rounds.txt" | median) $(awk -v s=$s '$1==s{print $4}' "$OUT/rounds.txt" | median)"
done > "$OUT/results.txt"

awk -v dur="$DUR" -v rounds="$ROUNDS" '
  NR==1 { b50=$2; b99=$3; brps=$4 }
  { name[NR]=$1; p50[NR]=$2; p99[NR]=$3; rps[NR]=$4 }
  END {
    printf "Switchyard benchmark (median of %s rounds, %ss per measurement, 1 Envoy worker each, %s)\n\n", rounds, dur, strftime("%Y-%m-%d")
    printf "| scenario | p50 @1 conn | p99 @1 conn | added p50 | added p99 | req/s @16 conns | vs bare |\n"
    printf "|---|---|---|---|---|---|---|\n"
    for (i = 1; i <= NR; i++)
      printf "| %s | %.0f us | %.0f us | %+.0f us | %+.0f us | %.0f | %.0f %% |\n", name[i], p50[i], p99[i], p50[i]-b50, p99[i]-b99, rps[i], 100*rps[i]/brps
  }' "$OUT/results.txt" | tee "$OUT/results.md"

# BENCH_PROFILE=1: where a request's time goes inside the filter. A third gateway
# runs the filter built with the `profile` feature (filter/src/profile.rs) under
# 16 connections; its log reports each callback's average wall time per request,
# host calls included.
if [ "${BENCH_PROFILE:-0}" = 1 ]; then
  bash deploy/local/build-wasm.sh switchyard-wasm profile >&2
  sed -e "s|port: 18203|port: 18233|" \
      -e "s|wasm: ../target/wasm32-wasip1/wasm-release/switchyard_filter.wasm|wasm: $PWD/target/wasm32-wasip1/wasm-release/switchyard_filter-profile.wasm|" \
      bench/switchyard.yaml > "$OUT/switchyard-profile.yaml"
  target/debug/switchyard serve --config "$OUT/switchyard-profile.yaml" --xds-addr 127.0.0.1:18230 --status-addr 127.0.0.1:18231 > "$OUT/switchyard-profile.log" 2>&1 & pids+=($!)
  target/debug/switchyard bootstrap --node bench-profile --xds 127.0.0.1:18230 --admin 127.0.0.1:18296 > "$OUT/bootstrap-profile.yaml"
  $ENVOY -c "$OUT/bootstrap-profile.yaml" --concurrency 1 --base-id 4306 > "$OUT/gateway-profile.log" 2>&1 & pids+=($!)
  up http://127.0.0.1:18296/ready
  for _ in $(seq 1 100); do curl -s -m 2 -o /dev/null http://127.0.0.1:18233/ 2>/dev/null && break; sleep 0.1; done
  wrk -t2 -c16 -d"${DUR}s" -s "$(body_for chat)" http://127.0.0.1:18233/v1/chat/completions > "$OUT/profile-c16.txt"
  echo
  echo "Filter profile (switchyard scenario, 16 connections, average microseconds per request):"
  grep -o 'switchyard profile.*' "$OUT/gateway-profile.log" | tail -n 1 | tee "$OUT/profile.txt"
fi
