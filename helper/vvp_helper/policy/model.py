"""A compiled policy: what the edge answers for a call, decided in memory.

``load.py`` reads and validates the YAML file; this module is what it builds: scoped
``rules`` tried first (first match wins), then one ``Action`` per outcome. Everything is
compiled once per load, so a call only matches and renders.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from vvp_helper.policy.template import Template

OUTCOMES = ("valid", "warning", "invalid", "indeterminate", "error", "missing")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: What a template may read. Every name is documented in policy/README.md.
TEMPLATE_VARIABLES = frozenset(
    {
        "orig",  # calling number (From), digits and leading +
        "orig_tn",  # the number the PASSporT signed, E.164 with +; only when VALID/WARNING
        "dest",  # called number (To)
        "call_id",
        "request_id",  # the verifier's request id ("" when it was not asked)
        "status",  # VALID / INVALID / INDETERMINATE / WARNING / ERROR / MISSING
        "outcome",  # valid / invalid / ... (the policy section that applied)
        "verstat",  # TS 24.229 verstat: TN-Validation-Passed / -Failed / No-TN-Validation
        "errors",  # list of {code, message}; "{errors}" renders the codes
        "claims",  # the verifier's claim tree; "{claims}" renders name=status pairs
        "failed_claims",  # every non-VALID claim, flat: name=STATUS (reason)
        "reason",  # why not VALID: the claim tree's reason, else the first error's message
        "reason_claim",  # the claim that {reason} comes from ("" if from an error)
        "brand_name",
        "brand_logo_url",  # http(s) only
        "brand_logo_hash",  # the logo's hash from the card (a Blake3 SAID, E...)
        "revocation_pending",  # true / false
        "signer_legal_name",  # the signer's organisation, from the dossier
        "signer_lei",
        "toip_warnings",  # ToIP dossier warnings; "{toip_warnings}" renders their codes
        "delegation_depth",  # delegation levels above the signer (0: not delegated)
        "signer_aid",
        "certainty",
        "vetter_status",  # PASS / FAIL-ECC / FAIL-JURISDICTION / FAIL-ECC-JURISDICTION / ...
        "vetter_warning_reason",
        "from_uri",
        "to_uri",
        "from_name",
        "source_ip",
        "trunk",  # the trunk the source address belongs to (policy "trunks"), or ""
        "rule",  # the name of the rule or section that decided
    }
)

#: TS 24.229 / ATIS-1000074 verstat value per outcome.
VERSTAT = {
    "valid": "TN-Validation-Passed",
    "warning": "TN-Validation-Passed",
    "invalid": "TN-Validation-Failed",
    "indeterminate": "No-TN-Validation",
    "error": "No-TN-Validation",
    "missing": "No-TN-Validation",
}


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What rules can match on, worked out once per call."""

    outcome: str
    source_ip: IPAddress | None = None
    trunk: str | None = None
    calling: str = ""  # number, digits only
    called: str = ""
    error_codes: frozenset[str] = frozenset()
    claims: Mapping[str, str] = field(default_factory=dict)  # claim name -> status
    # From the verifier's answer; None / empty when there is no verdict.
    revocation_pending: bool | None = None
    brand_logo_hashed: bool | None = None
    signer_lei: str | None = None
    signer_legal_name: str | None = None
    toip_warnings: frozenset[str] = frozenset()  # codes
    delegation_depth: int | None = None


