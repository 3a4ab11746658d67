#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what it needs (Podman included), then
# runs rustfmt, clippy and every test against real relays, real iroh endpoints and real Podman.
#   bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ARCHY_TOOLS="${ARCHY_TOOLS:-$HOME/.cache/archy-tools}"
export PATH="$ARCHY_TOOLS/bin:$HOME/.cargo/bin:$PATH"
# Tests that need an external tool fail (instead of skipping) when it is missing.
export ARCHY_REQUIRE_TOOLS=1

step() { echo; echo "==> $* ($(date -u +%T), ${SECONDS} s into the run)"; }
step "system packages";            bash tests/setup/deps.sh
step "Podman (rootless-ready)";    bash tests/setup/podman.sh
# Nothing else builds meanwhile: let the one-time tool builds use every core.
step "nostr-rs-relay (3rd-party relay)"; CARGO_BUILD_JOBS="$(nproc)" bash tests/setup/nostr-rs-relay.sh
step "sendme (iroh's own tool)";   SENDME_JOBS="$(nproc)" bash tests/setup/sendme.sh
step "Node interop packages";      (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check";  cargo fmt --all -- --check
step "cargo clippy";       cargo clippy --workspace --all-targets -- -D warnings
step "protocol crate is pure"; bash tests/checks/protocol-is-pure.sh
# Build everything once, so the end-to-end tests use this build of the `archy` binary instead
# of building their own (with other features).
step "cargo build";        cargo build --workspace --all-targets
export ARCHY_BIN="$PWD/target/debug/archy"
step "cargo test";         cargo test --workspace
step "lifecycle gate (ARCHY_ITERATIONS=${ARCHY_ITERATIONS:-1})"; bash tests/lifecycle.sh
# Benchmarks and fuzzers are not tests: these short runs only keep them compiling and running.
step "benchmark smoke (debug build)"; BENCH_PROFILE=debug bash tests/bench.sh --smoke
step "fuzz smoke (${FUZZ_SECONDS:-15} s per target)"; FUZZ_DEV=1 FUZZ_SECONDS="${FUZZ_SECONDS:-15}" bash tests/fuzz-smoke.sh
