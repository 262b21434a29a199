#!/usr/bin/env bash
# Builds the proxy-wasm filter to target/wasm32-wasip1/wasm-release/switchyard_filter.wasm
# with the toolchain `setup.sh` chose (rustup target, or Debian's rustc-web with
# -Zbuild-std when rustup cannot add wasm32-wasip1). An argument names another
# package to build the same way (bench: switchyard-bench-noop).
set -euo pipefail
cd "$(dirname "$0")/../.."
PKG=${1:-switchyard-filter}
OUT=target/wasm32-wasip1/wasm-release/$(echo "$PKG" | tr - _).wasm
KIND=$(cat .switchyard/wasm-toolchain 2>/dev/null || echo rustup)
if [ "$KIND" = rustup ]; then
  cargo build --quiet -p "$PKG" --target wasm32-wasip1 --profile wasm-release
else
  # Debian's toolchain: its own target dir (different compiler), then copy.
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/debian-wasm \
  RUSTFLAGS="-C linker=/usr/lib/llvm-19/bin/wasm-ld -C link-self-contained=no -L native=/usr/lib/wasm32-wasi" \
    /usr/bin/cargo build --quiet -p "$PKG" --target wasm32-wasip1 --profile wasm-release \
      -Zbuild-std=std,panic_abort
  mkdir -p "$(dirname "$OUT")"
  cp -p "target/debian-wasm/wasm32-wasip1/wasm-release/$(basename "$OUT")" "$OUT"
fi
ls -l "$OUT" | awk '{print "wasm: " $NF " (" $5 " bytes)"}'
