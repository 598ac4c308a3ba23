#!/bin/sh
# Offer a steady call rate to the edge with sipp, each call with a fresh identity.
#
#   VVP_LOAD_TARGET     host:port of Kamailio                                   kamailio:5060
#   VVP_LOAD_RATE       calls per second                                        50
#   VVP_LOAD_CALLS      calls in all                                            1000
#   VVP_LOAD_KINDS      identity kinds, comma-separated (vvp-simulator mint --kind)  valid
#   VVP_LOAD_EXPECT     the SIP answers that count, comma-separated; any other final
#                       answer, or Kamailio's own fallback (the helper did not decide),
#                       fails the call                                          302
#   VVP_LOAD_TRANSPORT  sipp -t: u1 (UDP) or t1 (TCP)                           u1
#   VVP_LOAD_CHUNK      seconds of calls minted at a time                       10
#   VVP_LOAD_TIMEOUT    seconds before sipp gives up on a chunk                 600
# Extra arguments go to sipp. Exit code: 0 when every call got an expected answer, else
# the first failing chunk's sipp exit code.
#
# Why chunks: the verifier accepts a PASSporT only within 30 s of its iat, so identities
# minted all at once go stale in a long run and get 403 CONTEXT_MISMATCH. Each chunk is
# minted just before sipp sends it (as tests/load/ramp.py signs each step), so no call
# carries an identity older than VVP_LOAD_CHUNK seconds plus its own wait.
set -eu
target=${VVP_LOAD_TARGET:-kamailio:5060}
rate=${VVP_LOAD_RATE:-50}
calls=${VVP_LOAD_CALLS:-1000}
kinds=${VVP_LOAD_KINDS:-valid}
expect=${VVP_LOAD_EXPECT:-302}
transport=${VVP_LOAD_TRANSPORT:-u1}
chunk_seconds=${VVP_LOAD_CHUNK:-10}
timeout=${VVP_LOAD_TIMEOUT:-600}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PYTHONPATH=/opt/vvp-load python - "$work/load.xml" "$expect" <<'PY'
import sys
from pathlib import Path

from sipp_scenarios import invite_any_final

path, expect = Path(sys.argv[1]), [int(code) for code in sys.argv[2].split(",")]
scenario = invite_any_final(path, csv=True, finals=expect)
# Kamailio's own fallback (helper down, late or unreachable) fails the call, whatever
# its code: it is not the edge deciding.
check = (
    '<action><ereg regexp="X-VVP-Edge-Fallback" search_in="msg" check_it_inverse="true"'
    ' assign_to="fallback"/></action>'
)
text = scenario.read_text()
text = text.replace(f'<recv response="{expect[-1]}" next="ack"/>',
                    f'<recv response="{expect[-1]}" next="ack">{check}</recv>')
for code in expect[:-1]:
    text = text.replace(f'<recv response="{code}" optional="true" next="ack"/>',
                        f'<recv response="{code}" optional="true" next="ack">{check}</recv>')
# sipp wants every variable used twice: the ereg sets it, this references it.
text = text.replace("</scenario>", '  <Reference variables="fallback"/>\n</scenario>')
path.write_text(text)
PY
per_chunk=$(awk -v r="$rate" -v s="$chunk_seconds" 'BEGIN { n = int(r * s); print (n < 1 ? 1 : n) }')
echo "vvp-load: $calls calls at $rate/s to $target ($transport), kinds $kinds, expecting $expect" >&2
# A run of its own: Call-IDs and Via (sipp's branch counts from 1 in every run, and the
# container's address and pid repeat) would otherwise match the transactions of a run a
# few seconds earlier, which Kamailio still holds and answers from (their old reply).
run_id=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
left=$calls
status=0
while [ "$left" -gt 0 ]; do
    n=$per_chunk
    [ "$n" -le "$left" ] || n=$left
    local_port=$((20000 + (run_id + left) % 40000))
    vvp-simulator mint-csv --out "$work/ids.csv" --count "$n" --kind "$kinds" \
        --orig +441923311001 --dest +441923311006 2>/dev/null
    code=0
    sipp "$target" -sf "$work/load.xml" -inf "$work/ids.csv" \
        -m "$n" -r "$rate" -t "$transport" -nostdin \
        -cid_str "%u-%p-$run_id-$left@%s" -p "$local_port" \
        -timeout "${timeout}s" -timeout_error "$@" >"$work/sipp.out" 2>&1 || code=$?
    if [ "$code" != 0 ]; then
        echo "vvp-load: a chunk of $n calls failed (sipp exit $code): some answer was not $expect" >&2
        tail -n 25 "$work/sipp.out" >&2
        [ "$status" != 0 ] || status=$code
    fi
    left=$((left - n))
done
if [ "$status" = 0 ]; then
    echo "vvp-load: all $calls calls answered $expect" >&2
fi
exit "$status"
