# shellcheck shell=bash disable=SC2034 # variables used by the scripts sourcing this file
# Shared by bench/run.sh (`make bench`) and bench/peers.sh (`make bench-peers`); sourced,
# not run. Every process is started in its own session (`spawn`) and its whole process
# group is stopped on exit, whatever the exit (error, Ctrl-C, end).
#
# Loopback ports are fixed, in 182xx (below Linux's ephemeral range, so the e2e tests'
# ephemeral ports never collide) and checked free before anything starts; Envoy base ids
# are 43xx. The caller sets OUT (its output directory) before sourcing, and calls
# start_run before starting anything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT before sourcing bench/lib.sh}"
BIN=$PWD/$OUT/bin
DUR=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
ENVOY=.venv/bin/envoy
CLK_TCK=$(getconf CLK_TCK)

fail() { echo "bench: $*" >&2; exit 1; }

# start_run: checks the tools and empties OUT (the last run's results and logs).
start_run() {
  [ -x "$ENVOY" ] || fail "$ENVOY missing: run make setup"
  command -v wrk > /dev/null || fail "wrk missing: run make setup"
  rm -rf "$OUT"
  mkdir -p "$BIN"
}

# --- processes ------------------------------------------------------------------------

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 -- "-$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# spawn NAME CMD...: runs CMD in a new session (its pid is its process group), output to
# $OUT/NAME.log; sets SPAWNED to the pid.
spawn() {
  local name=$1; shift
  setsid "$@" > "$OUT/$name.log" 2>&1 &
  SPAWNED=$!
  pids+=("$SPAWNED")
}

# CPU time (utime + stime, clock ticks) of every live process of session $1.
cpu_ticks() {
  local p
  for p in $(pgrep -s "$1"); do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}

# --- ports and readiness --------------------------------------------------------------

port_busy() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
require_free() {
  local p
  for p in "$@"; do
    ! port_busy "$p" || fail "127.0.0.1:$p is in use (another bench running? leftover process?)"
  done
}

# wait_up URL NAME PID [SECONDS]: until URL answers at all (any status); fails with
# NAME's log if it does not within SECONDS (60) or the process died.
wait_up() {
  local url=$1 name=$2 pid=$3 limit=${4:-60} start=$SECONDS
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    curl -s -m 2 -o /dev/null "$url" && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$OUT/$name.log" >&2; fail "$name exited"; }
    sleep 0.1
  done
  tail -n 30 "$OUT/$name.log" >&2
  fail "$name: $url not answering after $limit s"
}

# --- the request ----------------------------------------------------------------------

# The request body every scenario gets (bench/post.lua, model "chat").
BODY=$(sed -n "s/^wrk.body = '\(.*\)'\$/\1/p" bench/post.lua)
[ -n "$BODY" ] || fail "no wrk.body in bench/post.lua"
body_with_model() { printf '%s' "$BODY" | sed "s/\"model\":\"chat\"/\"model\":\"$1\"/"; }

# Extra request headers per scenario (peers that are configured by header), "k: v" lines.
declare -A EXTRA_HEADERS=()

