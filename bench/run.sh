#!/usr/bin/env bash
# make bench: Switchyard's two builds against bare Envoy and their floors, same machine,
# same run, same fixed-response upstream, one Envoy worker each.
#   - latency: wrk, 1 connection, p50 / p99
#   - throughput: wrk, 16 connections, requests/s, and the Envoy's CPU time per request
# Scenarios (ids for BENCH_ONLY):
#   bare                  bare Envoy proxying to the upstream (the base; always runs)
#   floor-wasm            + two do-nothing proxy-wasm filters where planner and adapter sit
#   floor-native          + the native module's `noop` filter in the same two places
#   floor-native-work     + the same two filters making Envoy do Switchyard's per-request
#                         work (hold and buffer both bodies, read them, put the request body
#                         back, set headers, clear the route cache) with no logic between
#   switchyard-wasm       Switchyard, proxy-wasm build, no failures
#   switchyard-native     Switchyard, native build, no failures
#   failover-{wasm,native}      primary refusing connections: fail-over on every request
#   open-circuit-{wasm,native}  primary's circuit open (a gateway with circuit breakers)
#   keyed-{wasm,native}   no failures, every request authenticated with a virtual key
#                         (governance on: the cost of auth on the hot path)
# Environment:
#   BENCH_SECONDS (10), BENCH_ROUNDS (3): per measurement; scenarios are interleaved in
#     every round and medians reported.
#   BENCH_ONLY="floor-native switchyard-native": a subset; a word also selects its
#     variants (`failover` = failover-wasm failover-native; `native` = every *-native)
#     and may be a glob (`*-wasm`).
#   BENCH_PROFILE=1: also the time spent in each filter callback, for each build selected
#     (the build's cargo feature `profile`; see the end of this file).
# Output: .switchyard/bench/ (results.md is the table, logs and wrk outputs beside it).
OUT=.switchyard/bench
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
start_run

ALL="bare floor-wasm floor-native floor-native-work switchyard-wasm switchyard-native failover-wasm failover-native open-circuit-wasm open-circuit-native keyed-wasm keyed-native"
read -ra PATTERNS <<< "${BENCH_ONLY:-$ALL}"
want() {
  [ "$1" = bare ] && return 0
  local p
  for p in "${PATTERNS[@]}"; do
    # shellcheck disable=SC2053 # a pattern on purpose
    [[ $1 == $p || $1 == "$p"-wasm || $1 == "$p"-native || $1 == *-"$p" ]] && return 0
  done
  return 1
}
want_any() { local s; for s in "$@"; do want "$s" && return 0; done; return 1; }
SCENARIOS=()
for s in $ALL; do want "$s" && SCENARIOS+=("$s"); done
[ "${#SCENARIOS[@]}" -gt 1 ] || fail "BENCH_ONLY=${BENCH_ONLY:-} selects no scenario besides bare (ids: $ALL)"
WASM_GW=$(want_any switchyard-wasm failover-wasm && echo 1 || true)
NATIVE_GW=$(want_any switchyard-native failover-native && echo 1 || true)
PROFILE=${BENCH_PROFILE:-0}

# --- the builds, snapshotted -----------------------------------------------------------
WASM_FILTER=target/wasm32-wasip1/wasm-release/switchyard_filter.wasm
NATIVE_MODULE=target/release/libswitchyard_native.so
snap target/debug/switchyard
want_any floor-native floor-native-work switchyard-native failover-native open-circuit-native keyed-native && snap "$NATIVE_MODULE"
want_any switchyard-wasm failover-wasm open-circuit-wasm keyed-wasm && snap "$WASM_FILTER"
if want floor-wasm; then
  bash deploy/local/build-wasm.sh switchyard-bench-noop >&2
  snap target/wasm32-wasip1/wasm-release/switchyard_bench_noop.wasm
fi

# --- ports -----------------------------------------------------------------------------
# upstream 18201 (admin 18291); bare 18202 (18292); floor-wasm 18204 (18295);
# floor-native 18205 (18297); floor-native-work 18208 (18285); 18209 must refuse connections (the failing primary);
# gateways: bench/lib.sh.
ports=(18201 18291 18202 18292 18209)
want floor-wasm && ports+=(18204 18295)
want floor-native && ports+=(18205 18297)
want floor-native-work && ports+=(18208 18285)
[ -n "$WASM_GW" ] && ports+=("${GW_WASM[@]:0:5}")
[ -n "$NATIVE_GW" ] && ports+=("${GW_NATIVE[@]:0:5}")
want open-circuit-wasm && ports+=("${GW_WASM_BREAKER[@]:0:5}")
want open-circuit-native && ports+=("${GW_NATIVE_BREAKER[@]:0:5}")
want keyed-wasm && ports+=("${GW_WASM_KEYED[@]:0:5}")
want keyed-native && ports+=("${GW_NATIVE_KEYED[@]:0:5}")
require_free "${ports[@]}"

