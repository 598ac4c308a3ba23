"""Reading and validating policy files: YAML -> a compiled ``model.Policy``.

The minimal format (four outcome sections, redirect or reject), read unchanged::

    policies:
      on_valid:                      # one section per outcome
        action: redirect             # redirect | reject
        destination_template: "sip:{dest}@verified.carrier.example"
        headers: {X-VVP-Status: VALID}
      on_invalid:
        action: reject
        reason_code: 403
        reason_phrase: "Forbidden - VVP Verification Failed"

Extensions, all optional: ``on_warning`` (absent -> ``on_valid``'s action), ``on_missing``
(absent -> ``on_indeterminate``'s), ``reason_header``, RFC 8224 codes by name, ``trunks``
(name -> source addresses) and ``rules`` (scoped actions, first match wins, tried before
the sections). policy/README.md documents every key.

The loader reads YAML *nodes*, not plain data, so every problem carries file:line:column
(as Prometheus' rulefmt does), and it reports all problems at once, sorted by position.
Warnings (legal, but probably not meant) are kept apart from errors.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from vvp_helper.errors import PolicyError, PolicyProblem
from vvp_helper.policy.model import (
    OUTCOMES,
    TEMPLATE_VARIABLES,
    Action,
    Instruction,
    IPNetwork,
    Match,
    Policy,
    Rule,
    digits,
)
from vvp_helper.policy.template import Template, TemplateError, compile_template, is_header_name

__all__ = [
    "OUTCOMES",
    "TEMPLATE_VARIABLES",
    "Action",
    "Instruction",
    "LoadedPolicy",
    "Policy",
    "load_policy",
    "parse_policy",
    "read_policy",
]

REQUIRED_SECTIONS = ("on_valid", "on_invalid", "on_indeterminate", "on_error")
#: Where an outcome without a section of its own borrows its action from.
SECTION_FALLBACK = {"warning": "valid", "missing": "indeterminate"}

TOP_KEYS = ("policies", "rules", "trunks")
ACTION_KEYS = (
    "action",
    "destination_template",
    "reason_code",
    "reason_phrase",
    "reason_header",
    "headers",
)
RULE_KEYS = ("name", "match", *ACTION_KEYS)
MATCH_KEYS = (
    "source",
    "trunk",
    "outcome",
    "called_prefix",
    "calling_prefix",
    "error_code",
    "claim",
    "revocation_pending",
    "brand_logo_hash",
    "signer_lei",
    "signer_legal_name",
    "toip_warning",
    "delegation_depth",
)
CLAIM_STATUSES = ("VALID", "INVALID", "INDETERMINATE")
#: Headers the edge sets itself; a policy adding them would break the SIP answer.
RESERVED_HEADERS = frozenset(
    {"contact", "via", "call-id", "cseq", "from", "to", "content-length", "max-forwards"}
)

#: Reason phrases used when a section gives a code but no phrase (RFC 3261, RFC 8224).
DEFAULT_REASONS = {
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    428: "Use Identity Header",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
    607: "Unwanted",
    608: "Rejected",
}

#: Codes an operator may write by name (RFC 8224 section 6.2.2 and common ones).
NAMED_CODES = {
    "moved-temporarily": 302,
    "forbidden": 403,
    "use-identity-header": 428,
    "bad-identity-info": 436,
    "unsupported-credential": 437,
    "invalid-identity-header": 438,
    "temporarily-unavailable": 480,
    "service-unavailable": 503,
    "decline": 603,
    "unwanted": 607,
    "rejected": 608,
}

_PREFIX = re.compile(r"\+?[0-9]{1,15}")
_INT_TAG = "tag:yaml.org,2002:int"
_BOOL_TAG = "tag:yaml.org,2002:bool"


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy that loaded, with the warnings found on the way."""

    policy: Policy
    warnings: tuple[PolicyProblem, ...]


def load_policy(path: str | Path) -> Policy:
    """Read, validate and compile a policy file; ``PolicyError`` lists every problem."""
    return read_policy(path).policy


