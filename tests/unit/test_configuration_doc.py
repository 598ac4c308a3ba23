"""docs/configuration.md documents every setting the code reads, with the code's default.

The lists come from the code itself: the environment variables ``Settings.from_env`` reads
(helper/vvp_helper/config.py, parsed with ``ast``), the flags of the ``vvp-helper`` command
line (its argparse parser), and the ``#!trydefenv`` / ``#!trydef`` / ``#!define`` /
``#!substdef`` / ``#!ifdef`` names of kamailio/kamailio.cfg. A setting added to the code
without a row in the document, a row left behind for a setting that is gone, or a default
changed in one place only fails here.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import vvp_helper.config as config_module
from vvp_helper.__main__ import _parser
from vvp_helper.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
KAMAILIO_CFG = ROOT / "kamailio" / "kamailio.cfg"

Unset = type(None)


def _section(title: str) -> str:
    """The text of one ``## title`` section of the document, up to the next ``## ``."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/configuration.md has no '## {title}' section"
    return match.group(1)


def _rows(text: str) -> dict[str, str]:
    """Table rows by every backticked name in their first cell -> their second cell."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def _helper_env_defaults() -> dict[str, object]:
    """Every variable ``Settings.from_env`` reads -> its default (None when it has none)."""
    tree = ast.parse(Path(config_module.__file__).read_text(encoding="utf-8"))
    from_env = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "from_env"
    )
    defaults = Settings()
    found: dict[str, object] = {}

    def default_in(node: ast.AST) -> object:
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Name)
                and sub.value.id == "defaults"
            ):
                return getattr(defaults, sub.attr)
        return None

    # Each keyword of the Settings(...) call (and of the PrecheckSettings(...) call) reads
    # one variable; its default is the call's literal second argument or defaults.<field>.
    for keyword in (kw for node in ast.walk(from_env) if isinstance(node, ast.Call)
                    for kw in node.keywords):  # fmt: skip
        for call in (n for n in ast.walk(keyword.value) if isinstance(n, ast.Call)):
            if not call.args or not isinstance(call.args[0], ast.Constant):
                continue
            name = call.args[0].value
            if not (isinstance(name, str) and name.startswith("VVP_")):
                continue
            if len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
                found[name] = call.args[1].value
            else:
                found.setdefault(name, default_in(keyword.value))
    return found


def _kamailio_names() -> tuple[dict[str, str | None], set[str]]:
    """kamailio.cfg: settings read from the environment -> default, and every other name
    the cfg defines or tests (feature flags, internal defines)."""
    settings: dict[str, str | None] = {}
    others: set[str] = set()
    for line in KAMAILIO_CFG.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"#!trydefenvs?\s+(\w+)", line):
            settings.setdefault(m.group(1), None)
        elif m := re.match(r"#!trydef\s+(\w+)(?:\s+(.*))?$", line):
            settings[m.group(1)] = (m.group(2) or "").strip().strip('"')
        elif m := re.match(r"#!(?:re)?define\s+(\w+)", line) or re.match(
            r'#!substdef\s+"(.)(\w+)\1', line
        ):
            others.add(m.group(m.lastindex or 1))
        elif m := re.match(r"#!ifn?def\s+(\w+)", line):
            others.add(m.group(1))
    return settings, others - set(settings)


def _rendered(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        return value.relative_to(ROOT).as_posix()
    return str(value)


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def test_the_code_is_parsed() -> None:
    # Guards the parsers above: a regex that stopped matching would make every check
    # below pass vacuously.
    helper = _helper_env_defaults()
    kamailio, others = _kamailio_names()
    assert {"VVP_VERIFIER_URL", "VVP_PRECHECK_EXPIRY", "VVP_HELPER_PROCESSES"} <= set(helper)
    assert helper["VVP_VERIFIER_TIMEOUT"] == Settings().verifier_timeout
    assert kamailio["VVP_SIP_PORT"] == "5060"
    assert {"WITH_DEBUG", "WITH_STATIC_302", "FLT_IN_DECISION", "VVP_ALLOW"} <= others


def test_every_helper_setting_is_documented_with_its_default() -> None:
    rows = _rows(_section("Helper"))
    for name, default in _helper_env_defaults().items():
        assert name in rows, f"{name} (read in config.py) is not in docs/configuration.md"
        if default in (None, "", ()):
            continue
        assert _rendered(default) in _backticked(rows[name]), (
            f"{name}: the code's default is {_rendered(default)!r}, "
            f"docs/configuration.md says {rows[name]!r}"
        )


def test_no_helper_row_is_left_behind() -> None:
    read = set(_helper_env_defaults())
    stale = {name for name in _rows(_section("Helper")) if name.startswith("VVP_")} - read
    assert not stale, (
        f"docs/configuration.md lists helper settings the code no longer reads: {stale}"
    )


def test_every_kamailio_setting_is_documented_with_its_default() -> None:
    rows = _rows(_section("Kamailio"))
    settings, others = _kamailio_names()
    for name, default in settings.items():
        assert name in rows, f"{name} (kamailio.cfg) is not in docs/configuration.md"
        if default is not None:
            assert default in _backticked(rows[name]), (
                f"{name}: kamailio.cfg's default is {default!r}, "
                f"docs/configuration.md says {rows[name]!r}"
            )
    missing = others - set(rows)
    assert not missing, f"kamailio.cfg names not in docs/configuration.md: {missing}"


def test_no_kamailio_row_is_left_behind() -> None:
    settings, others = _kamailio_names()
    stale = (
        set(_rows(_section("Kamailio")))
        - set(settings)
        - others
        - {
            "SHM_MEMORY",
            "PKG_MEMORY",
        }
    )
    assert not stale, f"docs/configuration.md lists Kamailio names kamailio.cfg lacks: {stale}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("vvp-helper has no subcommands")


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_line_flag_is_documented(command: str) -> None:
    text = _section("Helper")
    flags = {
        option
        for action in _subcommands()[command]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert f"`{command}" in text, f"vvp-helper {command} is not in docs/configuration.md"
    missing = {flag for flag in flags if not re.search(rf"`{re.escape(flag)}[` ]", text)}
    assert not missing, f"vvp-helper {command} flags not in docs/configuration.md: {missing}"