# wrk_script ID MODEL: bench/post.lua with the model and ID's extra headers.
wrk_script() {
  local f="$OUT/post-$1.lua" k v
  sed "s/\"model\":\"chat\"/\"model\":\"$2\"/" bench/post.lua > "$f"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    k=${line%%: *}; v=${line#*: }
    printf 'wrk.headers["%s"] = [[%s]]\n' "$k" "$v" >> "$f"
  done <<< "${EXTRA_HEADERS[$1]:-}"
  echo "$f"
}

# post ID URL MODEL [curl args...]: sends the request once; keeps the response headers
# and body in $OUT/check-ID.{headers,body}, prints the status.
post() {
  local id=$1 url=$2 model=$3; shift 3
  local args=(-s -m 10 -D "$OUT/check-$id.headers" -o "$OUT/check-$id.body" -w '%{http_code}'
              -H 'content-type: application/json' --data-binary "$(body_with_model "$model")")
  local line
  while IFS= read -r line; do [ -n "$line" ] && args+=(-H "$line"); done <<< "${EXTRA_HEADERS[$id]:-}"
  curl "${args[@]}" "$@" "$url" || true
}

# check_200 ID URL MODEL: the scenario must answer 200 with a chat completion, or the run
# stops before measuring anything.
check_200() {
  local code; code=$(post "$1" "$2" "$3")
  if [ "$code" != 200 ] || ! grep -q '"choices"' "$OUT/check-$1.body"; then
    echo "--- $1: $2 answered ${code:-nothing}:" >&2
    head -c 2000 "$OUT/check-$1.body" >&2 2>/dev/null; echo >&2
    fail "scenario $1 does not answer 200 with a chat completion"
  fi
}

# --- servers --------------------------------------------------------------------------

# Gateways: listener, control plane's xDS, status and admin API (where it has one), Envoy's
# admin, Envoy's base id. "${GW_x[@]:0:5}" are its ports.
GW_WASM=(18203 18210 18211 18212 18293 4303)
GW_WASM_BREAKER=(18223 18220 18221 18222 18294 4304)
GW_NATIVE=(18243 18240 18241 18242 18298 4308)
GW_NATIVE_BREAKER=(18253 18250 18251 18252 18299 4309)
GW_WASM_PROFILE=(18233 18230 18231 18232 18296 4306)
GW_WASM_KEYED=(18273 18270 18271 18272 18286 4311)
GW_NATIVE_KEYED=(18283 18280 18281 18282 18287 4312)
GW_NATIVE_PROFILE=(18263 18260 18261 18262 18289 4310)

# snap FILE [NAME]: the run uses copies of the builds, so that a rebuild while it runs
# (other work on this machine) cannot swap a filter under one scenario and not another.
snap() { [ -f "$1" ] || fail "$1 missing: run make build"; cp "$1" "$BIN/${2:-$(basename "$1")}"; }

# Per scenario id: its URL, the model it asks for, the pid of the server under test
# (whose session's CPU time is measured), its label in the table.
declare -A PID=() URL=() MODEL=() LABEL=()
scenario() { # ID PORT MODEL PID LABEL
  URL[$1]=http://127.0.0.1:$2/v1/chat/completions; MODEL[$1]=$3; PID[$1]=$4; LABEL[$1]=$5
}

# envoy NAME CONFIG BASE_ID ADMIN_PORT: an Envoy with one worker, up and ready.
envoy() {
  spawn "$1" "$ENVOY" -c "$2" --concurrency 1 --base-id "$3"
  ENVOY_PID=$SPAWNED
  wait_up "http://127.0.0.1:$4/ready" "$1" "$ENVOY_PID"
}

# gateway NAME TEMPLATE BUILD FILTER_FILE PORT XDS STATUS CONTROL_ADMIN ADMIN BASE_ID: a
# control plane serving TEMPLATE (bench/switchyard*.yaml) with its listener on PORT and
# the filter build given, and its Envoy; waits until the listener (sent over xDS) answers.
gateway() {
  local name=$1 tpl=$2 build=$3 file=$4 port=$5 xds=$6 status=$7 control_admin=$8 admin=$9 base=${10}
  local filter listener="listener: { address: 127.0.0.1, port: $port }"
  case $build in
    wasm) filter="filter: { wasm: $file }" ;;
    native) filter="filter: { module: $file }" ;;
  esac
  sed -e "s|^listener:.*|$listener|" -e "s|^filter:.*|$filter|" "$tpl" > "$OUT/$name.yaml"
  grep -qxF "$listener" "$OUT/$name.yaml" && grep -qxF "$filter" "$OUT/$name.yaml" ||
    fail "$tpl: expected one-line listener: and filter: entries"
  # A control plane with state of its own (`--data-dir`, an admin API) gets its own.
  local help extra=()
  help=$("$BIN/switchyard" help 2>&1 || true)
  [[ $help == *--data-dir* ]] && extra+=(--data-dir "$OUT/$name-data")
  [[ $help == *--admin-addr* ]] && extra+=(--admin-addr "127.0.0.1:$control_admin")
  [[ $help == *--health-addr* ]] && extra+=(--health-addr "127.0.0.1:0")
  spawn "$name-control-plane" "$BIN/switchyard" serve --config "$OUT/$name.yaml" \
    --xds-addr "127.0.0.1:$xds" --status-addr "127.0.0.1:$status" "${extra[@]}"
  local cp=$SPAWNED
  "$BIN/switchyard" bootstrap --node "bench-$name" --xds "127.0.0.1:$xds" --admin "127.0.0.1:$admin" \
    > "$OUT/$name.bootstrap.yaml"
  envoy "$name" "$OUT/$name.bootstrap.yaml" "$base" "$admin"
  kill -0 "$cp" 2>/dev/null || { tail -n 30 "$OUT/$name-control-plane.log" >&2; fail "$name: control plane exited"; }
  wait_up "http://127.0.0.1:$port/" "$name" "$ENVOY_PID"
  # Provider credentials come with the first fleet exchange (until then: 503).
  local start=$SECONDS
  until curl -s "http://127.0.0.1:$admin/stats?filter=switchyard_credentials_ready" |
      grep -q 'switchyard_credentials_ready: 1'; do
    [ $((SECONDS - start)) -lt 30 ] || fail "$name: no provider credentials after 30 s"
    sleep 0.1
  done
}

