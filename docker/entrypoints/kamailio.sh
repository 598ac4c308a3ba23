#!/bin/sh
# Kamailio in the foreground (-DD), logging to stderr (-E) so `docker logs` has it.
# Settings: VVP_* (kamailio.cfg header); SHM_MEMORY / PKG_MEMORY in MB, as in Debian's
# kamailio.service. Extra arguments are passed on (e.g. -A WITH_DEBUG).
set -eu
exec kamailio -DD -E -f "${KAMAILIO_CFG:-/etc/kamailio/kamailio.cfg}" \
    -m "${SHM_MEMORY:-256}" -M "${PKG_MEMORY:-16}" "$@"
