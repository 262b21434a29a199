#!/usr/bin/env bash
# Renders the chart with the Helm that `make setup` installs (pinned in
# deploy/validate/package-lock.json), to stdout:
#   deploy/kubernetes/render.sh [--namespace NS] [helm template flags...]
#   deploy/kubernetes/render.sh --set-file config=my-switchyard.yaml | kubectl apply -f -
set -euo pipefail
cd "$(dirname "$0")/../.."
HELM=deploy/validate/node_modules/.bin/helm
[ -x "$HELM" ] || { echo "render: $HELM missing: run make setup" >&2; exit 1; }
exec "$HELM" template "${RELEASE:-switchyard}" deploy/kubernetes/switchyard --namespace switchyard "$@"
