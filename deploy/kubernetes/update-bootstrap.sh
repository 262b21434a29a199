#!/usr/bin/env bash
# Writes the chart's gateway bootstrap files from `switchyard bootstrap` for the
# chart's default config, each with the stats-only listener Prometheus scrapes
# (--stats-addr; the chart sets its port from gateway.metrics.port):
# switchyard/files/envoy-bootstrap.yaml (plain xDS),
# envoy-bootstrap-tls.yaml (mutual TLS) and the two file-based SDS files the TLS
# one reads from /etc/envoy (switchyard-client.sds.yaml, switchyard-ca.sds.yaml:
# the certificate files of the gateway's Secret, re-read when cert-manager
# rotates them). The chart points the xDS cluster at the control-plane Service
# (templates/_helpers.tpl); `make validate-deploy` fails when these files are
# not what the binary prints.
#   update-bootstrap.sh [CONFIG [OUT_DIR]]   another config's limits (then pass
#                                            --set-file gateway.bootstrap=OUT_DIR/envoy-bootstrap[-tls].yaml)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SWITCHYARD_BIN:-target/debug/switchyard}
CONFIG=${1:-deploy/kubernetes/switchyard/files/switchyard.yaml}
OUT=${2:-deploy/kubernetes/switchyard/files}
mkdir -p "$OUT"
# Only `limits:` is read: provider key files need not exist here. The node id is
# replaced by the pod name (--service-node); 127.0.0.1:18000 and
# switchyard-control-plane.placeholder by the chart.
"$BIN" bootstrap --config "$CONFIG" --node envoy --xds 127.0.0.1:18000 --admin 127.0.0.1:9901 \
  --stats-addr 0.0.0.0:9902 > "$OUT/envoy-bootstrap.yaml"
"$BIN" bootstrap --config "$CONFIG" --node envoy --xds switchyard-control-plane.placeholder:18000 \
  --admin 127.0.0.1:9901 --stats-addr 0.0.0.0:9902 --tls-cert /etc/switchyard/tls/tls.crt --tls-key /etc/switchyard/tls/tls.key \
  --tls-ca /etc/switchyard/tls/ca.crt --sds-dir /etc/envoy --sds-out "$OUT" \
  > "$OUT/envoy-bootstrap-tls.yaml"
echo "wrote $OUT/envoy-bootstrap.yaml, envoy-bootstrap-tls.yaml, switchyard-client.sds.yaml, switchyard-ca.sds.yaml"
