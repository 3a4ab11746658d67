#!/usr/bin/env bash
# Installs sendme 0.37 (iroh's own transfer tool) once into a cache dir, for the
# swarm interop test (swarm/tests/sendme_interop.rs). Idempotent: does nothing if
# the binary is already there. Prints the binary's path on stdout.
#
#   ARCHY_TOOLS   install root (default: $HOME/.cache/archy-tools); the binary
#                 lands in $ARCHY_TOOLS/bin/sendme, where the test looks for it.
#   SENDME_JOBS   cargo build jobs (default 1, the build competes with others).
set -euo pipefail

ROOT="${ARCHY_TOOLS:-$HOME/.cache/archy-tools}"
BIN="$ROOT/bin/sendme"
VERSION="0.37"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "sendme $VERSION"; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$ROOT"
echo "installing sendme $VERSION into $ROOT (takes several minutes)..." >&2
nice -n 19 cargo install --locked "sendme@^$VERSION" --root "$ROOT" -j "${SENDME_JOBS:-1}" >&2
"$BIN" --version >&2
echo "$BIN"
