#!/usr/bin/env bash
# Builds the sample app's image locally (no registry needed), in two layers:
#   1. a base, imported once and reused: a busybox-static root filesystem,
#      localhost/archy/base:busybox (ARCHY_BASE overrides the name);
#   2. the app: `podman build` FROM that base with this folder's www/ COPYed in, tagged
#      localhost/archy/hello-web:VERSION.
# So two versions (or two apps) share the base layer, and an update moves only the small app
# layer (PROTOCOL §2.1: `archy app publish --image` ships the layers uncompressed).
#   bash apps/hello-web/build.sh [VERSION]
# PODMAN overrides the podman command, e.g. "runuser -u archy -- env XDG_RUNTIME_DIR=/tmp/archy-run podman".
set -euo pipefail
VERSION="${1:-1.0.0}"
PODMAN="${PODMAN:-podman}"
BASE="${ARCHY_BASE:-localhost/archy/base:busybox}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BUSYBOX=/bin/busybox

work="$(mktemp -d /tmp/archy-hello-web.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

if ! $PODMAN image exists "$BASE" 2>/dev/null; then
  [ -x "$BUSYBOX" ] || { echo "busybox-static is missing (apt-get install busybox-static)" >&2; exit 1; }
  root="$work/root"
  mkdir -p "$root"/{bin,etc,tmp,www,proc,sys,dev,run}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod -R a+rX "$root"
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$work/rootfs.tar" .
  chmod a+r "$work/rootfs.tar"
  $PODMAN import --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$BASE" >/dev/null 2>"$work/err" \
    || { cat "$work/err" >&2; exit 1; }
fi

ctx="$work/ctx"
mkdir -p "$ctx/www"
sed "s/<\/h1>/ (version $VERSION)<\/h1>/" "$HERE/www/index.html" >"$ctx/www/index.html"
cat >"$ctx/Containerfile" <<CF
FROM $BASE
COPY www/ /www/
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
CF
chmod -R a+rX "$ctx"
$PODMAN build --pull=never --quiet --tag "localhost/archy/hello-web:$VERSION" "$ctx" >/dev/null 2>"$work/err" \
  || { cat "$work/err" >&2; exit 1; }
echo "localhost/archy/hello-web:$VERSION"
