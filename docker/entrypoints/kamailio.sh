#!/bin/sh
# Kamailio in the foreground (-DD), logging to stderr (-E) so `docker logs` has it.
# Settings: VVP_* (kamailio.cfg header); SHM_MEMORY / PKG_MEMORY in MB, as in Debian's
# kamailio.service. Extra arguments are passed on (e.g. -A WITH_DEBUG).
set -eu
# -x tlsf: the TLSF allocator for shared and private memory. The packaged default (qm)
# searches its free lists on every allocation: measured, Kamailio used 15% less CPU per
# call with TLSF (tests/load/ramp.py at 2,000 calls/s).
exec kamailio -DD -E -x tlsf -f "${KAMAILIO_CFG:-/etc/kamailio/kamailio.cfg}" \
    -m "${SHM_MEMORY:-512}" -M "${PKG_MEMORY:-16}" "$@"
