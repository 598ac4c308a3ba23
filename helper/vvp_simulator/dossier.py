"""What the VVP verifier SIMULATOR pretends a fetched dossier said.

The real verifier fetches the dossier (a graph of ACDC credentials) and reports, besides the
verdict, facts it found there: ToIP compliance warnings, who the issuers are (legal name,
LEI), the signer's KERI delegation chain, the vetter's constraints. The simulator has no
dossier, so these are fixed demo facts in the real answer's shapes (the verifier's
VerifyResponse model: ToIPWarningDetail, IssuerIdentityInfo, DelegationChainResponse,
VetterConstraintInfo). Derived values (SAIDs) are stable per dossier URL, not real digests.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vvp_simulator.keys import SigningKey, b64url_encode

DEMO_LEGAL_NAME = "Acme Bank Ltd"
DEMO_LEI = "5493001KJTIIGC8Y1R12"  # shaped like an ISO 17442 LEI; demo, not registered
# The root the demo signer is delegated from (the organisation's own identifier).
DEMO_ROOT = SigningKey.from_seed_text("vvp-demo-org-root")


def fake_said(*parts: str) -> str:
    """Shaped like a CESR Blake3 SAID ("E" + 43 characters); stable, not content-derived."""
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return "E" + b64url_encode(b"\x00" + digest)[1:]


def toip_warnings(evd: str) -> list[dict[str, Any]]:
    """The two DOSSIER_HAS_ISSUEE warnings the real verifier gives on VVP issuers' dossiers:
    their root ACDC carries an issuee (a.i) and a registry id (ri)."""
    root = fake_said(evd, "root")
    return [
        {
            "code": "DOSSIER_HAS_ISSUEE",
            "message": "Root dossier ACDC has issuee field (a.i)",
            "said": root,
            "field_path": "a.i",
        },
        {
            "code": "DOSSIER_HAS_ISSUEE",
            "message": "Root dossier ACDC has registry ID (ri) field",
            "said": root,
            "field_path": "ri",
        },
    ]


def issuer_identities(evd: str, signer_aid: str) -> dict[str, dict[str, Any]]:
    """AID -> identity, as the verifier derives it from the dossier's legal-entity credential."""
    return {
        signer_aid: {
            "aid": signer_aid,
            "legal_name": DEMO_LEGAL_NAME,
            "lei": DEMO_LEI,
            "source_said": fake_said(evd, "LE"),
            "identity_source": "dossier",
            "credential_role": "issuee",
        }
    }


def delegation_chain(signer_aid: str) -> dict[str, Any]:
    """The signer's delegation chain, leaf first, as the verifier's DelegationChainResponse."""
    root = DEMO_ROOT.aid
    nodes = [signer_aid, root]
    return {
        "chain": [
            {
                "aid": aid,
                "aid_short": f"{aid[:16]}...",
                "display_name": None,
                "is_root": aid == root,
                "authorization_status": "VALID",
            }
            for aid in nodes
        ],
        "depth": len(nodes) - 1,
        "root_aid": root,
        "is_valid": True,
        "errors": [],
    }


def vetter_constraints(evd: str, orig_digits: str, out_of_area: bool) -> dict[str, Any]:
    """credential SAID -> VetterConstraintInfo for the dossier's TN credential."""
    target = orig_digits[:2]
    said = fake_said(evd, "TN")
    return {
        said: {
            "credential_said": said,
            "credential_type": "TN",
            "vetter_certification_said": fake_said(evd, "VetterCert"),
            "constraint_type": "jurisdiction",
            "target_value": target,
            "allowed_values": ["ZZ"] if out_of_area else [target],
            "is_authorized": not out_of_area,
            "reason": "vetter not certified for this jurisdiction (simulated)"
            if out_of_area
            else "vetter certified for this jurisdiction (simulated)",
        }
    }