# --- start -----------------------------------------------------------------------------
envoy upstream bench/upstream.envoy.yaml 4301 18291
envoy bare bench/bare.envoy.yaml 4302 18292
scenario bare 18202 chat "$ENVOY_PID" "bare Envoy"
if want floor-wasm; then
  sed "s|filename: target/wasm32-wasip1/wasm-release/switchyard_bench_noop.wasm|filename: $BIN/switchyard_bench_noop.wasm|" \
    bench/floor.envoy.yaml > "$OUT/floor-wasm.envoy.yaml"
  envoy floor-wasm "$OUT/floor-wasm.envoy.yaml" 4305 18295
  scenario floor-wasm 18204 chat "$ENVOY_PID" "floor, proxy-wasm: two do-nothing filters"
fi
if want floor-native; then
  sed "s|filename: target/release/libswitchyard_native.so|filename: $BIN/libswitchyard_native.so|" \
    bench/floor-native.envoy.yaml > "$OUT/floor-native.envoy.yaml"
  envoy floor-native "$OUT/floor-native.envoy.yaml" 4307 18297
  scenario floor-native 18205 chat "$ENVOY_PID" "floor, native: the module's noop filter, twice"
fi
if want floor-native-work; then
  sed "s|filename: target/release/libswitchyard_native.so|filename: $BIN/libswitchyard_native.so|" \
    bench/floor-native-work.envoy.yaml > "$OUT/floor-native-work.envoy.yaml"
  envoy floor-native-work "$OUT/floor-native-work.envoy.yaml" 4313 18285
  scenario floor-native-work 18208 chat "$ENVOY_PID" "floor, native, with Switchyard's Envoy work (no logic)"
fi
for build in wasm native; do
  if [ "$build" = wasm ]; then file=$BIN/switchyard_filter.wasm; gw=("${GW_WASM[@]}"); br=("${GW_WASM_BREAKER[@]}"); on=$WASM_GW
  else file=$BIN/libswitchyard_native.so; gw=("${GW_NATIVE[@]}"); br=("${GW_NATIVE_BREAKER[@]}"); on=$NATIVE_GW; fi
  if [ -n "$on" ]; then
    gateway "gateway-$build" bench/switchyard.yaml "$build" "$file" "${gw[@]}"
    scenario "switchyard-$build" "${gw[0]}" chat "$ENVOY_PID" "Switchyard, $build, no failures"
    scenario "failover-$build" "${gw[0]}" failover "$ENVOY_PID" \
      "Switchyard, $build, primary refusing connections (fail-over every request)"
  fi
  if want "open-circuit-$build"; then
    gateway "gateway-$build-breaker" bench/switchyard-breaker.yaml "$build" "$file" "${br[@]}"
    scenario "open-circuit-$build" "${br[0]}" open "$ENVOY_PID" \
      "Switchyard, $build, primary's circuit open (gateway with breakers)"
  fi
  if want "keyed-$build"; then
    # A key declared by its SHA-256 (governance on), sent with every request.
    read -r key sha < <("$BIN/switchyard" keys generate | awk '/^key:/{k=$2} /^sha256:/{s=$2} END{print k, s}')
    [ -n "$sha" ] || fail "switchyard keys generate printed no key"
    { cat bench/switchyard.yaml
      printf 'governance:\n  keys:\n    - { id: key_bench, name: bench, sha256: %s }\n' "$sha"; } > "$OUT/switchyard-keyed.yaml"
    EXTRA_HEADERS[keyed-$build]="authorization: Bearer $key"
    if [ "$build" = wasm ]; then kg=("${GW_WASM_KEYED[@]}"); else kg=("${GW_NATIVE_KEYED[@]}"); fi
    gateway "gateway-$build-keyed" "$OUT/switchyard-keyed.yaml" "$build" "$file" "${kg[@]}"
    scenario "keyed-$build" "${kg[0]}" chat "$ENVOY_PID" "Switchyard, $build, no failures, virtual key"
  fi
