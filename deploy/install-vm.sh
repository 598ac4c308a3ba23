#!/usr/bin/env bash
# Install the vvp-edge on a Debian 12 / Ubuntu 22.04+ machine, as root, from a clone of
# this repository:
#
#   deploy/install-vm.sh [--verifier-url URL] [--no-start]
#
#   Kamailio + http_async_client   kamailio/install.sh (the script CI and the image run)
#   /etc/kamailio/kamailio.cfg     the repo's kamailio/kamailio.cfg (previous one kept as .prev)
#   /etc/kamcli/kamcli.ini         kamcli settings (kamcli rpc htable.dump vvp)
#   /opt/vvp-edge/venv             the helper (and the verifier simulator) in its own venv
#   vvp-edge                       system user the helper runs as
#   /etc/vvp-edge/helper.env       helper settings            (created once, never overwritten)
#   /etc/vvp-edge/kamailio.env     Kamailio settings          (created once, never overwritten)
#   /etc/vvp-edge/policy.yaml      the policy, from policy/default.yaml (never overwritten)
#   /etc/systemd/system/vvp-helper.service                     hardened helper unit
#   /etc/systemd/system/kamailio.service.d/vvp-edge.conf       drop-in for Debian's unit
#   /etc/systemd/journald.conf.d/vvp-edge.conf, /etc/logrotate.d/vvp-edge,
#   /etc/rsyslog.d/30-vvp-edge.conf (when rsyslog is installed)
#
# Idempotent: run it again after `git pull` (upgrade) or `git checkout <older tag>`
# (roll back); operator-edited files in /etc/vvp-edge are kept.
#
#   --verifier-url URL   write VVP_VERIFIER_URL into a new helper.env
#   --no-start           install only; do not touch systemd (containers, CI machines)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/vvp-edge
VENV=/opt/vvp-edge/venv
ETC=/etc/vvp-edge
SERVICE_USER=vvp-edge
HELPER_UNIT=/etc/systemd/system/vvp-helper.service
KAMAILIO_DROPIN_DIR=/etc/systemd/system/kamailio.service.d
KAMAILIO_CFG=/etc/kamailio/kamailio.cfg
KAMCLI_INI=/etc/kamcli/kamcli.ini

start=1
verifier_url=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-start) start=0 ;;
        --verifier-url) verifier_url=${2:?--verifier-url needs a URL}; shift ;;
        --verifier-url=*) verifier_url=${1#*=} ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-vm.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[install-vm] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "install-vm.sh: run as root" >&2
    exit 1
fi
if [ ! -r /etc/os-release ]; then
    echo "install-vm.sh: no /etc/os-release; Debian 12 or Ubuntu 22.04+ expected" >&2
    exit 1
fi
# shellcheck source=/dev/null
. /etc/os-release
case "${ID:-}:${VERSION_ID:-}" in
    debian:12*|debian:13*|ubuntu:22.04|ubuntu:24.04|ubuntu:2[4-9].*) ;;
    *) log "warning: ${PRETTY_NAME:-unknown system} is not Debian 12 / Ubuntu 22.04+; trying anyway" ;;
esac
export DEBIAN_FRONTEND=noninteractive

# --- Kamailio, the module, sipp and kamcli: the same script CI and the image run ------
log "Kamailio (kamailio/install.sh)"
bash "$REPO/kamailio/install.sh"

# --- Python >= 3.11 for the helper (Ubuntu 22.04's python3 is 3.10) -------------------
python=
for candidate in python3 python3.13 python3.12 python3.11; do
    path=/usr/bin/$candidate
    if [ -x "$path" ] && "$path" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        python=$path
        break
    fi
done
if [ -z "$python" ]; then
    log "installing python3.11 (the system python3 is older than 3.11)"
    apt-get install -y --no-install-recommends python3.11 python3.11-venv >/dev/null
    python=/usr/bin/python3.11
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing $(basename "$python")-venv"
    apt-get install -y --no-install-recommends "$(basename "$python")-venv" >/dev/null
fi
command -v logrotate >/dev/null || apt-get install -y --no-install-recommends logrotate >/dev/null

# --- the service user -----------------------------------------------------------------
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    log "creating system user $SERVICE_USER"
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin --comment "vvp-edge routing helper" "$SERVICE_USER"
fi

