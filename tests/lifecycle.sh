#!/usr/bin/env bash
# The lifecycle gate: for each sample app in apps/, with real nodes, a real relay and real
# Podman, run install → reachable → stop → start → restart → node restart survives →
# reinstall keeps data → uninstall, ARCHY_ITERATIONS times (1 in CI; 5 must pass before a
# release). Prints a pass/fail line per step and a final "N passed, M failed".
#   bash tests/lifecycle.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ITERATIONS="${ARCHY_ITERATIONS:-1}"
ARCHY="${ARCHY_BIN:-$PWD/target/debug/archy}"
WORK="$(mktemp -d /tmp/archy-lifecycle.XXXXXX)"
PUB="$WORK/publisher"; CON="$WORK/consumer"
passed=0; failed=0

[ -x "$ARCHY" ] || cargo build -q -p archy-marketplace --bin archy
if [ "$(id -u)" -eq 0 ]; then
  PREFIX='["runuser", "-u", "archy", "--", "env", "XDG_RUNTIME_DIR=/tmp/archy-run", "HOME=/home/archy"]'
  PODMAN="runuser -u archy -- env XDG_RUNTIME_DIR=/tmp/archy-run HOME=/home/archy podman"
else
  PREFIX='[]'; PODMAN=podman
fi

start_node() { # home
  "$ARCHY" --home "$1" node run >>"$1/node.log" 2>&1 &
  echo $! >"$1/node.pid"
  for _ in $(seq 300); do [ -f "$1/node.json" ] && "$ARCHY" --home "$1" node status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node in $1 did not start:"; tail -20 "$1/node.log"; return 1
}
stop_node() { # home
  [ -f "$1/node.pid" ] || return 0
  kill -TERM "$(cat "$1/node.pid")" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$(cat "$1/node.pid")" 2>/dev/null || break; sleep 0.2; done
  rm -f "$1/node.pid"
}
cleanup() {
  for app in hello-web notes; do "$ARCHY" --home "$CON" apps uninstall --purge "$app" >/dev/null 2>&1; done
  stop_node "$CON"; stop_node "$PUB"; rm -rf "$WORK"
}
trap cleanup EXIT

check() { # name command...
  local name="$1"; shift
  if "$@" >"$WORK/step.log" 2>&1; then
    echo "PASS $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; sed 's/^/     /' "$WORK/step.log" | tail -15; failed=$((failed + 1))
  fi
}
reachable() { # port
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done
  return 1
}
state_is() { # app state
  "$ARCHY" --home "$CON" apps list --json | grep -A4 "\"app\": \"$1\"" | grep -q "\"state\": \"$2\""
}
write_marker() { # app value
  $PODMAN exec "archy_$1" sh -c "echo $2 > /data/marker"
}
marker_is() { # app value
  [ "$($PODMAN exec "archy_$1" cat /data/marker)" = "$2" ]
}

# One publisher (embedded relay, iroh origin) and one consumer that trusts it.
mkdir -p "$PUB" "$CON"
printf '[apps]\npodman_prefix = %s\n' "$PREFIX" >"$PUB/config.toml"
"$ARCHY" --home "$PUB" id new >/dev/null
start_node "$PUB" || exit 1
RELAY="ws://$(cat "$PUB/relay/addr")"
NPUB="$("$ARCHY" --home "$PUB" id show --json | sed -n 's/.*"npub": "\(npub[a-z0-9]*\)".*/\1/p')"
printf '[relays]\nembedded = false\nurls = ["%s"]\nsync_interval_secs = 2\n\n[trust]\nanchors = ["%s"]\n\n[apps]\npodman_prefix = %s\n' \
  "$RELAY" "$NPUB" "$PREFIX" >"$CON/config.toml"
start_node "$CON" || exit 1
IMAGE="$(PODMAN="$PODMAN" bash apps/hello-web/build.sh lifecycle)"

declare -A PORT=([hello-web]=18080 [notes]=18081)
declare -A DATA=([hello-web]=no [notes]=yes)
for app in hello-web notes; do
  check "$app: publish" "$ARCHY" --home "$PUB" app publish "apps/$app/manifest.yaml" --image "$IMAGE"
done
check "discover" bash -c "for _ in \$(seq 100); do '$ARCHY' --home '$CON' market sync >/dev/null; '$ARCHY' --home '$CON' market search --json | grep -q '\"notes\"' && '$ARCHY' --home '$CON' market search --json | grep -q '\"hello-web\"' && exit 0; sleep 0.3; done; exit 1"

for i in $(seq "$ITERATIONS"); do
  for app in hello-web notes; do
    p="${PORT[$app]}"; tag="[$i] $app"
    check "$tag: install" "$ARCHY" --home "$CON" apps install "$app"
    check "$tag: reachable" reachable "$p"
    [ "${DATA[$app]}" = yes ] && check "$tag: write data" write_marker "$app" "iteration-$i"
    check "$tag: stop" bash -c "'$ARCHY' --home '$CON' apps stop $app && ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null"
    check "$tag: start" bash -c "'$ARCHY' --home '$CON' apps start $app"
    check "$tag: reachable after start" reachable "$p"
    check "$tag: restart" "$ARCHY" --home "$CON" apps restart "$app"
    check "$tag: reachable after restart" reachable "$p"
    stop_node "$CON"; start_node "$CON" >/dev/null
    check "$tag: node restart survives" bash -c "$(declare -f reachable); reachable $p"
    check "$tag: uninstall keeps data, reinstall" bash -c "'$ARCHY' --home '$CON' apps uninstall $app && '$ARCHY' --home '$CON' apps install $app"
    check "$tag: reachable after reinstall" reachable "$p"
    [ "${DATA[$app]}" = yes ] && check "$tag: data kept" marker_is "$app" "iteration-$i"
    check "$tag: uninstall" bash -c "'$ARCHY' --home '$CON' apps uninstall --purge $app && ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null"
  done
done

echo
echo "lifecycle: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
