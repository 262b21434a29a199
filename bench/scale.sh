#!/usr/bin/env bash
# make scale: one control plane (release build) and SCALE_ENVOYS (1000) simulated Envoys
# on this machine (control-plane/src/bin/xds-load.rs): each has its own ADS stream and
# SCALE_WORKERS (2) workers running the fleet exchange as the filter does today (a
# report every 250 ms per worker). Reports: the time a config change takes to reach
# every Envoy, the control plane's CPU and memory while the exchange runs steadily, and
# the time a circuit one Envoy opens takes to reach every worker. SCALE_FLEET=grpc: the
# exchange over the fleet stream instead (one stream per Envoy, state pushed). Not in CI (minutes,
# and the figures mean something only on a quiet machine). Output: .switchyard/scale/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${SCALE_ENVOYS:-1000}
W=${SCALE_WORKERS:-2}
STEADY=${SCALE_STEADY_S:-10}
FLEET=${SCALE_FLEET:-http}
OUT=.switchyard/scale
rm -rf "$OUT"
mkdir -p "$OUT"
# Ports below the ephemeral range, like the benchmarks' (bench/README.md).
XDS=18520 STATUS=18521 ADMIN=18522
for p in $XDS $STATUS $ADMIN; do
  ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "scale: 127.0.0.1:$p is in use" >&2; exit 1; }
done
cargo build --release --quiet -p switchyard-control-plane --bin switchyard --bin xds-load
WASM=$PWD/target/wasm32-wasip1/wasm-release/switchyard_filter.wasm
[ -f "$WASM" ] || { echo "scale: $WASM missing: run make wasm" >&2; exit 1; }
cat > "$OUT/switchyard.yaml" <<YAML
listener: { address: 127.0.0.1, port: 18523 }
filter: { wasm: $WASM }
circuit_breaker: { consecutive_failures: 5, base_open_ms: 600000, max_open_ms: 600000 }
providers:
  - { name: a, dialect: openai, base_url: "http://127.0.0.1:18524/v1", api_key: { value: scale } }
routes:
  - { model: chat, chain: [a/m] }
fleet_transport: $FLEET
YAML
setsid target/release/switchyard serve --config "$OUT/switchyard.yaml" --xds-addr "127.0.0.1:$XDS" \
  --status-addr "127.0.0.1:$STATUS" --admin-addr "127.0.0.1:$ADMIN" --data-dir "$OUT/data" \
  > "$OUT/control-plane.log" 2>&1 &
CP=$!
trap 'kill -TERM -- -$CP 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<> "/dev/tcp/127.0.0.1/$XDS") 2> /dev/null && break; sleep 0.1; done
echo "scale: $N simulated Envoys x $W workers, fleet over $FLEET, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%d)" | tee "$OUT/results.txt"
target/release/xds-load --xds "127.0.0.1:$XDS" --config "$OUT/switchyard.yaml" --clients "$N" \
  --status "127.0.0.1:$STATUS" --workers "$W" --fleet "$FLEET" --circuit a/m --pid "$CP" --steady-s "$STEADY" |
  tee -a "$OUT/results.txt"