@dataclass(frozen=True, slots=True)
class Instruction:
    """What Kamailio is told to answer. ``contact`` only for 3xx."""

    code: int
    reason: str
    contact: str | None
    headers: tuple[tuple[str, str], ...]
    #: The rule or section that produced it, for logs and ``explain``.
    rule: str = ""

    def header_block(self) -> str:
        """The headers as the CRLF-terminated block Kamailio appends verbatim."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.headers)


@dataclass(frozen=True, slots=True)
class Action:
    """One compiled policy section or rule action."""

    section: str
    kind: str  # "redirect" | "reject"
    code: int
    reason: str
    destination: Template | None
    headers: tuple[tuple[str, Template], ...]
    #: Add ``Reason: SIP ;cause=<code> ;text="<reason>"`` (RFC 3326), as RFC 8224 suggests.
    reason_header: bool = False
    #: Every variable its templates read, worked out once per load: the decision builds
    #: the costlier ones (``failed_claims``) only for an action that reads them.
    variables: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        templates = [t for _, t in self.headers]
        if self.destination is not None:
            templates.append(self.destination)
        used = frozenset().union(*(t.variables for t in templates))
        object.__setattr__(self, "variables", used)

    def render(self, context: Mapping[str, object]) -> Instruction:
        contact = None
        if self.destination is not None:
            contact = _uri_safe(self.destination.render(context))
        headers = []
        for name, template in self.headers:
            # A header whose placeholders all render empty (no errors, no logo) is left
            # out rather than sent empty or half-built.
            value = template.render_unless_empty(context)
            if value:
                headers.append((name, value))
        if self.reason_header:
            text = self.reason.replace('"', "'")
            headers.append(("Reason", f'SIP ;cause={self.code} ;text="{text}"'))
        return Instruction(self.code, self.reason, contact, tuple(headers), self.section)


@dataclass(frozen=True, slots=True)
class Match:
    """A rule's conditions: every condition given must hold; a list means any of."""

    networks: tuple[IPNetwork, ...] = ()
    trunks: frozenset[str] = frozenset()
    outcomes: frozenset[str] = frozenset()
    called_prefixes: tuple[str, ...] = ()
    calling_prefixes: tuple[str, ...] = ()
    error_codes: frozenset[str] = frozenset()
    claims: tuple[tuple[str, frozenset[str]], ...] = ()
    revocation_pending: bool | None = None
    brand_logo_hash: bool | None = None  # True: the verifier gave a hash; False: it did not
    signer_leis: frozenset[str] = frozenset()
    signer_legal_names: frozenset[str] = frozenset()  # compared case-insensitively
    toip_warnings: frozenset[str] = frozenset()
    delegation_depth: tuple[int | None, int | None] = (None, None)  # min, max (inclusive)

    def matches(self, facts: CallFacts) -> bool:
        if self.outcomes and facts.outcome not in self.outcomes:
            return False
        if self.networks and (
            facts.source_ip is None or not any(facts.source_ip in n for n in self.networks)
        ):
            return False
        if self.trunks and facts.trunk not in self.trunks:
            return False
        if self.called_prefixes and not facts.called.startswith(self.called_prefixes):
            return False
        if self.calling_prefixes and not facts.calling.startswith(self.calling_prefixes):
            return False
        if self.error_codes and not (self.error_codes & facts.error_codes):
            return False
        if not self._verdict_facts_match(facts):
            return False
        return all(facts.claims.get(name) in statuses for name, statuses in self.claims)

    def _verdict_facts_match(self, facts: CallFacts) -> bool:
        # A call without a verdict (error, missing, pre-check) has none of these facts and
        # matches no condition on them, as with claims.
        if self.revocation_pending is not None and (
            facts.revocation_pending is not self.revocation_pending
        ):
            return False
        if self.brand_logo_hash is not None and (
            facts.brand_logo_hashed is not self.brand_logo_hash
        ):
            return False
        if self.signer_leis and facts.signer_lei not in self.signer_leis:
            return False
        if self.signer_legal_names and (
            facts.signer_legal_name is None
            or facts.signer_legal_name.casefold() not in self.signer_legal_names
        ):
            return False
        if self.toip_warnings and not (self.toip_warnings & facts.toip_warnings):
            return False
        low, high = self.delegation_depth
        if low is not None or high is not None:
            depth = facts.delegation_depth
            if depth is None or (low is not None and depth < low):
                return False
            if high is not None and depth > high:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    action: Action


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    sha256: str
    actions: Mapping[str, Action]
    rules: tuple[Rule, ...] = ()
    trunks: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()
    #: Whether any rule looks at the verifier's claims (CallFacts.claims): worked out
    #: once per load, like the rest, not on every call.
    matches_claims: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matches_claims", any(r.match.claims for r in self.rules))

    def action_for(self, outcome: str) -> Action:
        """The default section for an outcome (ignoring rules)."""
        return self.actions[outcome]

    def select(self, facts: CallFacts) -> Action:
        """First matching rule, else the outcome's section."""
        for rule in self.rules:
            if rule.match.matches(facts):
                return rule.action
        return self.actions[facts.outcome]

    def trunk_of(self, address: IPAddress | None) -> str | None:
        if address is None:
            return None
        for name, networks in self.trunks:
            if any(address in network for network in networks):
                return name
        return None


def digits(number: str) -> str:
    """A number as prefixes are compared: without its leading + (E.164 either way)."""
    return number.lstrip("+")


def _uri_safe(uri: str) -> str:
    # Kamailio writes the Contact as <uri>: characters that would close the brackets or
    # start a new token are dropped, and so is anything outside printable ASCII (a SIP
    # URI carries other characters %-escaped; Unicode spaces would split it).
    return _URI_UNSAFE.sub("", uri)


# Everything outside printable ASCII ("!".."~"), and the three that end a <uri>.
_URI_UNSAFE = re.compile(r'[^!-~]|[<>"]')
