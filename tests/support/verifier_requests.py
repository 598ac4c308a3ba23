"""What the helper's verifier client sends: a VerifyRequest for a minted identity."""

from __future__ import annotations

from datetime import UTC, datetime

from vvp_helper.verifier.client import VerifyRequest
from vvp_simulator.passport import MintedIdentity, mint

ORIG = "+441923311001"
DEST = "+441923311006"


def request_for(
    minted: MintedIdentity, from_number: str = ORIG, call_id: str = "call-1@edge"
) -> VerifyRequest:
    """The request the helper sends for ``minted``, as if the call arrived just now."""
    now = datetime.now(UTC).isoformat()
    return VerifyRequest(
        vvp_identity=minted.vvp_identity,
        passport_jwt=minted.passport_jwt,
        call_id=call_id,
        received_at=now,
        from_uri=f"sip:{from_number}@carrier.example",
        to_uri=f"sip:{DEST}@carrier.example",
        invite_time=now,
        cseq=1,
    )


def valid_request(call_id: str = "call-1@edge") -> VerifyRequest:
    """The request for a freshly minted valid identity."""
    return request_for(mint("valid", ORIG, DEST), call_id=call_id)