done

# --- sanity, before measuring ----------------------------------------------------------
for s in "${SCENARIOS[@]}"; do
  case $s in
    open-circuit-*)
      # Open the circuit of `down` (20 failures, bench/switchyard-breaker.yaml); it
      # stays open for an hour, longer than any run.
      for _ in $(seq 1 25); do post "$s" "${URL[$s]}" "${MODEL[$s]}" > /dev/null; done ;;
  esac
  check_200 "$s" "${URL[$s]}" "${MODEL[$s]}"
  case $s in
    switchyard-*|open-circuit-*|keyed-*) expect_attempts "$s" 1 ;;
    failover-*) expect_attempts "$s" 2 ;;
  esac
done

# --- measure ---------------------------------------------------------------------------
# Rounds interleave the scenarios so that drift on a shared machine hits all of them
# alike; each figure reported is the median over the rounds.
: > "$OUT/rounds.txt"
for r in $(seq 1 "$ROUNDS"); do
  echo "bench: round $r/$ROUNDS: ${SCENARIOS[*]}" >&2
  for s in "${SCENARIOS[@]}"; do
    measure "$s" "${URL[$s]}" "${MODEL[$s]}" "${PID[$s]}" >> "$OUT/rounds.txt"
    if [[ $s == open-circuit-* ]]; then   # still open all along?
      check_200 "$s" "${URL[$s]}" "${MODEL[$s]}"; expect_attempts "$s" 1
    fi
  done
done
medians "${SCENARIOS[@]}" > "$OUT/results.txt"
for s in "${SCENARIOS[@]}"; do printf '%s\t%s\n' "$s" "${LABEL[$s]}"; done > "$OUT/labels.txt"
table "Switchyard benchmark" targets | tee "$OUT/results.md"

# --- BENCH_PROFILE=1 -------------------------------------------------------------------
# Where a request's time goes inside the filter: a gateway per selected build runs the
# filter built with the cargo feature `profile` (switchyard_filter::profile) under 16
# connections; its log reports each callback's average wall time per request (host calls
# included) every 20 000 requests.
[ "$PROFILE" = 1 ] || exit 0
profile() { # BUILD FILE
  local build=$1 file=$2 gw
  if [ "$build" = wasm ]; then gw=("${GW_WASM_PROFILE[@]}"); else gw=("${GW_NATIVE_PROFILE[@]}"); fi
  require_free "${gw[@]:0:5}"
  gateway "profile-$build" bench/switchyard.yaml "$build" "$file" "${gw[@]}"
  check_200 "profile-$build" "http://127.0.0.1:${gw[0]}/v1/chat/completions" chat
  local script line=""; script=$(wrk_script "profile-$build" chat)
  for _ in 1 2 3 4 5 6; do   # until a report (20 000 requests) is out
    wrk -t2 -c16 -d"${DUR}s" -s "$script" "http://127.0.0.1:${gw[0]}/v1/chat/completions" > "$OUT/profile-$build-c16.txt"
    line=$(grep -o 'switchyard profile.*' "$OUT/profile-$build.log" | tail -n 1 || true)
    [ -n "$line" ] && break
  done
  [ -n "$line" ] || fail "profile-$build: no profile report in $OUT/profile-$build.log"
  echo
  echo "Filter profile, $build build (no failures, 16 connections, µs per request):"
  echo "$line" | tee "$OUT/profile-$build.txt"
}
if want switchyard-wasm; then
  bash deploy/local/build-wasm.sh switchyard-wasm profile >&2
  snap target/wasm32-wasip1/wasm-release/switchyard_filter-profile.wasm
  profile wasm "$BIN/switchyard_filter-profile.wasm"
fi
if want switchyard-native; then
  if cargo metadata --no-deps --format-version 1 |
      jq -e '.packages[] | select(.name == "switchyard-native") | .features | has("profile")' > /dev/null; then
    CARGO_TARGET_DIR=target/profile-native cargo build --quiet --release -p switchyard-native --features profile >&2
    snap target/profile-native/release/libswitchyard_native.so libswitchyard_native-profile.so
    profile native "$BIN/libswitchyard_native-profile.so"
  else
    echo
    echo "Filter profile, native build: skipped: switchyard-native has no cargo feature \`profile\` yet." >&2
  fi
fi
