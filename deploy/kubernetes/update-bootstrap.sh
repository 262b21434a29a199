#!/usr/bin/env bash
# Writes switchyard/files/envoy-bootstrap.yaml: `switchyard bootstrap` for the
# chart's default config. The chart points its xDS cluster at the control-plane
# Service and adds mTLS (templates/gateway.yaml); `make validate-deploy` fails
# when this file is not what the binary prints.
#   update-bootstrap.sh [CONFIG [OUT]]   another config's limits (then pass OUT
#                                        with --set-file gateway.bootstrap=OUT)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}
CONFIG=${1:-deploy/kubernetes/switchyard/files/switchyard.yaml}
OUT=${2:-deploy/kubernetes/switchyard/files/envoy-bootstrap.yaml}
# Only `limits:` is read: provider key files need not exist here. The node id is
# replaced by the pod name (--service-node); 127.0.0.1:18000 by the chart.
"$BIN" bootstrap --config "$CONFIG" --node envoy --xds 127.0.0.1:18000 --admin 127.0.0.1:9901 > "$OUT"
echo "wrote $OUT"
