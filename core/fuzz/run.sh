#!/usr/bin/env bash
# Builds and runs the fuzz targets (docs/fuzzing.md). Stable Rust, no extra tool:
# libfuzzer-sys brings libFuzzer, and the sanitizer-coverage instrumentation
# that cargo-fuzz would ask for is set here with stable `-C` flags.
#
#   run.sh build              build every target
#   run.sh smoke [TARGET...]  replay each target's corpus and seeds, then fuzz it
#                             for FUZZ_SMOKE_SECONDS (5); fails on any finding
#   run.sh full [TARGET...]   fuzz each target for FUZZ_RUNS executions (10 M),
#                             FUZZ_JOBS (2) at a time, niced; keep in corpus/<target>
#                             the FUZZ_CORPUS_MAX (50) inputs that cover the most;
#                             print executions per target
#   run.sh corpus [TARGET...] pick corpus/<target> again from all inputs found
#   run.sh report [TARGET...] the table `full` prints at its end
#   run.sh list               the targets
#
# Findings (panics, timeouts over FUZZ_TIMEOUT s, RSS over FUZZ_RSS_MB, single
# allocations over 64 MiB) are saved as target/fuzz/artifacts/<target>/*;
# replay one with `target/x86_64-unknown-linux-gnu/release/<target> FILE`.
set -euo pipefail
cd "$(dirname "$0")"

# Slowest first, so that `full` keeps FUZZ_JOBS busy until the end.
TARGETS=(dialect_stream inbound_stream control_plane_config sigv4 sse_parser request_inspect
  inbound_request dialect_prepare eventstream_decoder dialect_answer dialect_error filter_config)
# FUZZ_CONTROL_PLANE=0: build without the control plane (its dependencies are
# most of the build) and leave control_plane_config out.
FUZZ_CONTROL_PLANE=${FUZZ_CONTROL_PLANE:-1}
FEATURES=()
if [ "$FUZZ_CONTROL_PLANE" = 0 ]; then
  read -ra TARGETS <<<"${TARGETS[*]/control_plane_config/}"
  FEATURES=(--no-default-features)
fi
FUZZ_RUNS=${FUZZ_RUNS:-10000000}
FUZZ_JOBS=${FUZZ_JOBS:-2}
FUZZ_SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-5}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-4096}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
FUZZ_NICE=${FUZZ_NICE:-15}
FUZZ_CORPUS_MAX=${FUZZ_CORPUS_MAX:-50}

HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN="target/$HOST/release"
WORK=target/fuzz

say() { printf 'fuzz: %s\n' "$*"; }

build() {
  # libfuzzer-sys compiles libFuzzer, which is C++.
  if ! command -v c++ >/dev/null; then
    say "installing g++ (libFuzzer is C++)"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ >/dev/null
  fi
  # `--target` keeps the instrumentation off build scripts and proc macros,
  # which are not linked with libFuzzer.
  RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing" \
    nice -n "$FUZZ_NICE" cargo build --release --target "$HOST" --bins "${FEATURES[@]}"
}

seeds() {
  rm -rf "$WORK/seeds"
  python3 seed.py "$WORK/seeds"
}

# The options every run shares.
opts() {
  local t=$1
  mkdir -p "$WORK/artifacts/$t"
  echo -max_len="$FUZZ_MAX_LEN" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" -dict=fuzz.dict \
    -artifact_prefix="$WORK/artifacts/$t/" -print_final_stats=1
}

inputs() {
  local t=$1
  mkdir -p "corpus/$t" "$WORK/seeds/$t"
  echo "corpus/$t" "$WORK/seeds/$t"
}

smoke_one() {
  local t=$1
  local log="$WORK/logs/$t.smoke.log" scratch="$WORK/smoke/$t"
  rm -rf "$scratch" && mkdir -p "$scratch" "$WORK/logs"
  # Every committed and seed input once (a regression test), then new ones.
  # shellcheck disable=SC2046
  if nice -n "$FUZZ_NICE" "$BIN/$t" $(opts "$t") -max_total_time="$FUZZ_SMOKE_SECONDS" \
      "$scratch" $(inputs "$t") >"$log" 2>&1; then
    say "$t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") executions, no finding"
  else
    say "$t: FINDING (log: core/fuzz/$log)"
    grep -E -A12 'panicked at|ERROR: libFuzzer|==fuzz==' "$log" | head -40 >&2
    return 1
  fi
}

