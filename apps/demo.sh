#!/usr/bin/env bash
# Archy end to end on one machine: an embedded relay, a publisher node and a consumer node on
# loopback. The publisher builds and publishes the sample app (apps/hello-web); the consumer
# discovers it, scores its publisher, fetches the image over iroh, runs it under Podman, and
# updates it by one layer. Last, a second consumer joins and the two fetch one blob at once
# from the publisher's capped uplink, sharing what each has verified (PROTOCOL §5.3).
#   bash apps/demo.sh          run it (nodes and app stay up; the last lines say how to stop)
#   bash apps/demo.sh --down   stop the nodes and remove the demo app
# ARCHY_DEMO_DIR (default /tmp/archy-demo) holds the two homes and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
DEMO="${ARCHY_DEMO_DIR:-/tmp/archy-demo}"
PUB="$DEMO/publisher"
CON="$DEMO/consumer"
CON2="$DEMO/consumer-2"
ARCHY="$REPO/target/debug/archy"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
stop_node() { # home
  if [ -f "$1/node.pid" ]; then
    kill -TERM "$(cat "$1/node.pid")" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$(cat "$1/node.pid")" 2>/dev/null || break; sleep 0.2; done
    rm -f "$1/node.pid"
  fi
}

if [ "${1:-}" = "--down" ]; then
  [ -x "$ARCHY" ] && [ -d "$CON" ] && "$ARCHY" --home "$CON" apps uninstall hello-web 2>/dev/null || true
  stop_node "$CON2"; stop_node "$CON"; stop_node "$PUB"
  echo "demo stopped (homes kept in $DEMO; delete the folder to start from scratch)"
  exit 0
fi

step "1/10 installing what is missing (packages, Podman set-up)"
bash tests/setup/deps.sh
if [ "$(id -u)" -eq 0 ]; then
  bash tests/setup/podman.sh >/dev/null
  # Apps run rootless, as the unprivileged user `archy`, even though the nodes run as root.
  PODMAN_PREFIX='["runuser", "-u", "archy", "--", "env", "XDG_RUNTIME_DIR=/tmp/archy-run", "HOME=/home/archy"]'
  PODMAN="runuser -u archy -- env XDG_RUNTIME_DIR=/tmp/archy-run HOME=/home/archy podman"
else
  command -v podman >/dev/null || { echo "podman is missing: run this once as root (or with sudo) to install it" >&2; exit 1; }
  PODMAN_PREFIX='[]'
  PODMAN="podman"
fi

step "2/10 building archy"
cargo build -q -p archy-marketplace --bin archy

step "3/10 building the sample app image (apps/hello-web: a busybox base layer + a small app layer)"
IMAGE="$(PODMAN="$PODMAN" bash apps/hello-web/build.sh 1.0.0)"
echo "image: $IMAGE"

step "4/10 starting the publisher node (embedded relay + iroh origin)"
stop_node "$CON2"; stop_node "$CON"; stop_node "$PUB"
rm -rf "$DEMO"; mkdir -p "$PUB" "$CON" "$CON2"
# The publisher's uplink is capped at 8 MB/s, as a home connection would be (step 10 shows
# two consumers sharing the load).
cat >"$PUB/config.toml" <<CONF
[apps]
podman_prefix = $PODMAN_PREFIX

[swarm]
upload_rate_bytes_per_sec = 8000000
CONF
"$ARCHY" --home "$PUB" id new >/dev/null
"$ARCHY" --home "$PUB" node run >"$DEMO/publisher.log" 2>&1 &
echo $! >"$PUB/node.pid"
for _ in $(seq 300); do [ -f "$PUB/node.json" ] && break; sleep 0.1; done
[ -f "$PUB/node.json" ] || { cat "$DEMO/publisher.log"; exit 1; }
RELAY="ws://$(cat "$PUB/relay/addr")"
sed 's/^/  /' "$DEMO/publisher.log"

step "5/10 publishing hello-web 1.0.0 (its OCI layers exported into the publisher's iroh store)"
"$ARCHY" --home "$PUB" app publish apps/hello-web/manifest.yaml --image "$IMAGE"

step "6/10 starting the consumer node (reads the publisher's relay; trusts the publisher as an anchor)"
PUB_NPUB="$("$ARCHY" --home "$PUB" id show --json | sed -n 's/.*"npub": "\(npub[a-z0-9]*\)".*/\1/p')"
cat >"$CON/config.toml" <<CONF
[relays]
embedded = false
urls = ["$RELAY"]
sync_interval_secs = 5

[trust]
anchors = ["$PUB_NPUB"]

