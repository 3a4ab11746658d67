#!/usr/bin/env bash
# Builds the sample app's image locally (no registry needed): a busybox-static root filesystem
# plus this folder's www/, imported as localhost/archy/hello-web:VERSION.
#   bash apps/hello-web/build.sh [VERSION]
# PODMAN overrides the podman command, e.g. "runuser -u archy -- env XDG_RUNTIME_DIR=/tmp/archy-run podman".
set -euo pipefail
VERSION="${1:-1.0.0}"
PODMAN="${PODMAN:-podman}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || { echo "busybox-static is missing (apt-get install busybox-static)" >&2; exit 1; }

work="$(mktemp -d /tmp/archy-hello-web.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,etc,tmp,www,proc,sys,dev,run}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
sed "s/<\/h1>/ (version $VERSION)<\/h1>/" "$HERE/www/index.html" >"$root/www/index.html"
chmod -R a+rX "$root"
tar -C "$root" -cf "$work/rootfs.tar" .
chmod a+r "$work/rootfs.tar"
chmod a+rx "$work"
$PODMAN import --change 'CMD ["/bin/busybox","httpd","-f","-p","8080","-h","/www"]' \
  "$work/rootfs.tar" "localhost/archy/hello-web:$VERSION" >/dev/null 2>"$work/err" \
  || { cat "$work/err" >&2; exit 1; }
echo "localhost/archy/hello-web:$VERSION"
