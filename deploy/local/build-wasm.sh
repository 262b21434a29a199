#!/usr/bin/env bash
# Builds the proxy-wasm filter (package switchyard-wasm) to
# target/wasm32-wasip1/wasm-release/switchyard_filter.wasm with the toolchain
# `setup.sh` chose (rustup target, or Debian's rustc-web with -Zbuild-std when rustup
# cannot add wasm32-wasip1).
#   build-wasm.sh [PACKAGE [FEATURE]]: another package built the same way (bench:
#   switchyard-bench-noop), or a variant with a cargo feature (bench: profile),
#   written to <name>-<feature>.wasm from its own target dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
PKG=${1:-switchyard-wasm}
FEATURE=${2:-}
NAME=$(echo "$PKG" | tr - _)
# The filter keeps the artifact name deployments know it by.
ARTIFACT=$NAME
[ "$PKG" = switchyard-wasm ] && ARTIFACT=switchyard_filter
OUT=target/wasm32-wasip1/wasm-release/$ARTIFACT${FEATURE:+-$FEATURE}.wasm
KIND=$(cat .switchyard/wasm-toolchain 2>/dev/null || echo rustup)
FLAGS=(--quiet -p "$PKG" --target wasm32-wasip1 --profile wasm-release)
[ -n "$FEATURE" ] && FLAGS+=(--features "$FEATURE")
if [ "$KIND" = rustup ]; then
  DIR=target${FEATURE:+/$FEATURE-wasm}
  CARGO_TARGET_DIR=$DIR cargo build "${FLAGS[@]}"
else
  # Debian's toolchain: its own target dir (different compiler).
  DIR=target/debian-wasm${FEATURE:+-$FEATURE}
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$DIR \
  RUSTFLAGS="-C linker=/usr/lib/llvm-19/bin/wasm-ld -C link-self-contained=no -L native=/usr/lib/wasm32-wasi" \
    /usr/bin/cargo build "${FLAGS[@]}" -Zbuild-std=std,panic_abort
fi
BUILT=$DIR/wasm32-wasip1/wasm-release/$NAME.wasm
if [ "$BUILT" != "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; cp -p "$BUILT" "$OUT"; fi
ls -l "$OUT" | awk '{print "wasm: " $NF " (" $5 " bytes)"}'
