"""What the VVP verifier SIMULATOR pretends a fetched dossier said.

The real verifier fetches the dossier (a graph of ACDC credentials) and reports, besides the
verdict, facts it found there: ToIP compliance warnings, who the issuers are (legal name,
LEI), the signer's KERI delegation chain, the vetter's constraints. The simulator has no
dossier, so these are fixed demo facts in the real answer's shapes (the verifier's
VerifyResponse model: ToIPWarningDetail, IssuerIdentityInfo, DelegationChainResponse,
VetterConstraintInfo). Derived values (SAIDs) are stable per dossier URL, not real digests.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from vvp_simulator.keys import SigningKey, b64url_encode

DEMO_LEGAL_NAME = "Acme Bank Ltd"
DEMO_LEI = "5493001KJTIIGC8Y1R12"  # shaped like an ISO 17442 LEI; demo, not registered
# The root the demo signer is delegated from (the organisation's own identifier).
DEMO_ROOT = SigningKey.from_seed_text("vvp-demo-org-root")


# About ten per verification, for a handful of dossiers: derived once (a third of the
# verdict's CPU otherwise).
@functools.lru_cache(maxsize=8192)
def fake_said(*parts: str) -> str:
    """Shaped like a CESR Blake3 SAID ("E" + 43 characters); stable, not content-derived."""
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return "E" + b64url_encode(b"\x00" + digest)[1:]


# The demo trust chain: a qualified vLEI issuer (QVI) vouches for the organisation; the
# root of trust is the GLEIF stand-in. AIDs shaped like KERI self-addressing identifiers.
DEMO_QVI_AID = fake_said("vvp-demo-qvi")
DEMO_QVI_LEI = "5493MOCK0QVI0000000"  # as the VVP stack's mock QVI writes it
DEMO_TRUST_ROOT = fake_said("vvp-demo-gleif")
# The jurisdiction the demo brand credential asserts, and its vetter's certification.
DEMO_BRAND_COUNTRY = "GBR"
DEMO_VETTER_TARGETS = ["GBR", "USA"]
OUT_OF_AREA_TARGETS = ["FRA"]


def root_said(evd: str) -> str:
    """The dossier's root credential (in VVP issuers' dossiers, the brand credential)."""
    return fake_said(evd, "root")


def toip_warnings(evd: str) -> list[dict[str, Any]]:
    """The two DOSSIER_HAS_ISSUEE warnings the real verifier gives on VVP issuers' dossiers:
    their root ACDC carries an issuee (a.i) and a registry id (ri)."""
    root = root_said(evd)
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
    """AID -> identity, as the verifier derives them from the dossier's legal-entity
    credentials: the QVI's (no legal name in the VVP stack's mock) and the organisation's."""
    return {
        DEMO_QVI_AID: {
            "aid": DEMO_QVI_AID,
            "legal_name": None,
            "lei": DEMO_QVI_LEI,
            "source_said": fake_said(evd, "QVI"),
            "identity_source": "dossier",
            "credential_role": "issuee",
        },
        signer_aid: {
            "aid": signer_aid,
            "legal_name": DEMO_LEGAL_NAME,
            "lei": DEMO_LEI,
            "source_said": fake_said(evd, "LE"),
            "identity_source": "dossier",
            "credential_role": "issuee",
        },
    }


def delegation_chain(signer_aid: str) -> dict[str, Any]:
    """The signer's delegation chain, leaf first, as the verifier's DelegationChainResponse
    (the verifier gives it only for a delegated signer; null otherwise)."""
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


def vetter_constraints(evd: str, out_of_area: bool) -> dict[str, Any]:
    """credential SAID -> VetterConstraintInfo for the dossier's brand credential."""
    said = root_said(evd)
    country = DEMO_BRAND_COUNTRY
    targets = OUT_OF_AREA_TARGETS if out_of_area else DEMO_VETTER_TARGETS
    reason = (
        f"Brand assertion country {country} not in vetter jurisdiction targets {targets}"
        if out_of_area
        else f"Jurisdiction authorized: {country} in vetter targets"
    )
    return {
        said: {
            "credential_said": said,
            "credential_type": "Brand",
            "vetter_certification_said": fake_said(evd, "VetterCert"),
            "constraint_type": "jurisdiction",
            "target_value": country,
            "allowed_values": list(targets),
            "is_authorized": not out_of_area,
            "reason": reason,
        }
    }


# Evidence strings in the verifier's formats (SAIDs shortened as it shortens them).


def dossier_evidence(evd: str) -> list[str]:
    return [f"fetched={evd[:40]}...", f"dag_valid,root={root_said(evd)}", "toip_warnings=2"]


def chain_evidence(evd: str) -> list[str]:
    return ["leaves=1", f"chain_valid:{root_said(evd)[:12]}...,root={DEMO_TRUST_ROOT[:12]}..."]


def revocation_evidence(evd: str) -> list[str]:
    names = ("QVI", "LE", "VetterCert", "TNAlloc", "root")
    saids = [fake_said(evd, n) if n != "root" else root_said(evd) for n in names]
    active = [f"active:{said[:16]}...|revocation_source:dossier" for said in saids]
    return [*active, f"checked:{len(saids)},inline:{len(saids)},queried:0"]


def party_evidence(evd: str, signer_aid: str) -> list[str]:
    return [f"ape_said:{root_said(evd)[:16]}...", f"issuee_match:{signer_aid[:16]}..."]


def tn_rights_evidence(evd: str, signer_aid: str, orig_tn: str) -> list[str]:
    return [
        f"tnalloc_said:{fake_said(evd, 'TNAlloc')[:16]}...",
        f"issuee_match:{signer_aid[:16]}...",
        f"orig_tn:{orig_tn}",
        "covered:true",
    ]


def brand_evidence(evd: str) -> list[str]:
    return [
        f"brand_credential:{root_said(evd)[:16]}...",
        "card.org:matched",
        "card.nickname:matched",
        "card.logo:matched",
        f"jl_valid:le\u2192{fake_said(evd, 'LE')[:12]}...",
    ]