# --- the helper in its own venv -------------------------------------------------------
install -d -m 0755 "$PREFIX"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "creating $VENV ($("$python" --version))"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
fi
# Build from a copy: pip would otherwise leave build/ and *.egg-info in the clone.
stage=$(mktemp -d /tmp/vvp-edge-src.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/helper" "$stage/"
rm -rf "$stage"/helper/*.egg-info
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
log "installing the helper into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "${stage}[fast,redis]"
install -m 0644 "$REPO/README.md" "$PREFIX/README.md"
install -d -m 0755 "$PREFIX/policy-examples"
install -m 0644 "$REPO"/policy/*.yaml "$REPO/policy/README.md" "$PREFIX/policy-examples/"
git -C "$REPO" describe --always --dirty 2>/dev/null > "$PREFIX/VERSION" \
    || "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vvp-edge"))' > "$PREFIX/VERSION"

# --- settings and policy: created once, then the operator's -------------------------------
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
# install_once SRC DEST MODE OWNER:GROUP - never overwrite; leave DEST.dist when SRC differs.
install_once() {
    local src=$1 dest=$2 mode=$3 owner=$4
    if [ -e "$dest" ]; then
        if ! cmp -s "$src" "$dest" && ! same_but_verifier_url "$src" "$dest"; then
            install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dest.dist"
        fi
    else
        log "creating $dest"
        install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dest"
    fi
}
# helper.env differs from its template by the one line --verifier-url writes: that is
# not a template change, so no helper.env.dist for it.
same_but_verifier_url() {
    local src=$1 dest=$2
    [ "$(basename "$dest")" = helper.env ] || return 1
    diff -q <(grep -v '^VVP_VERIFIER_URL=' "$src") <(grep -v '^VVP_VERIFIER_URL=' "$dest") >/dev/null
}
install_once "$REPO/deploy/env/helper.env" "$ETC/helper.env" 0640 "root:$SERVICE_USER"
install_once "$REPO/deploy/env/kamailio.env" "$ETC/kamailio.env" 0640 root:root
install_once "$REPO/policy/default.yaml" "$ETC/policy.yaml" 0640 "root:$SERVICE_USER"
if [ -n "$verifier_url" ]; then
    sed -i "s|^VVP_VERIFIER_URL=.*|VVP_VERIFIER_URL=$verifier_url|" "$ETC/helper.env"
fi
if ! "$VENV/bin/vvp-helper" check "$ETC/policy.yaml" >/dev/null; then
    log "warning: $ETC/policy.yaml has errors (see: $VENV/bin/vvp-helper check $ETC/policy.yaml)"
fi

# --- Kamailio configuration -----------------------------------------------------------------
install -d -m 0755 "$(dirname "$KAMAILIO_CFG")" "$(dirname "$KAMCLI_INI")"
if [ -f "$KAMAILIO_CFG" ] && ! cmp -s "$REPO/kamailio/kamailio.cfg" "$KAMAILIO_CFG"; then
    cp -p "$KAMAILIO_CFG" "$KAMAILIO_CFG.prev"
fi
install -m 0644 "$REPO/kamailio/kamailio.cfg" "$KAMAILIO_CFG"
install -m 0644 "$REPO/kamailio/kamcli.ini" "$KAMCLI_INI"
log "checking $KAMAILIO_CFG"
kamailio -c -f "$KAMAILIO_CFG" >/dev/null 2>&1 || kamailio -c -f "$KAMAILIO_CFG"

# --- systemd units, journald, logrotate -------------------------------------------------
install -d -m 0755 "$KAMAILIO_DROPIN_DIR" /etc/systemd/journald.conf.d /etc/logrotate.d
install -m 0644 "$REPO/deploy/systemd/vvp-helper.service" "$HELPER_UNIT"
install -m 0644 "$REPO/deploy/systemd/kamailio.service.d/vvp-edge.conf" \
    "$KAMAILIO_DROPIN_DIR/vvp-edge.conf"
install -m 0644 "$REPO/deploy/logging/journald-vvp-edge.conf" \
    /etc/systemd/journald.conf.d/vvp-edge.conf
install -m 0644 "$REPO/deploy/logging/logrotate-vvp-edge" /etc/logrotate.d/vvp-edge
install -d -m 0755 /var/log/vvp-edge
if [ -d /etc/rsyslog.d ]; then
    install -m 0644 "$REPO/deploy/logging/rsyslog-vvp-edge.conf" /etc/rsyslog.d/30-vvp-edge.conf
fi

if [ "$start" = 0 ]; then
    log "installed (--no-start: systemd not touched). Version $(cat "$PREFIX/VERSION")"
    exit 0
fi
if ! [ -d /run/systemd/system ]; then
    log "installed; systemd is not running here, so nothing was started (use --no-start to silence)"
    exit 0
fi

systemctl daemon-reload
systemctl try-restart systemd-journald.service || true
if [ -d /etc/rsyslog.d ]; then systemctl try-restart rsyslog.service || true; fi
systemctl enable vvp-helper.service kamailio.service >/dev/null 2>&1
if grep -Eq '^VVP_VERIFIER_URL=.+' "$ETC/helper.env"; then
    systemctl restart vvp-helper.service
else
    log "VVP_VERIFIER_URL is empty in $ETC/helper.env: set it, then systemctl restart vvp-helper"
    log "(until then Kamailio answers every INVITE with its fallback)"
fi
systemctl restart kamailio.service
log "running: $(cat "$PREFIX/VERSION"); status: systemctl status vvp-helper kamailio"
