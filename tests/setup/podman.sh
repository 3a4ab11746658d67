#!/usr/bin/env bash
# Prepare a host for Archy's real-Podman tests (orchestrator/tests, tests/).
#
# Run as root on Debian/Ubuntu. Idempotent: every step checks before it acts, so running it twice
# changes nothing the second time. It:
#   1. installs podman runc uidmap slirp4netns fuse-overlayfs busybox-static catatonit if missing;
#   2. creates the unprivileged user `archy` (rootless Podman) if missing;
#   3. builds the test image localhost/archy/busybox:latest (busybox-static + applet symlinks,
#      `podman import`) in root's store and in archy's rootless store;
#   4. DETECTS host quirks instead of assuming them (see /work/shared/ENVIRONMENT.md): only if a
#      trivial `podman run` fails does it write /etc/containers/containers.conf (runc, cgroupfs,
#      ulimits the sandbox can set); only if rootless networking fails does it open /dev/net/tun.
#
# Environment: ARCHY_USER (default archy), ARCHY_IMAGE (default localhost/archy/busybox:latest).
set -euo pipefail

ARCHY_USER="${ARCHY_USER:-archy}"
IMAGE="${ARCHY_IMAGE:-localhost/archy/busybox:latest}"
CONF=/etc/containers/containers.conf
RUNTIME_DIR="/tmp/${ARCHY_USER}-run"

log() { printf '[podman.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and creates a user)"

# ---------------------------------------------------------------- 1. packages
PKGS=(podman runc uidmap slirp4netns fuse-overlayfs busybox-static catatonit)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
else
    log "packages present"
fi

# ---------------------------------------------------------------- 2. user
if ! id "$ARCHY_USER" >/dev/null 2>&1; then
    log "creating user $ARCHY_USER"
    useradd -m -s /bin/bash "$ARCHY_USER"
fi
# useradd on Debian assigns subordinate ids; older systems may not, and rootless Podman needs them.
if ! grep -q "^${ARCHY_USER}:" /etc/subuid; then
    log "adding subuid range for $ARCHY_USER"
    usermod --add-subuids 200000-265535 "$ARCHY_USER"
fi
if ! grep -q "^${ARCHY_USER}:" /etc/subgid; then
    log "adding subgid range for $ARCHY_USER"
    usermod --add-subgids 200000-265535 "$ARCHY_USER"
fi
install -d -m 700 -o "$ARCHY_USER" -g "$ARCHY_USER" "$RUNTIME_DIR"

# Run a command as the rootless user, with the runtime dir Podman expects (no systemd login here).
as_user() {
    runuser -u "$ARCHY_USER" -- env HOME="$(getent passwd "$ARCHY_USER" | cut -d: -f6)" \
        XDG_RUNTIME_DIR="$RUNTIME_DIR" "$@"
}

# ---------------------------------------------------------------- 3. test image
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing although busybox-static is installed"
WORK="$(mktemp -d /tmp/archy-rootfs.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
build_rootfs() {
    local root="$WORK/root"
    mkdir -p "$root"/{bin,etc,tmp,www,data,proc,sys,dev,run,var/tmp}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    cp "$BUSYBOX" "$root/bin/busybox"
    local applet
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'archy test image\n' >"$root/www/index.html"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$WORK/rootfs.tar" .
    chmod 644 "$WORK/rootfs.tar"
    chmod 755 "$WORK"
}
import_image() { # $1: "root" or "user"
    local run=()
    [ "$1" = user ] && run=(as_user)
    if "${run[@]}" podman image exists "$IMAGE"; then
        log "$1: image $IMAGE present"
        return
    fi
    [ -f "$WORK/rootfs.tar" ] || build_rootfs
    log "$1: importing $IMAGE"
    "${run[@]}" podman import --change 'CMD ["/bin/sh"]' --change 'WORKDIR /' \
        "$WORK/rootfs.tar" "$IMAGE" >/dev/null
}
import_image root

# ---------------------------------------------------------------- 4. detect quirks
try_run() { # $@: prefix (empty for root); prints podman's error on failure
    "$@" podman run --rm --network none "$IMAGE" true 2>&1
}
write_conf() {
    local nofile
    nofile="$(ulimit -Hn)"
    log "writing $CONF (runc, cgroupfs, ulimits nofile=$nofile nproc=1000)"
    [ -f "$CONF" ] && cp -n "$CONF" "$CONF.archy-backup"
    mkdir -p /etc/containers
    cat >"$CONF" <<CONF
# Written by archy tests/setup/podman.sh because a plain \`podman run\` failed on this host.
# [containers] ulimits: the sandbox lacks CAP_SYS_RESOURCE, so Podman's defaults cannot be set.
# [engine] runc + cgroupfs: hybrid cgroups v1/v2 (crun refuses them) and no systemd session.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=1000:1000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
}
if out="$(try_run)"; then
    log "root: podman run works"
else
    log "root: podman run failed: $(printf '%s' "$out" | tail -n 3)"
    if grep -q 'Written by archy' "$CONF" 2>/dev/null; then
        die "podman run still fails with the archy containers.conf in place; see the error above"
    fi
    write_conf
    out="$(try_run)" || die "podman run still fails after writing $CONF: $out"
    log "root: podman run works after the fix"
fi

import_image user
if out="$(try_run as_user)"; then
    log "rootless: podman run works"
else
    # Typically subuid ranges added after the user's store was created: `system migrate` makes
    # the store pick them up (it restarts the user's containers, so only when needed).
    log "rootless: podman run failed: $(printf '%s' "$out" | tail -n 2); running podman system migrate"
    as_user podman system migrate >/dev/null 2>&1 || true
    out="$(try_run as_user)" || die "rootless podman run fails: $out"
    log "rootless: podman run works after system migrate"
fi
# Rootless port publishing goes through slirp4netns, which needs /dev/net/tun.
try_net() {
    as_user podman run --rm -p 127.0.0.1::8080 "$IMAGE" true 2>&1
}
if out="$(try_net)"; then
    log "rootless: networking works"
else
    log "rootless: networking failed: $(printf '%s' "$out" | tail -n 2)"
    if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        log "opening /dev/net/tun (chmod 666) for slirp4netns"
        chmod 666 /dev/net/tun
        out="$(try_net)" || die "rootless networking still fails: $out"
        log "rootless: networking works after the fix"
    else
        die "rootless networking fails and /dev/net/tun is not the cause: $out"
    fi
fi
log "done: root and $ARCHY_USER can run $IMAGE"
