"""The routing policy: verification outcome -> SIP answer.

The file format is the seed's ``policy.yaml`` (shared/seeds/000_*), unchanged::

    policies:
      on_valid:                      # one section per outcome
        action: redirect             # redirect | reject
        destination_template: "sip:{dest}@verified.carrier.example"
        headers: {X-VVP-Status: VALID}
      on_invalid:
        action: reject
        reason_code: 403
        reason_phrase: "Forbidden - VVP Verification Failed"

Extensions: ``on_warning`` (absent -> ``on_valid``'s action) and ``on_missing`` (absent ->
``on_indeterminate``'s action: a call with no identity is as unverified as one the verifier
could not decide).

The loader reads YAML *nodes*, not plain data, so every problem carries file:line:column,
and it reports all problems at once. A policy is compiled once (templates parsed,
defaults resolved); a call only renders.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import PolicyError, PolicyProblem
from .template import Template, TemplateError, compile_template, is_header_name

OUTCOMES = ("valid", "warning", "invalid", "indeterminate", "error", "missing")
REQUIRED_SECTIONS = ("on_valid", "on_invalid", "on_indeterminate", "on_error")
#: Where an outcome without a section of its own borrows its action from.
SECTION_FALLBACK = {"warning": "valid", "missing": "indeterminate"}

ACTION_KEYS = ("action", "destination_template", "reason_code", "reason_phrase", "headers")

#: What a template may read. Every name is documented in policy/README.md.
TEMPLATE_VARIABLES = frozenset(
    {
        "orig",  # calling number (From), digits and leading +
        "dest",  # called number (To)
        "call_id",
        "request_id",  # the verifier's request id ("" when it was not asked)
        "status",  # VALID / INVALID / INDETERMINATE / WARNING / ERROR / MISSING
        "outcome",  # valid / invalid / ... (the policy section that applied)
        "errors",  # list of {code, message}; "{errors}" renders the codes
        "claims",  # the verifier's claim tree; "{claims}" renders name=status pairs
        "brand_name",
        "brand_logo_url",
        "signer_aid",
        "certainty",
        "vetter_warning_reason",
        "from_uri",
        "to_uri",
        "from_name",
        "source_ip",
    }
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


@dataclass(frozen=True, slots=True)
class Instruction:
    """What Kamailio is told to answer. ``contact`` only for 3xx."""

    code: int
    reason: str
    contact: str | None
    headers: tuple[tuple[str, str], ...]

    def header_block(self) -> str:
        """The headers as the CRLF-terminated block Kamailio appends verbatim."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.headers)


@dataclass(frozen=True, slots=True)
class Action:
    """One compiled policy section."""

    section: str
    kind: str  # "redirect" | "reject"
    code: int
    reason: str
    destination: Template | None
    headers: tuple[tuple[str, Template], ...]

    def render(self, context: Mapping[str, object]) -> Instruction:
        contact = None
        if self.destination is not None:
            contact = _uri_safe(self.destination.render(context))
        headers = []
        for name, template in self.headers:
            value = template.render(context)
            # An empty value (e.g. "{errors[0].code}" with no errors) means "nothing to
            # say": the header is left out rather than sent empty.
            if value:
                headers.append((name, value))
        return Instruction(self.code, self.reason, contact, tuple(headers))


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    sha256: str
    actions: Mapping[str, Action]

    def action_for(self, outcome: str) -> Action:
        return self.actions[outcome]


def _uri_safe(uri: str) -> str:
    # Kamailio writes the Contact as <uri>: characters that would close the brackets or
    # start a new token are dropped (values are already free of control characters).
    return "".join(ch for ch in uri if ch not in '<>" ')


def load_policy(path: str | Path) -> Policy:
    """Read, validate and compile a policy file; ``PolicyError`` lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyProblem(str(path), 0, 0, "unreadable", str(exc))]) from None
    return parse_policy(text, str(path))


class _Problems:
    """Collects every problem in one file, each at its YAML position."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[PolicyProblem] = []

    def __call__(self, node: yaml.Node | None, code: str, message: str) -> None:
        line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (0, 0)
        self.found.append(PolicyProblem(self.source, line, column, code, message))

    def at(self, line: int, column: int, code: str, message: str) -> None:
        self.found.append(PolicyProblem(self.source, line, column, code, message))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    problem = _Problems(source)
    problems = problem.found

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyProblem(source, line, column, "yaml-syntax", reason)]) from None

    if not isinstance(root, yaml.MappingNode):
        problem(root, "not-a-mapping", "a policy is a mapping with a 'policies' key")
        raise PolicyError(problems)

    top = _mapping(root, problem)
    for key, (key_node, _) in top.items():
        if key != "policies":
            problem(key_node, "unknown-key", f"unknown key {key!r}{_hint(key, ['policies'])}")
    if "policies" not in top:
        problem(root, "missing-key", "'policies' is required")
        raise PolicyError(problems)
    policies_node = top["policies"][1]
    if not isinstance(policies_node, yaml.MappingNode):
        problem(policies_node, "not-a-mapping", "'policies' must be a mapping of sections")
        raise PolicyError(problems)

    sections = _mapping(policies_node, problem)
    known_sections = [f"on_{o}" for o in OUTCOMES]
    for key, (key_node, _) in sections.items():
        if key not in known_sections:
            problem(
                key_node, "unknown-section", f"unknown section {key!r}{_hint(key, known_sections)}"
            )
    for required in REQUIRED_SECTIONS:
        if required not in sections:
            problem(policies_node, "missing-section", f"section {required!r} is required")

    compiled: dict[str, Action] = {}
    for outcome in OUTCOMES:
        entry = sections.get(f"on_{outcome}")
        if entry is not None:
            action = _compile_action(f"on_{outcome}", entry[1], problem)
            if action is not None:
                compiled[outcome] = action

    if problems:
        raise PolicyError(problems)
    for outcome, borrowed in SECTION_FALLBACK.items():
        compiled.setdefault(outcome, compiled[borrowed])
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Policy(source=source, sha256=digest, actions=compiled)


