#!/usr/bin/env bash
# The protocol crate does no I/O: none of the runtime, storage or network crates is among its
# normal dependencies (directly or through another crate), and its sources never touch files.
#   bash tests/checks/protocol-is-pure.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
fail=0
for dep in tokio redb iroh iroh-blobs nostr-sdk reqwest ssi; do
    # `cargo tree -i` prints the paths by which the crate is reached; nothing means "not at all".
    out="$(cargo tree -e normal -p archy-protocol -i "$dep" 2>/dev/null || true)"
    if [ -n "$out" ]; then
        echo "archy-protocol depends on $dep:"; echo "$out"; fail=1
    fi
done
if grep -rn "std::fs\|tokio::\|std::net::TcpStream" marketplace/protocol/src; then
    echo "archy-protocol's sources do I/O (above)"; fail=1
fi
[ "$fail" = 0 ] && echo "archy-protocol: no tokio, redb, iroh, iroh-blobs, nostr-sdk, reqwest or ssi; no std::fs"
exit "$fail"
