#!/usr/bin/env bash
# Install Kamailio (Debian packages) plus the http_async_client module that Debian does
# not package, built from the Debian source package of the *installed* Kamailio version so
# the module's ABI matches the binary that loads it.
#
# Used unchanged by .ci/run, docker/kamailio.Dockerfile and the VM install, so the three
# cannot drift. Idempotent: a second run only checks that everything is in place.
#
#   kamailio/install.sh            install Kamailio, modules, sipp, kamcli
#   KAMAILIO_SKIP_TOOLS=1 ...      skip sipp/kamcli (production images that do not load-test)
set -euo pipefail

MODULE=http_async_client
export DEBIAN_FRONTEND=noninteractive

log() { printf '[kamailio/install] %s\n' "$*" >&2; }

apt_install() {
    apt-get install -y --no-install-recommends "$@" >/dev/null
}

if [ "$(id -u)" != 0 ]; then
    echo "kamailio/install.sh: must run as root (apt-get)" >&2
    exit 1
fi

log "apt-get update"
apt-get update >/dev/null

# jansson (JSON building), xhttp/xhttp_prom (metrics), htable, pike live in the extra/json sets.
log "installing Kamailio packages"
apt_install kamailio kamailio-json-modules kamailio-extra-modules kamailio-utils-modules
if [ -z "${KAMAILIO_SKIP_TOOLS:-}" ]; then
    apt_install sip-tester kamcli
fi

# Our patches to the module (kamailio/patches/, each says why). Their checksum is part of
# the build stamp, so changing a patch rebuilds the module on the next run.
patchdir=$(cd "$(dirname "$0")" && pwd)/patches
patches=("$patchdir/$MODULE"-*.patch)
version=$(dpkg-query -W -f='${Version}' kamailio)
build="$version+$(cat "${patches[@]}" | sha256sum | cut -c1-12)"
moddir=$(dirname "$(dpkg -L kamailio | grep -m1 '/modules/tm.so$')")
if [ -f "$moddir/$MODULE.so" ] && [ -f "$moddir/.${MODULE}.version" ] \
        && [ "$(cat "$moddir/.${MODULE}.version")" = "$build" ]; then
    log "$MODULE already built for kamailio $version in $moddir"
    exit 0
fi

log "building $MODULE for kamailio $version"
apt_install dpkg-dev build-essential bison flex pkg-config patch \
    libcurl4-openssl-dev libevent-dev libssl-dev

# deb-src for the same suites the binary came from.
if ! grep -rqs '^deb-src\|^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding deb-src entries"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            > /etc/apt/sources.list.d/debian-src.sources
    else
        grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            > /etc/apt/sources.list.d/debian-src.list
    fi
    apt-get update >/dev/null
fi

workdir=$(mktemp -d /tmp/kamailio-src.XXXXXX)
trap 'rm -rf "$workdir"' EXIT
cd "$workdir"
log "fetching source package kamailio=$version"
apt-get source --download-only "kamailio=$version" >/dev/null 2>&1
dpkg-source --no-check -x ./*.dsc src >/dev/null
for p in "${patches[@]}"; do
    log "applying $(basename "$p")"
    patch -d src -p1 --forward --quiet < "$p"
done
cd src/src
# Only the core's generated config and the one module: a full build takes ten times longer.
make cfg include_modules="$MODULE" PREFIX=/usr >/dev/null
make -C "modules/$MODULE" >/dev/null 2>&1 || make -C "modules/$MODULE"
install -m 0644 "modules/$MODULE/$MODULE.so" "$moddir/$MODULE.so"
echo "$build" > "$moddir/.${MODULE}.version"
log "installed $moddir/$MODULE.so"