# header_of ID NAME: header NAME of ID's last check (post).
header_of() { tr -d '\r' < "$OUT/check-$1.headers" | awk -F': ' -v h="$2" 'tolower($1)==h{print $2}'; }
# expect_attempts ID N: the last check of ID was answered by attempt N from `fast`.
expect_attempts() {
  local a p; a=$(header_of "$1" x-switchyard-attempts); p=$(header_of "$1" x-switchyard-provider)
  [ "$a" = "$2" ] && [ "$p" = fast ] ||
    fail "scenario $1: answered by attempt ${a:-?} of ${p:-?}, expected attempt $2 of fast"
}

# --- measuring ------------------------------------------------------------------------

to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000} }'; }

# measure ID URL MODEL PID: p50/p99 at 1 connection; req/s at 16 connections, and the CPU
# time of PID's session (the server under test, all its processes) per request served
# during that 16-connection run. Prints "ID p50_us p99_us req_s cpu_us_per_req".
measure() {
  local id=$1 url=$2 model=$3 pid=$4 script
  script=$(wrk_script "$id" "$model")
  wrk -t1 -c1 -d1s -s "$script" "$url" > /dev/null   # warm-up
  wrk -t1 -c1 -d"${DUR}s" --latency -s "$script" "$url" > "$OUT/$id-c1.txt"
  local t0 t1
  t0=$(cpu_ticks "$pid")
  wrk -t2 -c16 -d"${DUR}s" -s "$script" "$url" > "$OUT/$id-c16.txt"
  t1=$(cpu_ticks "$pid")
  local p50 p99 rps reqs non2xx errors
  p50=$(awk '$1=="50%"{print $2}' "$OUT/$id-c1.txt" | to_us)
  p99=$(awk '$1=="99%"{print $2}' "$OUT/$id-c1.txt" | to_us)
  rps=$(awk '/^Requests\/sec/{print $2}' "$OUT/$id-c16.txt")
  reqs=$(awk '/requests in/{print $1}' "$OUT/$id-c16.txt")
  non2xx=$(cat "$OUT/$id-c1.txt" "$OUT/$id-c16.txt" | awk '/Non-2xx/{s+=$NF} END{print s+0}')
  errors=$(cat "$OUT/$id-c1.txt" "$OUT/$id-c16.txt" | awk '/Socket errors/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}')
  [ -n "$p50" ] && [ -n "$p99" ] && [ -n "$rps" ] && [ "${reqs:-0}" -gt 0 ] ||
    { cat "$OUT/$id-c1.txt" "$OUT/$id-c16.txt" >&2; fail "$id: no wrk figures"; }
  [ "$non2xx" = 0 ] || fail "$id had $non2xx non-2xx responses (see $OUT/$id-c*.txt)"
  [ "$errors" = 0 ] || echo "bench: warning: $id had $errors socket errors (see $OUT/$id-c*.txt)" >&2
  echo "$id $p50 $p99 $rps $(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}')"
}

