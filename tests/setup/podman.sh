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
#      ulimits the sandbox can set); only if rootless networking fails does it open /dev/net/tun;
#   5. gives the rootless user native overlay storage instead of vfs, after a probe shows it works,
#      and only if its store is empty or holds nothing but the test image (never resets a store).
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
trap 'rm -rf "$WORK" ${PROBE:+"$PROBE"} ${PROBE_RUN:+"$PROBE_RUN"}' EXIT
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

# Rootless storage driver. With no storage.conf, rootless Podman 4.3 picks `vfs` on a host whose
# /dev/fuse is root-only (fuse-overlayfs cannot mount): every layer and container is then a full
# copy. Native overlay needs no /dev/fuse (unprivileged overlay mounts, kernel >= 5.13), so it is
# probed in a scratch store and, if it works, written to the user's storage.conf. Podman keeps the
# driver its database recorded (an overlay storage.conf over a vfs store is ignored, with an error
# on every command), and a fresh database would hide every vfs image: so only a store holding
# nothing, or nothing but this script's own test image (removed here, re-imported just below), is
# switched. A store with anything else stays vfs, and the log says why and how to switch.
STORAGE_MARK="# Written by archy tests/setup/podman.sh"
PROBE="" PROBE_RUN=""
probe_overlay() { # $1: a directory beside the store (same filesystem); errors go to $WORK/probe.err
    local flags
    PROBE="$(as_user mktemp -d "$1/.archy-overlay-probe.XXXXXX")" || return 1
    PROBE_RUN="$(as_user mktemp -d "$RUNTIME_DIR/probe.XXXXXX")" || return 1 # runroot: <= 50 chars
    flags=(--root "$PROBE" --runroot "$PROBE_RUN" --storage-driver overlay)
    [ -f "$WORK/rootfs.tar" ] || build_rootfs
    local ok=0
    {
        as_user podman "${flags[@]}" import "$WORK/rootfs.tar" localhost/archy/overlay-probe:latest \
            >/dev/null &&
            as_user podman "${flags[@]}" run --rm --network none \
                localhost/archy/overlay-probe:latest true &&
            [ "$(as_user podman "${flags[@]}" info --format '{{.Store.GraphDriverName}}')" = overlay ]
    } 2>"$WORK/probe.err" || ok=1
    as_user podman "${flags[@]}" rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$PROBE" "$PROBE_RUN" # as root: the layers hold files owned by subordinate ids
    PROBE="" PROBE_RUN=""
    return "$ok"
}
keep_vfs() { # $*: why
    log "rootless: KEEPING the vfs store of $ARCHY_USER: $*."
    log "  Podman cannot change a store's driver in place. To use overlay: keep what you need"
    log "  (podman save, podman volume export), then as $ARCHY_USER run podman system reset, and"
    log "  re-run this script (it switches an empty store). Nothing was changed."
}
rootless_storage() {
    local info driver graphroot conf home db backup images ctrs pods vols
    home="$(getent passwd "$ARCHY_USER" | cut -d: -f6)"
    local fmt='{{.Store.GraphDriverName}}|{{.Store.GraphRoot}}|{{.Store.ConfigFile}}'
    if ! info="$(as_user podman info --format "$fmt" 2>"$WORK/info.err")"; then
        # A pause process recorded in the runtime dir that no longer runs (the host restarted, or
        # was restored from a snapshot, with $RUNTIME_DIR kept): Podman names the remedy itself.
        # `system migrate` restarts the pause process; images, containers and volumes stay.
        grep -q 'podman system migrate' "$WORK/info.err" ||
            die "rootless podman info fails: $(tail -n 2 "$WORK/info.err" | tr '\n' ' ')"
        log "rootless: podman info failed ($(grep -o 'invalid internal status[^:]*' "$WORK/info.err" |
            head -n 1)); running podman system migrate, as Podman advises"
        as_user podman system migrate >/dev/null 2>&1 || true
        info="$(as_user podman info --format "$fmt" 2>"$WORK/info.err")" ||
            die "rootless podman info fails after system migrate: $(tail -n 2 "$WORK/info.err" | tr '\n' ' ')"
    fi
    IFS='|' read -r driver graphroot conf <<<"$info"
    if [ "$driver" != vfs ]; then
        log "rootless: storage driver $driver"
        if grep -q '"id"' "$graphroot/vfs-images/images.json" 2>/dev/null; then
            log "rootless: note: $graphroot/vfs-images still lists images of an old vfs store;" \
                "Podman ($driver) does not see them"
        fi
        return
    fi
    case "$conf" in
    "$home"/*) ;;
    *) keep_vfs "Podman reads its storage config from $conf, outside $home"; return ;;
    esac
    if [ -e "$conf" ] && ! grep -qF "$STORAGE_MARK" "$conf"; then
        keep_vfs "$conf is the operator's own storage config"
        return
    fi
    images="$(as_user podman images -a --format '{{.ID}} {{.Repository}}:{{.Tag}}')" ||
        die "podman images fails"
    ctrs="$(as_user podman ps -a --external -q)" || die "podman ps fails"
    pods="$(as_user podman pod ls -q)" || die "podman pod ls fails"
    vols="$(as_user podman volume ls -q)" || die "podman volume ls fails"
    if [ -n "$ctrs$pods$vols" ]; then
        keep_vfs "it holds $(grep -c . <<<"$ctrs") container(s), $(grep -c . <<<"$pods") pod(s)," \
            "$(grep -c . <<<"$vols") volume(s)"
        return
    fi
    if [ -n "$images" ]; then
        # Only this script's artefact may go: one image, one name (ours), one layer (imported).
        if [ "$(printf '%s\n' "$images" | wc -l)" -ne 1 ] || [ "${images#* }" != "$IMAGE" ] ||
            [ "$(as_user podman image inspect --format '{{len .RootFS.Layers}}' "$IMAGE")" != 1 ]; then
            keep_vfs "it holds images other than $IMAGE:" \
                "$(cut -d' ' -f2 <<<"$images" | sort -u | paste -sd' ')"
            return
        fi
    fi
    db="$graphroot/libpod/bolt_state.db"
    if [ -e "$graphroot" ] && [ ! -f "$db" ]; then
        keep_vfs "its Podman database is not at $db (custom static_dir?)"
        return
    fi
    if pgrep -u "$ARCHY_USER" -x podman >/dev/null; then
        keep_vfs "podman is running as $ARCHY_USER right now; re-run this script when it is idle"
        return
    fi
    if ! probe_overlay "$(dirname "$graphroot")"; then
        keep_vfs "native overlay does not work for $ARCHY_USER here:" \
            "$(tail -n 2 "$WORK/probe.err" | tr '\n' ' ')"
        return
    fi
    log "rootless: native overlay works in a scratch store; switching $ARCHY_USER's store to it"
    if [ -n "$images" ]; then
        log "rootless: removing this script's $IMAGE from the vfs store (re-imported under overlay)"
        as_user podman rmi "$IMAGE" >/dev/null
        if grep -q '"id"' "$graphroot/vfs-images/images.json" 2>/dev/null; then
            log "rootless: the vfs store still lists images after removing $IMAGE; staying on vfs"
            return
        fi
    fi
    backup=""
    if [ -f "$db" ]; then # no containers, pods or volumes: it records only "driver = vfs"
        backup="$db.archy-vfs-$(date +%Y%m%d%H%M%S)"
        mv "$db" "$backup"
    fi
    as_user mkdir -p "$(dirname "$conf")"
    as_user sh -c 'cat >"$1.tmp" && mv "$1.tmp" "$1"' sh "$conf" <<CONF
$STORAGE_MARK: native rootless overlay (unprivileged
# overlay mounts, kernel >= 5.13) instead of vfs; no mount_program, so no /dev/fuse is needed.
[storage]
driver = "overlay"
CONF
    driver="$(as_user podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null)" || driver="?"
    if [ "$driver" = overlay ]; then
        log "rootless: storage driver overlay (wrote $conf${backup:+; old database kept as $backup})"
        return
    fi
    log "rootless: podman still reports '$driver' after writing $conf; restoring vfs"
    rm -f "$conf"
    if [ -n "$backup" ]; then mv -f "$backup" "$db"; else rm -f "$db"; fi
}
rootless_storage

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