[apps]
podman_prefix = $PODMAN_PREFIX
CONF
"$ARCHY" --home "$CON" node run >"$DEMO/consumer.log" 2>&1 &
echo $! >"$CON/node.pid"
for _ in $(seq 300); do [ -f "$CON/node.json" ] && break; sleep 0.1; done
[ -f "$CON/node.json" ] || { cat "$DEMO/consumer.log"; exit 1; }

step "7/10 discovering and scoring"
"$ARCHY" --home "$CON" market sync
"$ARCHY" --home "$CON" market search
"$ARCHY" --home "$CON" trust show "$PUB_NPUB" | head -8

step "8/10 installing hello-web: layers over iroh from the origin, every check, Podman pulls from the node's registry, run"
"$ARCHY" --home "$CON" apps install hello-web
URL="http://127.0.0.1:18080/"
for _ in $(seq 50); do curl -fsS "$URL" >/dev/null 2>&1 && break; sleep 0.2; done
echo
echo "The app answers on $URL :"
curl -fsS "$URL"
echo

step "9/10 an update moves only what changed: hello-web 1.0.1 differs in its small app layer"
PODMAN="$PODMAN" bash apps/hello-web/build.sh 1.0.1 >/dev/null
sed 's/^version: 1.0.0/version: 1.0.1/' apps/hello-web/manifest.yaml >"$DEMO/hello-1.0.1.yaml"
"$ARCHY" --home "$PUB" app publish "$DEMO/hello-1.0.1.yaml" --image localhost/archy/hello-web:1.0.1 >/dev/null
for _ in $(seq 50); do
  "$ARCHY" --home "$CON" market sync >/dev/null
  "$ARCHY" --home "$CON" market show hello-web --json | grep -q '"latest": "1.0.1"' && break
  sleep 0.2
done
"$ARCHY" --home "$CON" apps update hello-web
REGISTRY="$("$ARCHY" --home "$CON" node status --json | sed -n 's/.*"registry": "\([^"]*\)".*/\1/p')"
echo "The consumer serves what it holds as an OCI registry on loopback: $REGISTRY"
echo "  (e.g. skopeo copy --src-tls-verify=false docker://$REGISTRY/<name>@<digest> dir:/tmp/img)"
curl -fsS "$URL"
echo

step "10/10 two consumers share one download: a 48 MiB blob from the publisher's 8 MB/s uplink"
# A second consumer node, then both fetch the same blob at the same moment. Each announces
# itself as a partial mirror when it starts (serving what it has verified), finds the other on
# the relay, and takes from it what the publisher already sent there.
sed '/^\[apps\]/,$d' "$CON/config.toml" >"$CON2/config.toml"
"$ARCHY" --home "$CON2" node run >"$DEMO/consumer-2.log" 2>&1 &
echo $! >"$CON2/node.pid"
for _ in $(seq 300); do [ -f "$CON2/node.json" ] && break; sleep 0.1; done
[ -f "$CON2/node.json" ] || { cat "$DEMO/consumer-2.log"; exit 1; }
head -c $((48 << 20)) /dev/urandom >"$DEMO/shared.bin"
BLOB="$("$ARCHY" --home "$PUB" blob add "$DEMO/shared.bin" | awk '{print $1; exit}')"
PUB_ADDR="$("$ARCHY" --home "$PUB" blob serve 2>/dev/null)"
for who in "$PUB" "$CON" "$CON2"; do
  printf '  %-10s is %s\n' "$(basename "$who")" "$("$ARCHY" --home "$who" blob serve 2>/dev/null | cut -c1-10)"
done
GETS=()
for who in "$CON" "$CON2"; do
  "$ARCHY" --home "$who" blob get "$BLOB" --from "$PUB_ADDR" --size $((48 << 20)) \
    --find-mirrors --mirror >"$DEMO/share-$(basename "$who").out" 2>&1 &
  GETS+=($!)
done
for who in "$CON" "$CON2"; do
  OUT="$DEMO/share-$(basename "$who").out"
  if ! wait "${GETS[0]}"; then cat "$OUT"; exit 1; fi
  GETS=("${GETS[@]:1}")
  echo "$(basename "$who") got it, every chunk verified, from:"
  grep -E '^  [0-9a-f]{10}: ' "$OUT"
done
PUB_ID="$(printf '%s' "$PUB_ADDR" | cut -c1-10)"
SENT="$(cat "$DEMO"/share-consumer*.out | awk -v id="$PUB_ID:" '$1 == id {s += $2} END {print int(s / 1048576)}')"
echo "The publisher sent $SENT MiB for the two copies ($((2 * 48)) MiB without sharing); each consumer now mirrors the blob."

echo
echo "The nodes and the app keep running. Try:"
echo "  $ARCHY --home $CON apps list"
echo "  $ARCHY --home $CON market show hello-web"
echo "  $ARCHY --home $CON blob gc --dry-run    # what the store keeps, and why"
echo "Stop everything with:  bash apps/demo.sh --down"
