#!/bin/sh
# Offer a steady call rate to the edge with sipp, each call with a fresh identity.
#
#   VVP_LOAD_TARGET   host:port of Kamailio          kamailio:5060
#   VVP_LOAD_RATE     calls per second               50
#   VVP_LOAD_CALLS    calls in all                   1000
#   VVP_LOAD_KINDS    identity kinds, comma-separated (vvp-simulator mint --kind)  valid
#   VVP_LOAD_TRANSPORT  sipp -t: u1 (UDP) or t1 (TCP)  u1
#   VVP_LOAD_TIMEOUT  seconds before sipp gives up  600
# Extra arguments go to sipp. Exit code: sipp's (0 = every call got an answer in time).
set -eu
target=${VVP_LOAD_TARGET:-kamailio:5060}
rate=${VVP_LOAD_RATE:-50}
calls=${VVP_LOAD_CALLS:-1000}
kinds=${VVP_LOAD_KINDS:-valid}
transport=${VVP_LOAD_TRANSPORT:-u1}
timeout=${VVP_LOAD_TIMEOUT:-600}
work=$(mktemp -d)
vvp-simulator mint-csv --out "$work/ids.csv" --count "$calls" --kind "$kinds" \
    --orig +441923311001 --dest +441923311006
PYTHONPATH=/opt/vvp-load python -c "
import sys
from pathlib import Path
from sipp_scenarios import invite_any_final
invite_any_final(Path(sys.argv[1]), csv=True)
" "$work/load.xml"
echo "vvp-load: $calls calls at $rate/s to $target ($transport), kinds $kinds" >&2
exec sipp "$target" -sf "$work/load.xml" -inf "$work/ids.csv" \
    -m "$calls" -r "$rate" -t "$transport" -nostdin \
    -timeout "${timeout}s" -timeout_error "$@"
