#!/usr/bin/env bash
# Builds the notes-pg sample stack's two images locally (no registry needed), in two layers:
#   1. a base, built once and reused: a Debian bookworm root filesystem (debootstrap minbase)
#      with postgresql-15, python3 and python3-psycopg2, cached as a tarball under
#      ${XDG_CACHE_HOME:-$HOME/.cache}/archy/notes-pg/ and imported as
#      localhost/archy/debian-pg:15 (ARCHY_PG_BASE overrides the name);
#   2. the services: `podman build` FROM that base, adding only this folder's files:
#      localhost/archy/notes-pg-db:VERSION (db/entrypoint.sh) and
#      localhost/archy/notes-pg-web:VERSION (web/app.py).
# Prints the two image references on stdout (db, then web) and nothing else.
#   bash apps/notes-pg/build.sh [VERSION]
# PODMAN overrides the podman command, e.g.
#   PODMAN="runuser -u archy -- env HOME=/home/archy XDG_RUNTIME_DIR=/tmp/archy-run podman"
# ARCHY_DEBIAN_MIRROR overrides the mirror (default: the one apt uses for bookworm).
# Building the base tarball needs root (debootstrap); importing and building do not.
# Force a new base: delete the tarball and `podman rmi` the base image (see README.md).
set -euo pipefail
VERSION="${1:-1.0.0}"
PODMAN="${PODMAN:-podman}"
BASE="${ARCHY_PG_BASE:-localhost/archy/debian-pg:15}"
HERE="$(cd "$(dirname "$0")" && pwd)"
# Bump when the base's content changes (packages, clean-up): a new tarball and a re-import.
BASE_KEY="base-v1"
SUITE=bookworm
PACKAGES="postgresql-15,python3,python3-psycopg2"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/archy/notes-pg"
TARBALL="$CACHE/debian-$SUITE-pg15-$BASE_KEY.tar.gz"
PG_BIN=/usr/lib/postgresql/15/bin
IMAGE_PATH="$PG_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { echo "notes-pg build: $*" >&2; }

work="$(mktemp -d /var/tmp/archy-notes-pg.XXXXXX)"
cleanup() {
  # debootstrap mounts /proc (and maybe /sys, /dev) in the chroot: never recurse into them.
  if [ -d "$work/root" ]; then
    awk -v r="$work/root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r \
      | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  rm -rf --one-file-system "$work"
  [ -z "${tmp_tarball:-}" ] || rm -f "$tmp_tarball"
}
trap cleanup EXIT
chmod 755 "$work"