median() { sort -n | awk '{v[NR]=$1} END {if (NR) print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# medians IDS...: from $OUT/rounds.txt, one line per ID: "ID p50 p99 rps cpu" (medians).
medians() {
  local s c
  for s in "$@"; do
    grep -q "^$s " "$OUT/rounds.txt" || continue
    printf '%s' "$s"
    for c in 2 3 4 5; do printf ' %s' "$(awk -v s="$s" -v c=$c '$1==s{print $c}' "$OUT/rounds.txt" | median)"; done
    echo
  done
}

# table TITLE [targets]: renders $OUT/results.txt (first row: the base, bare Envoy) with
# the labels in $OUT/labels.txt ("ID<TAB>label") as a Markdown table; with `targets`,
# the targets of bench/run.sh's rows evaluated (pass/miss) where the rows they refer to
# were measured.
table() {
  awk -v title="$1" -v with_targets="${2:-}" -v rounds="$ROUNDS" -v dur="$DUR" -v when="$(date -u +%Y-%m-%d)" \
      -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v cores="$(nproc)" '
    FNR == NR { split($0, kv, "\t"); label[kv[1]] = kv[2]; next }
    { n++; id[n] = $1; p50[$1] = r0($2); p99[$1] = r0($3); rps[$1] = $4; cpu[$1] = $5 }
    # Microseconds, or milliseconds from 10 ms on.
    function us(v) { return (v >= 10000 || v <= -10000) ? sprintf("%.1f ms", v / 1000) : sprintf("%.0f µs", v) }
    function added(a, b) { return (a >= b ? "+" : "") us(a - b) }
    # Targets are checked on the figures as shown (whole µs, whole %).
    function r0(v) { return sprintf("%.0f", v) + 0 }
    function verdict(ok) { if (ok) { pass++; return "pass" } miss++; return "**miss**" }
    # Fail-over / open circuit: added p50 over the same build without failures.
    function over(row, ref, limit, what,   d) {
      if (!(ref in p50)) return what " (needs " ref ")"
      d = r0(p50[row] - p50[ref])
      return sprintf("%s: %+.0f µs %s", what, d, verdict(d <= limit))
    }
    function targets(r,   b, t) {
      b = id[1]
      if (r == "switchyard-native")
        return sprintf("added p50 ≤ 50 µs: %s; added p99 ≤ 300 µs: %s; ≥ 80 %% of bare: %s",
          verdict(r0(p50[r] - p50[b]) <= 50), verdict(r0(p99[r] - p99[b]) <= 300), verdict(r0(100 * rps[r] / rps[b]) >= 80))
      if (r == "switchyard-wasm") {
        if (!("floor-wasm" in rps)) return "≥ 85 % of floor-wasm (needs floor-wasm)"
        t = r0(100 * rps[r] / rps["floor-wasm"])
        return sprintf("≥ 85 %% of floor-wasm req/s: %.0f %% %s", t, verdict(t >= 85))
      }
      if (r ~ /^failover-/) { sub(/^failover-/, "", r); return over("failover-" r, "switchyard-" r, 2000, "fail-over ≤ 2 ms over no failures") }
      if (r ~ /^open-circuit-/) { sub(/^open-circuit-/, "", r); return over("open-circuit-" r, "switchyard-" r, 100, "open circuit ≤ 0.1 ms over no failures") }
      return ""
    }
    END {
      for (i = 1; i <= n; i++) { tg[i] = with_targets ? targets(id[i]) : ""; if (tg[i] != "") any = 1 }
      printf "%s (median of %s rounds, %s s per measurement, 1 worker each, %s, %s cores, load %s at the end)\n\n", title, rounds, dur, when, cores, load
      printf "| scenario | p50 @1 conn | p99 @1 conn | added p50 | added p99 | req/s @16 conns | vs bare | CPU µs/req @16 conns |%s\n", any ? " targets |" : ""
      printf "|---|---|---|---|---|---|---|---|%s\n", any ? "---|" : ""
      for (i = 1; i <= n; i++) {
        r = id[i]
        printf "| %s | %s | %s | %s | %s | %.0f | %.0f %% | %.0f |", (r in label) ? label[r] : r, us(p50[r]), us(p99[r]),
          i == 1 ? "" : added(p50[r], p50[id[1]]), i == 1 ? "" : added(p99[r], p99[id[1]]), rps[r], 100 * rps[r] / rps[id[1]], cpu[r]
        if (any) printf " %s |", tg[i]
        printf "\n"
      }
      if (pass + miss) printf "\nTargets: %d pass, %d miss.\n", pass, miss
    }' "$OUT/labels.txt" "$OUT/results.txt"
}
