#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one command: builds the bench examples in release and
# runs them in order. Each figure is a ratio measured side by side in one run (median of
# several runs after a warm-up); absolute numbers are printed for context only.
#   bash tests/bench.sh            # medium sizes (minutes)
#   bash tests/bench.sh --full     # the sizes of BENCHMARKS.md (1 GiB ingest/transfer, 10k and 100k releases, 20 relays,
#                                  # 100k and 1M trust keys, 50 apps)
#   bash tests/bench.sh --smoke    # everything tiny, to keep the benches compiling and running (CI)
# BENCH_PROFILE=debug uses the debug build (tests/run.sh: the smoke run reuses the test build
# instead of compiling everything again in release; its numbers mean nothing).
# Needs for the peer rows: tests/setup/sendme.sh, tests/setup/nostr-rs-relay.sh, tests/setup/podman.sh
# (a missing tool skips its row with a note). The log is also written to $BENCH_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
export ARCHY_TOOLS="${ARCHY_TOOLS:-$HOME/.cache/archy-tools}"
export PATH="$ARCHY_TOOLS/bin:$HOME/.cargo/bin:$PATH"
mode="${1:---default}"
BENCH_LOG="${BENCH_LOG:-target/bench-${mode#--}.log}"

case "$mode" in
  --smoke)   ingest="16 1";   transfer=("8 1");            releases=("200 200 1 1 100"); trust=("10000 5 20");   apps="1 3";  fanout="8 2";   pull="8 1"; spread="16 8 1" ;;
  --default) ingest="256 3";  transfer=("100 5");          releases=("2000 2000 3 1"); trust=("100000 10 200"); apps="5 7";  fanout="64 5";  pull="64 3"; spread="256 40 3" ;;
  --full)    ingest="1024 3"; transfer=("100 5" "1024 3"); releases=("10000 10000 3 1" "2000 100000 1 1 0"); trust=("100000 10 500" "1000000 10 200"); apps="50 7"; fanout="256 5"; pull="256 3"; spread="1024 40 3" ;;
  *) echo "usage: $0 [--smoke|--default|--full]" >&2; exit 2 ;;
esac

machine() {
  echo "machine: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')\" ram=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
}

# 8. Podman pulling an image from a node's OCI registry vs `podman load` of the same image (an
# uncompressed OCI archive), side by side: a fresh single-layer image of MIB random bytes,
# published by a throwaway node, removed from Podman before every run; medians of RUNS.
registry_row() { # MIB RUNS BIN
  local mib="$1" runs="$2" bin="$3" w img home out digest reg id t loads=() pulls=()
  w="$(mktemp -d /tmp/archy-bench-pull.XXXXXX)"; img="localhost/archy/bench-pull:$$"; home="$w/home"
  mkdir -p "$w/root" "$home"
  head -c "$((mib << 20))" /dev/urandom >"$w/root/payload"
  tar -C "$w/root" -cf "$w/rootfs.tar" .
  podman import "$w/rootfs.tar" "$img" >/dev/null 2>&1
  podman save --uncompressed --format oci-archive "$img" >"$w/image.tar"
  "$bin" --home "$home" node run >"$w/node.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do [ -f "$home/node.json" ] && break; sleep 0.1; done
  out="$("$bin" --home "$home" app publish apps/hello-web/manifest.yaml --image "$img" --json)"
  digest="$(sed -n 's/.*"manifest_digest": *"\([^"]*\)".*/\1/p' <<<"$out")"
  reg="$("$bin" --home "$home" node status --json | sed -n 's/.*"registry": *"\([^"]*\)".*/\1/p')"
  id="$(podman image inspect --format '{{.Id}}' "$img")"
  ms() { date +%s%N | cut -c1-13; }
  for _ in $(seq 0 "$runs"); do
    podman rmi -f "$id" >/dev/null 2>&1 || true
    t="$(ms)"; podman load -q -i "$w/image.tar" >/dev/null 2>&1; loads+=($(( $(ms) - t )))
    podman rmi -f "$id" >/dev/null 2>&1 || true
    t="$(ms)"; podman pull -q --tls-verify=false "$reg/bench@$digest" >/dev/null 2>&1; pulls+=($(( $(ms) - t )))
  done
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  podman rmi -f "$id" >/dev/null 2>&1 || true
  rm -rf "$w"
  # Medians of the runs after the first (a warm-up).
  local ml mp
  ml="$(printf '%s\n' "${loads[@]:1}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  mp="$(printf '%s\n' "${pulls[@]:1}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
  echo "registry pull vs podman load, ${mib} MiB single-layer image, median of $runs after a warm-up (ms, context only): load $ml | pull $mp"
  awk -v p="$mp" -v l="$ml" 'BEGIN {printf "RATIO registry.pull/podman_load %.2f (time; below 1 is faster)\n", p / l}'
}

# Runs one bench binary; GNU time adds the process's peak RSS (same figure as VmHWM).
run() {
  local name="$1"; shift
  echo; echo "==> $name: $*"; machine
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "PEAK $name maxRSS %M KiB, wall %e s" "$@"
  else
    "$@"
  fi
}

{
  echo "tests/bench.sh $mode at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  machine
  profile="${BENCH_PROFILE:-release}"
  flag=(--profile "$profile"); [ "$profile" = debug ] && flag=(--profile dev)
  # One workspace build: per-package builds resolve features differently and would rebuild
  # much of the dependency tree that `cargo build --workspace --all-targets` already made.
  echo; echo "==> cargo build ${flag[*]} --workspace --examples --bins (the bench binaries)"
  cargo build "${flag[@]}" --workspace --examples --bins
  ex="target/$profile/examples"

  run "1. verified ingest (MiB runs)" $ex/ingest $ingest
  for t in "${transfer[@]}"; do
    run "2. transfer (MiB runs)" $ex/bench $t
  done
  for r in "${releases[@]}"; do
    run "3+4. release verification and discovery (N SYNC_N runs sync_runs MANY_N)" $ex/releases $r
  done
  for t in "${trust[@]}"; do
    run "5. trust (keys follows-per-key edits)" $ex/scale $t
  done
  if command -v podman >/dev/null && podman image exists localhost/archy/busybox:latest 2>/dev/null; then
    run "6. reconciler (apps rounds)" $ex/measure $apps
  else
    echo; echo "==> 6. reconciler skipped: podman or localhost/archy/busybox:latest missing (tests/setup/podman.sh)"
  fi
  run "7. fan-out, mirroring on vs off (MiB fetchers)" $ex/fanout $fanout
  run "7b. one blob from two capped sources vs one (MiB cap-MiB/s runs)" $ex/spread $spread
  if command -v podman >/dev/null; then
    echo; echo "==> 8. registry pull vs podman load (MiB runs): $pull"; machine
    registry_row $pull "target/$profile/archy"
  else
    echo; echo "==> 8. registry pull skipped: podman missing"
  fi
} 2>&1 | tee "$BENCH_LOG"
