#!/bin/sh
# notes-pg db service: PostgreSQL 15 in the foreground, as the postgres user.
# Runs as root in the container with only CHOWN, DAC_OVERRIDE, FOWNER, SETGID and SETUID (and
# no-new-privileges): root prepares the directories, then setpriv drops to postgres for good.
# First start (no $PGDATA/PG_VERSION): initdb with the superuser password from
# POSTGRES_PASSWORD, database `notes`, listen on *:5432 with scram-sha-256 over TCP and trust
# on the container-local unix socket (for `podman exec ... pg_isready / pg_dump -U postgres`).
# The image's stop signal is SIGINT (fast shutdown); SIGTERM is a smart shutdown: both clean.
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PGPORT=5432
SOCKETS=/run/postgresql
export PGDATA

say() { echo "notes-pg-db: $*" >&2; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  say "POSTGRES_PASSWORD is empty or not set: it is required (the superuser's password)"
  exit 1
fi

# The volume is mounted at /var/lib/postgresql; the cluster is a subdirectory of it.
mkdir -p "$PGDATA" "$SOCKETS"
chown postgres:postgres "$SOCKETS"
chmod 2775 "$SOCKETS"
if [ "$(stat -c %U "$PGDATA")" != postgres ]; then
  # e.g. a volume restored by another user: give the whole cluster back to postgres.
  chown -R postgres:postgres "$PGDATA"
fi
chmod 700 "$PGDATA"
export HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "$(ls -A "$PGDATA")" ]; then
    say "$PGDATA is not empty but holds no cluster (no PG_VERSION): not initializing over it"
    exit 1
  fi
  say "initializing a new cluster in $PGDATA"
  # Made beside it and renamed into place once complete: a first start interrupted half-way
  # leaves no half-made cluster behind (the next start redoes it). Made in place when the
  # data directory is itself a mount point (it cannot be renamed then).
  stage="$PGDATA.init"
  if mountpoint -q "$PGDATA"; then stage="$PGDATA"; else rm -rf "$stage"; fi
  pwdir="$(mktemp -d /tmp/notes-pg-init.XXXXXX)"
  trap 'rm -rf "$pwdir" "$stage" 2>/dev/null' EXIT
  mkdir -p "$stage"
  chown postgres:postgres "$stage"
  chmod 700 "$stage"
  # printf is a shell builtin: the password never appears in a command line or the log.
  (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwdir/pw")
  chown -R postgres:postgres "$pwdir"
  as_postgres initdb --pgdata="$stage" --username=postgres --pwfile="$pwdir/pw" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -rf "$pwdir"
  cat >>"$stage/postgresql.conf" <<EOF

# notes-pg (set by the image's entrypoint at initdb)
listen_addresses = '*'
port = $PGPORT
unix_socket_directories = '$SOCKETS'
password_encryption = scram-sha-256
jit = off                 # the image ships no JIT provider (LLVM)
EOF
  cat >"$stage/pg_hba.conf" <<'EOF'
# notes-pg: the unix socket is reachable only inside this container (podman exec).
# TYPE  DATABASE  USER  ADDRESS      METHOD
local   all       all                trust
host    all       all   0.0.0.0/0    scram-sha-256
host    all       all   ::/0         scram-sha-256
EOF
  chown postgres:postgres "$stage/postgresql.conf" "$stage/pg_hba.conf"
  # Single-user mode: no socket, no network while the database is made.
  rc=0
  out="$(echo 'CREATE DATABASE notes;' | as_postgres postgres --single -j -D "$stage" postgres 2>&1)" || rc=$?
  case "$rc:$out" in
    0:*ERROR* | 0:*FATAL* | [!0]*) say "creating database notes failed:"; echo "$out" >&2; exit 1 ;;
  esac
  trap - EXIT
  if [ "$stage" != "$PGDATA" ]; then
    rmdir "$PGDATA"
    mv "$stage" "$PGDATA"
  fi
  say "cluster ready (database notes)"
fi

unset POSTGRES_PASSWORD
# exec: postgres becomes PID 1 and gets the stop signal itself.
exec setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA"
