#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Archy's build and tests need, when they are missing.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(build-essential)
have pkg-config || need+=(pkg-config)
have protoc || need+=(protobuf-compiler)   # nostr-rs-relay (the third-party relay in tests)
have node || need+=(nodejs)
have npm || need+=(npm)
have curl || need+=(curl)
have git || need+=(git)
have skopeo || need+=(skopeo)   # copies images out of a node's OCI registry (tests)

if ((${#need[@]})); then
  echo "==> installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

if ! have cargo; then
  cat >&2 <<'MSG'
error: no Rust toolchain (cargo) found. Archy needs Rust >= 1.91.
Install it with rustup (https://rustup.rs): curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
(Debian's own `cargo` package is too old.)
MSG
  exit 1
fi