# The first Debian mirror apt is configured with for $SUITE (deb822 .sources or one-line .list).
debian_mirror() {
  local f uri
  if [ -n "${ARCHY_DEBIAN_MIRROR:-}" ]; then echo "$ARCHY_DEBIAN_MIRROR"; return; fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri="$(awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && enabled != "no" && uris != "")
          { split(uris, u, " "); print u[1]; found = 1; exit }
        types = suites = uris = enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      {
        key = tolower($0); sub(/:.*/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }' "$f")"
    [ -z "$uri" ] || { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri="$(awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit } }' "$f")"
    [ -z "$uri" ] || { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

build_tarball() {
  [ "$(id -u)" -eq 0 ] || { log "building the base root filesystem needs root (debootstrap); run as root once, or put $TARBALL in place"; exit 1; }
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 \
      || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
  fi
  local mirror root
  mirror="$(debian_mirror)"
  root="$work/root"
  log "debootstrap $SUITE from $mirror (once; cached as $TARBALL)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    exit 1
  }
  # Half the size is what no service here runs: LLVM (+ z3) only serves PostgreSQL's optional
  # JIT, and locales/libc-l10n only generate locales (initdb uses C.UTF-8, built into libc-bin).
  # PostgreSQL turns JIT off by itself when its provider (llvmjit.so) is absent.
  chroot "$root" dpkg --purge --force-depends libllvm14 libz3-4 locales libc-l10n \
    >>"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/usr/lib/postgresql/15/lib/bitcode "$root"/usr/lib/postgresql/15/lib/llvmjit*
  # Keep it small: no package caches or lists, no docs (but the copyright files), man pages,
  # translations or logs.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/cache/ldconfig/aux-cache "$root"/var/log/* \
    "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/lintian \
    "$root"/usr/share/locale/* "$root"/usr/share/postgresql/15/man
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  mkdir -p "$root/var/log/postgresql" "$root/var/log/apt"
  # postgresql-common's postinst made a default cluster (15/main) and ssl-cert a snakeoil key
  # pair: the db entrypoint makes its own cluster, and no image should ship a private key.
  rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
  rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
  # Nothing of the build host: Podman provides these at run time.
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  rm -f "$root/etc/machine-id"
  # So that an image FROM this base that installs packages stays small too.
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' >"$root/etc/dpkg/dpkg.cfg.d/01-archy-nodoc"
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/01-archy-norecommends"
  mkdir -p "$CACHE"
  tmp_tarball="$(mktemp "$CACHE/.${TARBALL##*/}.XXXXXX")"
  # No device nodes (a rootless import could not create them; Podman provides /dev).
  tar --numeric-owner --sort=name -C "$root" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -c . | gzip -1 >"$tmp_tarball"
  chmod 644 "$tmp_tarball"
  mv -f "$tmp_tarball" "$TARBALL"
  tmp_tarball=""
  rm -rf --one-file-system "$root"
}

base_key_of_image() {
  $PODMAN image inspect --format '{{index .Labels "org.archy.notes-pg.base"}}' "$BASE" 2>/dev/null || true
}

# Import when the base is missing, or is an older base of ours (another BASE_KEY label); an
# image of someone else's under that name (ARCHY_PG_BASE) is used as it is.
need_import=0
if ! $PODMAN image exists "$BASE" 2>/dev/null; then
  need_import=1
else
  key="$(base_key_of_image)"
  [ -z "$key" ] || [ "$key" = "<no value>" ] || [ "$key" = "$BASE_KEY" ] || need_import=1
fi
if [ "$need_import" -eq 1 ]; then
  [ -s "$TARBALL" ] || build_tarball
  log "importing $TARBALL as $BASE"
  # On stdin, so a rootless PODMAN never needs to read the cache directory.
  $PODMAN import \
    --change "ENV PATH=$IMAGE_PATH" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL org.archy.notes-pg.base=$BASE_KEY" \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE" <"$TARBALL" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
fi

# Build contexts readable by a rootless PODMAN.
build_image() { # name ctx
  chmod -R a+rX "$2"
  $PODMAN build --pull=never --quiet --tag "$1" "$2" >/dev/null 2>"$work/err" \
    || { cat "$work/err" >&2; exit 1; }
  echo "$1"
}

DB_IMAGE="localhost/archy/notes-pg-db:$VERSION"
WEB_IMAGE="localhost/archy/notes-pg-web:$VERSION"

mkdir -p "$work/db" "$work/web"
install -m 755 "$HERE/db/entrypoint.sh" "$work/db/entrypoint.sh"
cat >"$work/db/Containerfile" <<CF
FROM $BASE
ENV PATH=$IMAGE_PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY entrypoint.sh /usr/local/bin/notes-pg-db
LABEL org.archy.notes-pg.version="$VERSION"
EXPOSE 5432
# Fast shutdown: rolls back open transactions and disconnects clients (a psql session, a long
# query), then a clean checkpoint. SIGTERM (smart shutdown) is clean too, but waits for every
# session to end, which could outlast the stop grace.
STOPSIGNAL SIGINT
CMD ["/usr/local/bin/notes-pg-db"]
CF
build_image "$DB_IMAGE" "$work/db"

install -m 644 "$HERE/web/app.py" "$work/web/app.py"
cat >"$work/web/Containerfile" <<CF
FROM $BASE
ENV APP_VERSION="$VERSION" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8
COPY app.py /opt/notes-pg/app.py
LABEL org.archy.notes-pg.version="$VERSION"
EXPOSE 8080
USER 65534:65534
CMD ["/usr/bin/python3", "/opt/notes-pg/app.py"]
CF
build_image "$WEB_IMAGE" "$work/web"