def read_policy(path: str | Path) -> LoadedPolicy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyProblem(str(path), 0, 0, "unreadable", str(exc))]) from None
    return _Loader(text, str(path)).load()


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    return _Loader(text, source).load().policy


class _Loader:
    """One file's validation: collects every problem at its YAML position."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[PolicyProblem] = []
        self.trunk_names: set[str] = set()

    # -- problem reporting -------------------------------------------------------------

    def error(self, node: yaml.Node | None, code: str, message: str) -> None:
        self._add(node, code, message, "error")

    def warn(self, node: yaml.Node | None, code: str, message: str) -> None:
        self._add(node, code, message, "warning")

    def _add(self, node: yaml.Node | None, code: str, message: str, severity: str) -> None:
        line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (0, 0)
        self.problems.append(PolicyProblem(self.source, line, column, code, message, severity))

    def errors(self) -> list[PolicyProblem]:
        return [p for p in self.problems if p.severity == "error"]

    # -- the file ----------------------------------------------------------------------

    def load(self) -> LoadedPolicy:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            reason = getattr(exc, "problem", None) or str(exc)
            problem = PolicyProblem(self.source, line, column, "yaml-syntax", reason)
            raise PolicyError([problem]) from None

        if not isinstance(root, yaml.MappingNode):
            self.error(root, "not-a-mapping", "a policy is a mapping with a 'policies' key")
            raise PolicyError(self.problems)

        top = self.mapping(root)
        self.unknown_keys(top, TOP_KEYS, "key")
        trunks = self.trunks(top["trunks"][1]) if "trunks" in top else ()
        actions = self.sections(top.get("policies", (None, None))[1], root)
        rules = self.rules(top["rules"][1]) if "rules" in top else ()

        if self.errors():
            raise PolicyError(self.problems)
        for outcome, borrowed in SECTION_FALLBACK.items():
            actions.setdefault(outcome, actions[borrowed])
        digest = hashlib.sha256(self.text.encode("utf-8")).hexdigest()
        policy = Policy(self.source, digest, actions, tuple(rules), tuple(trunks))
        warnings = sorted(self.problems, key=lambda p: (p.line, p.column))
        return LoadedPolicy(policy, tuple(warnings))

    def sections(self, node: yaml.Node | None, root: yaml.Node) -> dict[str, Action]:
        if node is None:
            self.error(root, "missing-key", "'policies' is required")
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "not-a-mapping", "'policies' must be a mapping of sections")
            return {}
        sections = self.mapping(node)
        known = [f"on_{o}" for o in OUTCOMES]
        self.unknown_keys(sections, known, "section")
        for required in REQUIRED_SECTIONS:
            if required not in sections:
                self.error(node, "missing-section", f"section {required!r} is required")
        compiled: dict[str, Action] = {}
        for outcome in OUTCOMES:
            entry = sections.get(f"on_{outcome}")
            if entry is None:
                continue
            fields = self.action_fields(entry[1], f"on_{outcome}", ACTION_KEYS)
            if fields is None:
                continue
            action = self.action(f"on_{outcome}", entry[1], fields)
            if action is not None:
                compiled[outcome] = action
                if outcome == "error":
                    self.check_fail_closed(entry[1], action)
        return compiled

    def check_fail_closed(self, node: yaml.Node, action: Action) -> None:
        if action.kind == "reject" and not action.headers and not action.reason_header:
            self.warn(
                node,
                "silent-fail-closed",
                "calls are rejected when the verifier fails, with no header saying why: "
                "add e.g. X-VVP-Status: ERROR or reason_header: true",
            )

    # -- trunks and rules --------------------------------------------------------------

    def trunks(self, node: yaml.Node) -> list[tuple[str, tuple[IPNetwork, ...]]]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "not-a-mapping", "trunks maps a trunk name to source addresses")
            return []
        result = []
        for name, (_, value) in self.mapping(node).items():
            networks = self.networks(value)
            self.trunk_names.add(name)
            result.append((name, networks))
        return result

    def rules(self, node: yaml.Node) -> list[Rule]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "not-a-list", "rules is a list, tried in order")
            return []
        rules = []
        for index, rule_node in enumerate(node.value):
            fields = self.action_fields(rule_node, f"rules[{index}]", RULE_KEYS)
            if fields is None:
                continue
            name_node = fields.get("name", (None, None))[1]
            name = self.scalar(name_node) or f"rules[{index}]"
            match_node = fields.get("match", (None, None))[1]
            if match_node is None:
                self.error(rule_node, "missing-key", f"rule {name!r} needs a 'match'")
                continue
            match = self.match(match_node, name)
            action = self.action(f"rule {name}", rule_node, fields)
            if match is not None and action is not None:
                rules.append(Rule(name, match, action))
        return rules

    def match(self, node: yaml.Node, rule: str) -> Match | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "not-a-mapping", f"rule {rule!r}: match is a mapping of conditions")
            return None
        fields = self.mapping(node)
        self.unknown_keys(fields, MATCH_KEYS, "condition")
        if not fields:
            self.warn(node, "matches-everything", f"rule {rule!r} matches every call")

        def strings(key: str) -> list[tuple[yaml.Node, str]]:
            value = fields.get(key, (None, None))[1]
            return self.string_list(value) if value is not None else []

        networks = self.networks(fields["source"][1]) if "source" in fields else ()
        trunks = strings("trunk")
        for trunk_node, trunk in trunks:
            if trunk not in self.trunk_names:
                hint = _hint(trunk, self.trunk_names)
                self.error(trunk_node, "unknown-trunk", f"no trunk named {trunk!r}{hint}")
        outcomes = strings("outcome")
        for outcome_node, outcome in outcomes:
            if outcome not in OUTCOMES:
                hint = _hint(outcome, OUTCOMES)
                self.error(outcome_node, "unknown-outcome", f"no outcome {outcome!r}{hint}")
        prefixes: dict[str, list[str]] = {}
        for key in ("called_prefix", "calling_prefix"):
            prefixes[key] = []
            for prefix_node, prefix in strings(key):
                if not _PREFIX.fullmatch(prefix):
                    self.error(prefix_node, "bad-prefix", f"{prefix!r} is not a number prefix")
                prefixes[key].append(digits(prefix))
        claims = []
        if "claim" in fields:
            claim_node = fields["claim"][1]
            if not isinstance(claim_node, yaml.MappingNode):
                self.error(claim_node, "not-a-mapping", "claim maps a claim name to statuses")
            else:
                for claim, (_, statuses_node) in self.mapping(claim_node).items():
                    statuses = self.string_list(statuses_node)
                    for status_node, status in statuses:
                        if status not in CLAIM_STATUSES:
                            hint = _hint(status, CLAIM_STATUSES)
                            message = f"claim status {status!r} is not one of {CLAIM_STATUSES}"
                            self.error(status_node, "bad-claim-status", message + hint)
                    claims.append((claim, frozenset(s for _, s in statuses)))
        return Match(
            networks=tuple(networks),
            trunks=frozenset(t for _, t in trunks),
            outcomes=frozenset(o for _, o in outcomes),
            called_prefixes=tuple(prefixes["called_prefix"]),
            calling_prefixes=tuple(prefixes["calling_prefix"]),
            error_codes=frozenset(c for _, c in strings("error_code")),
            claims=tuple(claims),
            revocation_pending=self.flag(fields, "revocation_pending"),
            brand_logo_hash=self.flag(fields, "brand_logo_hash"),
            signer_leis=frozenset(lei for _, lei in strings("signer_lei")),
            signer_legal_names=frozenset(n.casefold() for _, n in strings("signer_legal_name")),
            toip_warnings=frozenset(code for _, code in strings("toip_warning")),
            delegation_depth=self.depth_range(fields.get("delegation_depth", (None, None))[1]),
        )

    def flag(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> bool | None:
        """A true/false condition, or None when the rule does not give it."""
        node = fields.get(key, (None, None))[1]
        if node is None:
            return None
        if node.tag != _BOOL_TAG:
            self.error(node, "not-a-boolean", f"{key} is true or false")
            return None
        return (self.scalar(node) or "").lower() in ("true", "yes", "on")

    def depth_range(self, node: yaml.Node | None) -> tuple[int | None, int | None]:
        """``delegation_depth: 0`` (exactly) or ``{min: 1, max: 3}`` (inclusive, either)."""
        if node is None:
            return (None, None)
        if isinstance(node, yaml.ScalarNode):
            depth = self.depth(node)
            return (depth, depth)
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "bad-depth", "delegation_depth is a number or {min: N, max: N}")
            return (None, None)
        bounds = self.mapping(node)
        self.unknown_keys(bounds, ("min", "max"), "key")
        low = self.depth(bounds["min"][1]) if "min" in bounds else None
        high = self.depth(bounds["max"][1]) if "max" in bounds else None
        if low is None and high is None:
            self.error(node, "bad-depth", "delegation_depth needs min, max or both")
        elif low is not None and high is not None and low > high:
            self.error(node, "bad-depth", f"delegation_depth min {low} is above max {high}")
        return (low, high)

    def depth(self, node: yaml.Node) -> int | None:
        raw = self.scalar(node)
        if node.tag != _INT_TAG or raw is None or not raw.isdigit() or len(raw) > 3:
            self.error(node, "bad-depth", f"a delegation depth is a number 0-999, not {raw!r}")
            return None
        return int(raw)

    def networks(self, node: yaml.Node) -> tuple[IPNetwork, ...]:
        result = []
        for item_node, text in self.string_list(node):
            try:
                result.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                message = f"{text!r} is not an IP address or CIDR"
                self.error(item_node, "bad-address", message)
        return tuple(result)

    # -- one action --------------------------------------------------------------------

    def action_fields(
        self, node: yaml.Node, where: str, allowed: Iterable[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "not-a-mapping", f"{where} must be a mapping (action, headers, ...)")
            return None
        fields = self.mapping(node)
        self.unknown_keys(fields, tuple(allowed), "key")
        return fields

    def action(
        self, section: str, node: yaml.Node, fields: dict[str, tuple[yaml.Node, yaml.Node]]
    ) -> Action | None:
        before = len(self.errors())
        kind_node = fields.get("action", (None, None))[1]
        kind = self.scalar(kind_node)
        if kind_node is None:
            self.error(node, "missing-key", f"{section}: 'action' is required (redirect or reject)")
        elif kind not in ("redirect", "reject"):
            self.error(kind_node, "bad-action", f"action must be redirect or reject, not {kind!r}")

        code_node = fields.get("reason_code", (None, None))[1]
        code = self.code(code_node) if code_node is not None else None
        # A minimal-format on_indeterminate may carry "reason_code: 503  # Used if action=reject"
        # and a reason_phrase next to "action: redirect": a code, and the phrase that goes
        # with it, only apply to the action they fit.
        code_fits = True
        if kind == "redirect":
            if code is not None and code >= 400:
                code_fits = False
                self.warn(
                    code_node,
                    "reason-code-unused",
                    f"{section}: reason_code {code} is not used by a redirect (302 is sent); "
                    "it applies if the action becomes reject",
                )
            code = code if code is not None and code < 400 else 302
        elif kind == "reject" and (code is None or code < 400):
            if code is not None:
                self.error(code_node, "bad-code", f"a reject needs a 4xx-6xx code, not {code}")
            code = 403 if code is None else code

        reason = DEFAULT_REASONS.get(code or 0, "Unknown")
        reason_node = fields.get("reason_phrase", (None, None))[1]
        if reason_node is not None:
            raw_reason = self.scalar(reason_node)
            if raw_reason is None or any(ord(c) < 32 or ord(c) == 127 for c in raw_reason):
                self.error(
                    reason_node, "bad-reason", "reason_phrase must be text without control chars"
                )
            elif code_fits:
                reason = raw_reason.strip() or reason

        reason_header = False
        flag_node = fields.get("reason_header", (None, None))[1]
        if flag_node is not None:
            if flag_node.tag != _BOOL_TAG:
                self.error(flag_node, "not-a-boolean", "reason_header is true or false")
            else:
                # YAML 1.1 booleans, as PyYAML reads them (yes/on/true in any case).
                reason_header = (self.scalar(flag_node) or "").lower() in ("true", "yes", "on")

        destination = None
        dest_node = fields.get("destination_template", (None, None))[1]
        if kind == "redirect" and dest_node is None:
            self.error(node, "missing-key", f"{section}: a redirect needs a destination_template")
        if dest_node is not None and kind == "redirect":
            destination = self.template(dest_node)

        headers = self.headers(fields.get("headers", (None, None))[1])
        if len(self.errors()) != before or kind is None or code is None:
            return None
        return Action(section, kind, code, reason, destination, headers, reason_header)

    def code(self, node: yaml.Node) -> int | None:
        raw = self.scalar(node)
        if raw is not None and node.tag != _INT_TAG and raw in NAMED_CODES:
            return NAMED_CODES[raw]
        if node.tag != _INT_TAG or raw is None or not raw.isdigit() or not 300 <= int(raw) <= 699:
            hint = _hint(raw or "", NAMED_CODES) if node.tag != _INT_TAG else ""
            self.error(
                node,
                "bad-code",
                f"reason_code must be a SIP code 300-699 or a name such as "
                f"invalid-identity-header, not {raw!r}{hint}",
            )
            return None
        return int(raw)

    def headers(self, node: yaml.Node | None) -> tuple[tuple[str, Template], ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "not-a-mapping", "headers must be a mapping name: template")
            return ()
        headers = []
        for name, (name_node, value_node) in self.mapping(node).items():
            if not is_header_name(name):
                self.error(name_node, "bad-header-name", f"{name!r} is not a SIP header name")
                continue
            if name.lower() in RESERVED_HEADERS:
                self.error(
                    name_node,
                    "reserved-header",
                    f"{name} is set by the edge itself and cannot be added by a policy",
                )
                continue
            template = self.template(value_node)
            if template is not None:
                headers.append((name, template))
        return tuple(headers)

    def template(self, node: yaml.Node) -> Template | None:
        text = self.scalar(node)
        if text is None:
            self.error(node, "not-a-string", "a template must be a string")
            return None
        try:
            return compile_template(text, TEMPLATE_VARIABLES)
        except TemplateError as exc:
            # Quoted scalars start one character before their text.
            offset = 1 if getattr(node, "style", None) in ("'", '"') else 0
            line = node.start_mark.line + 1
            column = node.start_mark.column + offset + exc.column
            self.problems.append(
                PolicyProblem(self.source, line, column, "bad-template", exc.message)
            )
            return None

    # -- YAML helpers ------------------------------------------------------------------

    def scalar(self, node: yaml.Node | None) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        return None

    def string_list(self, node: yaml.Node) -> list[tuple[yaml.Node, str]]:
        """A scalar or a list of scalars, each with its node for positions."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            # An empty condition would silently match every call.
            self.error(node, "empty-list", "an empty list matches nothing: remove it or fill it")
        result = []
        for item in items:
            text = self.scalar(item)
            if text is None or text == "":
                self.error(item, "not-a-string", "expected a string or a list of strings")
            else:
                result.append((item, text))
        return result

    def mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if key is None:
                self.error(key_node, "bad-key", "keys must be plain strings")
                continue
            if key in result:
                self.error(key_node, "duplicate-key", f"{key!r} is given twice")
                continue
            result[key] = (key_node, value_node)
        return result

    def unknown_keys(
        self, fields: dict[str, tuple[yaml.Node, yaml.Node]], allowed: Iterable[str], what: str
    ) -> None:
        allowed = tuple(allowed)
        for key, (key_node, _) in fields.items():
            if key not in allowed:
                code = "unknown-section" if what == "section" else "unknown-key"
                self.error(key_node, code, f"unknown {what} {key!r}{_hint(key, allowed)}")


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
