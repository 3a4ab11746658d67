#!/usr/bin/env bash
# Installs the third-party relay nostr-rs-relay 0.8.12 once, into
# ${ARCHY_TOOLS:-$HOME/.cache/archy-tools}/bin/nostr-rs-relay, and prints that path.
#
# Why not `cargo install --locked nostr-rs-relay`: the crate's lock file pins time 0.3.25,
# which no longer compiles on current Rust (E0282). We unpack the published crate, move `time`
# to 0.3.36 in its lock file, and install from that path with the rest of the lock intact.
#
# Needs: cargo (with its registry reachable), protobuf-compiler (protoc; installed via apt if
# missing and running as root).
# Env: ARCHY_TOOLS (install root), CARGO_BUILD_JOBS (defaults to 1: the build is long and
# shares the machine), NOSTR_RS_RELAY_TARGET (cargo target dir, default under /tmp).
set -euo pipefail

VERSION=0.8.12
ROOT="${ARCHY_TOOLS:-$HOME/.cache/archy-tools}"
BIN="$ROOT/bin/nostr-rs-relay"

if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi

if ! command -v protoc >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "nostr-rs-relay.sh: installing protobuf-compiler (needed by nostr-rs-relay's build)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler >&2
    else
        echo "nostr-rs-relay.sh: protoc not found; install protobuf-compiler first" >&2
        exit 1
    fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nostr-rs-relay-src.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

SRC="$WORK/nostr-rs-relay-$VERSION"

# 1. The crate source, through cargo's own registry client: a scratch project that depends on
#    the exact version, `cargo fetch`, then a copy out of cargo's unpacked sources.
mkdir -p "$WORK/scratch/src"
cat > "$WORK/scratch/Cargo.toml" <<TOML
[package]
name = "scratch"
version = "0.0.0"
edition = "2021"
[dependencies]
nostr-rs-relay = "=$VERSION"
TOML
: > "$WORK/scratch/src/lib.rs"
(cd "$WORK/scratch" && cargo fetch >&2)
FOUND="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/nostr-rs-relay-"$VERSION" 2>/dev/null | head -n1 || true)"
if [ -z "$FOUND" ] || [ ! -f "$FOUND/Cargo.lock" ]; then
    echo "nostr-rs-relay.sh: crate source not found after cargo fetch" >&2
    exit 1
fi
cp -r "$FOUND" "$SRC"
chmod -R u+w "$SRC"

# 2. Fix the one lock entry that no longer builds; keep every other pinned version.
cd "$SRC"
cargo update -p time@0.3.25 --precise 0.3.36 >&2

# 3. Build and install.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export CARGO_TARGET_DIR="${NOSTR_RS_RELAY_TARGET:-/tmp/archy-nostr-rs-relay-target}"
mkdir -p "$ROOT"
cargo install --locked --path . --root "$ROOT" >&2

"$BIN" --help >/dev/null 2>&1 || { echo "nostr-rs-relay.sh: installed binary does not run" >&2; exit 1; }
echo "$BIN"
