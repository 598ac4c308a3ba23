"""Decision requests as Kamailio sends them, and a Decider built for a test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from vvp_helper.decision import CallRequest, Decider
from vvp_helper.sip.identity import PrecheckSettings
from vvp_helper.verifier.client import VerifierClient

ORIG = "+441923311001"
DEST = "+441923311006"
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policy" / "default.yaml"


def kamailio_body(**overrides: object) -> dict[str, object]:
    """A decision request exactly as kamailio.cfg route[ASK_HELPER] builds it."""
    body: dict[str, object] = {
        "method": "INVITE",
        "request_uri": f"sip:{DEST}@edge.example",
        "from_uri": f"sip:{ORIG}@caller.example",
        "to_uri": f"sip:{DEST}@edge.example",
        "call_id": "a84b4c76e66710@pc33.example",
        "cseq": 314159,
        "source_ip": "192.0.2.10",
        "source_port": 5060,
        "transport": "udp",
        "received_at": 1_700_000_000.123456,
        "from_name": '"Acme Bank"',
        "identity": [],
        "p_vvp_identity": [],
        "p_vvp_passport": [],
    }
    body.update(overrides)
    return body


def call(**overrides: object) -> CallRequest:
    """A call Kamailio received just now (unless ``received_at`` says otherwise)."""
    return CallRequest.from_json(kamailio_body(**{"received_at": time.time(), **overrides}))


def decider(
    verifier: object | None = None, deadline: float = 2.0, max_queue_wait: float = 0.0
) -> Decider:
    return Decider(
        verifier=cast(VerifierClient | None, verifier),
        precheck=PrecheckSettings(),
        deadline=deadline,
        max_queue_wait=max_queue_wait,
    )