full_one() {
  local t=$1
  local log="$WORK/logs/$t.log" grown="$WORK/grown/$t"
  mkdir -p "$grown" "$WORK/logs"
  local start status=0
  start=$(date +%s)
  # shellcheck disable=SC2046
  nice -n "$FUZZ_NICE" "$BIN/$t" $(opts "$t") -runs="$FUZZ_RUNS" \
    "$grown" $(inputs "$t") >"$log" 2>&1 || status=$?
  echo "$(( $(date +%s) - start ))" >"$WORK/logs/$t.seconds"
  echo "$status" >"$WORK/logs/$t.status"
  if [ "$status" -ne 0 ]; then
    say "$t: FINDING (log: core/fuzz/$log, input: core/fuzz/$WORK/artifacts/$t/)"
    return 0
  fi
  pick_corpus "$t"
}

# Everything found stays in $WORK/grown for the next local run; the committed
# corpus is the FUZZ_CORPUS_MAX inputs that cover the most (minimize.py), from
# the per-input coverage of libFuzzer's merge.
pick_corpus() {
  local t=$1
  local merged="$WORK/merged/$t" control="$WORK/merged/$t.control"
  rm -rf "$merged" "$control" && mkdir -p "$merged" "$WORK/grown/$t"
  # shellcheck disable=SC2046
  nice -n "$FUZZ_NICE" "$BIN/$t" $(opts "$t") -merge=1 -merge_control_file="$control" \
    "$merged" "corpus/$t" "$WORK/grown/$t" "$WORK/seeds/$t" >"$WORK/logs/$t.merge.log" 2>&1
  rm -rf "$merged"
  python3 minimize.py "$control" "$merged" "$FUZZ_CORPUS_MAX" >"$WORK/logs/$t.corpus"
  rm -rf "corpus/$t" && mv "$merged" "corpus/$t"
  say "$t: corpus $(cat "$WORK/logs/$t.corpus")"
}

report() {
  printf '\n%-22s %12s %9s %9s %7s  %s\n' target executions seconds exec/s corpus result
  for t in "$@"; do
    local log="$WORK/logs/$t.log" runs secs status result
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -1)
    secs=$(cat "$WORK/logs/$t.seconds" 2>/dev/null || echo 0)
    status=$(cat "$WORK/logs/$t.status" 2>/dev/null || echo '?')
    result=$([ "$status" = 0 ] && echo "no finding" || echo "FINDING (exit $status)")
    printf '%-22s %12s %9s %9s %7s  %s\n' "$t" "${runs:-?}" "$secs" \
      "$(( ${runs:-0} / (secs > 0 ? secs : 1) ))" "$(find "corpus/$t" -type f | wc -l)" "$result"
  done
}

cmd=${1:-}
shift || true
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${TARGETS[@]}")
case "$cmd" in
  build) build ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  smoke)
    build && seeds
    failed=0
    for t in "${selected[@]}"; do smoke_one "$t" || failed=1; done
    exit $failed ;;
  full)
    build && seeds
    say "${#selected[@]} targets, $FUZZ_RUNS executions each, $FUZZ_JOBS at a time"
    export -f full_one pick_corpus opts inputs say
    export BIN WORK FUZZ_RUNS FUZZ_MAX_LEN FUZZ_TIMEOUT FUZZ_RSS_MB FUZZ_NICE FUZZ_CORPUS_MAX
    printf '%s\n' "${selected[@]}" | xargs -P "$FUZZ_JOBS" -I{} bash -c 'full_one {}'
    report "${selected[@]}"
    for t in "${selected[@]}"; do [ "$(cat "$WORK/logs/$t.status")" = 0 ] || exit 1; done ;;
  corpus)
    seeds
    mkdir -p "$WORK/logs"
    for t in "${selected[@]}"; do pick_corpus "$t"; done ;;
  report) report "${selected[@]}" ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