def _compile_action(section: str, node: yaml.Node, problem: _Problems) -> Action | None:
    if not isinstance(node, yaml.MappingNode):
        problem(node, "not-a-mapping", f"{section} must be a mapping (action, headers, ...)")
        return None
    before = len(problem.found)
    fields = _mapping(node, problem)
    for key, (key_node, _) in fields.items():
        if key not in ACTION_KEYS:
            problem(key_node, "unknown-key", f"unknown key {key!r}{_hint(key, ACTION_KEYS)}")

    kind_node = fields.get("action", (None, None))[1]
    kind = _scalar(kind_node)
    if kind_node is None:
        problem(node, "missing-key", f"{section}: 'action' is required (redirect or reject)")
    elif kind not in ("redirect", "reject"):
        problem(kind_node, "bad-action", f"action must be redirect or reject, not {kind!r}")

    code_node = fields.get("reason_code", (None, None))[1]
    code: int | None = None
    if code_node is not None:
        raw = _scalar(code_node)
        if (
            code_node.tag != "tag:yaml.org,2002:int"
            or raw is None
            or not raw.isdigit()
            or not 300 <= int(raw) <= 699
        ):
            problem(code_node, "bad-code", f"reason_code must be a SIP code 300-699, not {raw!r}")
        else:
            code = int(raw)

    # The seed's on_indeterminate carries "reason_code: 503  # Used if action=reject"
    # and a reason_phrase next to "action: redirect": a code, and the phrase that goes
    # with it, only apply to the action they fit.
    code_fits = True
    if kind == "redirect":
        code_fits = code is None or code < 400
        code = code if code is not None and code < 400 else 302
    elif kind == "reject" and (code is None or code < 400):
        if code is not None:
            problem(code_node, "bad-code", f"a reject needs a 4xx-6xx code, not {code}")
        code = 403 if code is None else code

    reason_node = fields.get("reason_phrase", (None, None))[1]
    reason = DEFAULT_REASONS.get(code or 0, "Unknown")
    if reason_node is not None:
        raw_reason = _scalar(reason_node)
        if raw_reason is None or any(ord(c) < 32 or ord(c) == 127 for c in raw_reason):
            problem(reason_node, "bad-reason", "reason_phrase must be text without control chars")
        elif code_fits:
            reason = raw_reason.strip() or reason

    destination = None
    dest_node = fields.get("destination_template", (None, None))[1]
    if kind == "redirect" and dest_node is None:
        problem(node, "missing-key", f"{section}: a redirect needs a destination_template")
    if dest_node is not None and kind == "redirect":
        destination = _template(dest_node, problem)

    headers: list[tuple[str, Template]] = []
    headers_node = fields.get("headers", (None, None))[1]
    if headers_node is not None:
        if not isinstance(headers_node, yaml.MappingNode):
            problem(headers_node, "not-a-mapping", "headers must be a mapping name: template")
        else:
            for name, (name_node, value_node) in _mapping(headers_node, problem).items():
                if not is_header_name(name):
                    problem(name_node, "bad-header-name", f"{name!r} is not a SIP header name")
                    continue
                if name.lower() in ("contact", "via", "call-id", "cseq", "from", "to"):
                    problem(
                        name_node,
                        "reserved-header",
                        f"{name} is set by the edge itself and cannot be added by a policy",
                    )
                    continue
                template = _template(value_node, problem)
                if template is not None:
                    headers.append((name, template))

    if len(problem.found) != before or kind is None or code is None:
        return None
    return Action(section, kind, code, reason, destination, tuple(headers))


def _template(node: yaml.Node, problem: _Problems) -> Template | None:
    text = _scalar(node)
    if text is None:
        problem(node, "not-a-string", "a template must be a string")
        return None
    try:
        return compile_template(text, TEMPLATE_VARIABLES)
    except TemplateError as exc:
        line = node.start_mark.line + 1
        # Quoted scalars start one character before their text.
        offset = 1 if getattr(node, "style", None) in ("'", '"') else 0
        column = node.start_mark.column + offset + exc.column
        problem.at(line, column, "bad-template", exc.message)
        return None


def _scalar(node: yaml.Node | None) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return None


def _mapping(node: yaml.MappingNode, problem: _Problems) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key is None:
            problem(key_node, "bad-key", "keys must be plain strings")
            continue
        if key in result:
            problem(key_node, "duplicate-key", f"{key!r} is given twice")
            continue
        result[key] = (key_node, value_node)
    return result


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
