#!/usr/bin/env bash
# A short smoke run of every fuzz target in marketplace/fuzz (issue 9): each target starts from
# its committed seeds (marketplace/fuzz/seeds/<target>) and runs FUZZ_SECONDS (default 20 s).
# A crash fails the script; the crashing input is left in marketplace/fuzz/artifacts/<target>/.
#   bash tests/fuzz-smoke.sh            # all targets
#   FUZZ_SECONDS=300 bash tests/fuzz-smoke.sh manifest
#
# cargo-fuzz needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 enables
# them (the sanitizer is off: the targets are safe Rust, and this keeps builds on stable).
# The first build of the fuzz workspace takes ~10 minutes on 2 cores; later ones reuse it.
# FUZZ_DEV=1 builds unoptimised (~6 minutes cold, fewer runs per second): enough for a smoke
# run, which is what tests/run.sh uses.
set -euo pipefail
cd "$(dirname "$0")/../marketplace/fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest release jws api_request registry_request)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version '^0.13'
flags=(-s none -a --codegen-units 16)
[ "${FUZZ_DEV:-0}" = 1 ] && flags+=(--dev)
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    echo "==> fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -dict=manifest.dict -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $t failed (input in marketplace/fuzz/artifacts/$t/)"
        exit 1
    fi
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|cov:" "$log" | tail -n 2
    rm -f "$log"
done
echo "fuzz smoke: no crash in ${targets[*]}"
