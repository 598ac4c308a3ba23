"""Unit tests for vvp_helper.config: settings from defaults, the environment and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from vvp_helper.config import Settings
from vvp_helper.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_listen_on_loopback_with_the_shipped_policy() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8480
    assert settings.policy_path == REPO / "policy" / "default.yaml"
    assert settings.policy_path.is_file()
    assert settings.verifier_url is None
    assert settings.verify_endpoint is None
    assert settings.kamailio_rpc_urls == ()
    assert settings.log_level == "INFO"


def test_default_deadline_leaves_the_verifier_its_full_timeout() -> None:
    settings = Settings()
    assert settings.verifier_timeout == 6.0
    assert settings.deadline == 6.5
    assert settings.deadline > settings.verifier_timeout


def test_default_precheck_checks_expiry_but_not_numbers() -> None:
    precheck = Settings().precheck
    assert precheck.check_expiry is True
    assert precheck.check_numbers is False


@pytest.mark.parametrize("deadline", [5.0, 4.9, 1.0])
def test_deadline_not_longer_than_verifier_timeout_is_refused(deadline: float) -> None:
    with pytest.raises(ConfigError, match="deadline"):
        Settings(verifier_timeout=5.0, deadline=deadline)


def test_deadline_just_over_verifier_timeout_is_accepted() -> None:
    settings = Settings(verifier_timeout=2.0, deadline=2.1)
    assert (settings.verifier_timeout, settings.deadline) == (2.0, 2.1)


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_non_positive_verifier_timeout_is_refused(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        Settings(verifier_timeout=timeout)


@pytest.mark.parametrize(
    "url",
    ["ftp://verifier.example", "verifier.example/verify", "file:///etc/passwd", "http://", ""],
)
def test_verifier_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(ConfigError, match="http"):
        Settings(verifier_url=url)


def test_kamailio_rpc_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="Kamailio RPC URL"):
        Settings(kamailio_rpc_urls=("udp://127.0.0.1:5060",))


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_outside_tcp_range_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings(port=port)


def test_verifier_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Settings(verifier_concurrency=0)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://verifier.example", "https://verifier.example/verify"),
        ("https://verifier.example/", "https://verifier.example/verify"),
        ("http://127.0.0.1:8000/api/v1/", "http://127.0.0.1:8000/api/v1/verify"),
        ("http://127.0.0.1:8000/api//", "http://127.0.0.1:8000/api/verify"),
    ],
)
def test_verify_endpoint_appends_verify_without_double_slash(url: str, endpoint: str) -> None:
    assert Settings(verifier_url=url).verify_endpoint == endpoint


def test_from_env_with_nothing_set_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_reads_every_vvp_variable() -> None:
    env = {
        "VVP_HELPER_HOST": "0.0.0.0",
        "VVP_HELPER_PORT": "9000",
        "VVP_POLICY": "/etc/vvp/policy.yaml",
        "VVP_VERIFIER_URL": "https://verifier.example/",
        "VVP_VERIFIER_TIMEOUT": "2.5",
        "VVP_VERIFIER_TOKEN": "s3cret",
        "VVP_VERIFIER_CONCURRENCY": "32",
        "VVP_HELPER_DEADLINE": "3",
        "VVP_LOG_LEVEL": "debug",
        "VVP_POLICY_WATCH_INTERVAL": "0",
        "VVP_KAMAILIO_RPC": " http://k1:5060/RPC , ,http://k2:5060/RPC",
        "VVP_FALLBACK_PUSH_INTERVAL": "30",
        "VVP_PRECHECK_EXPIRY": "false",
        "VVP_PRECHECK_NUMBERS": "yes",
    }
    settings = Settings.from_env(env)
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.policy_path == Path("/etc/vvp/policy.yaml")
    assert settings.verify_endpoint == "https://verifier.example/verify"
    assert settings.verifier_timeout == 2.5
    assert settings.verifier_token == "s3cret"
    assert settings.verifier_concurrency == 32
    assert settings.deadline == 3.0
    assert settings.log_level == "DEBUG"
    assert settings.policy_watch_interval == 0.0
    assert settings.kamailio_rpc_urls == ("http://k1:5060/RPC", "http://k2:5060/RPC")
    assert settings.fallback_push_interval == 30.0
    assert settings.precheck.check_expiry is False
    assert settings.precheck.check_numbers is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("No", False), ("off", False)],
)
def test_from_env_booleans(raw: str, expected: bool) -> None:
    settings = Settings.from_env({"VVP_PRECHECK_NUMBERS": raw, "VVP_PRECHECK_EXPIRY": raw})
    assert settings.precheck.check_numbers is expected
    assert settings.precheck.check_expiry is expected


def test_from_env_log_json_defaults_on_and_can_be_turned_off() -> None:
    assert Settings.from_env({}).log_json is True
    assert Settings.from_env({"VVP_LOG_JSON": "false"}).log_json is False


def test_from_env_empty_values_mean_default() -> None:
    env = {"VVP_HELPER_PORT": "", "VVP_VERIFIER_URL": "", "VVP_PRECHECK_EXPIRY": ""}
    assert Settings.from_env(env) == Settings()


def test_from_env_bad_boolean_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="VVP_PRECHECK_EXPIRY"):
        Settings.from_env({"VVP_PRECHECK_EXPIRY": "maybe"})


@pytest.mark.parametrize(
    "name",
    [
        "VVP_HELPER_PORT",
        "VVP_VERIFIER_TIMEOUT",
        "VVP_VERIFIER_CONCURRENCY",
        "VVP_HELPER_DEADLINE",
        "VVP_POLICY_WATCH_INTERVAL",
        "VVP_FALLBACK_PUSH_INTERVAL",
    ],
)
def test_from_env_bad_number_names_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "five"})


def test_from_env_deadline_shorter_than_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="deadline"):
        Settings.from_env({"VVP_VERIFIER_TIMEOUT": "10"})


def test_from_env_bad_verifier_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="http"):
        Settings.from_env({"VVP_VERIFIER_URL": "verifier.example:8000"})


def test_with_overrides_changes_given_fields_and_ignores_none() -> None:
    base = Settings(verifier_url="https://verifier.example")
    changed = base.with_overrides(port=9001, verifier_url=None, host=None)
    assert changed.port == 9001
    assert changed.verifier_url == "https://verifier.example"
    assert changed.host == base.host
    with pytest.raises(ConfigError):
        base.with_overrides(deadline=1.0)


@pytest.mark.parametrize("name", ["VVP_VERIFIER_TIMEOUT", "VVP_HELPER_DEADLINE"])
def test_from_env_nan_timeout_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "nan"})


@pytest.mark.parametrize(
    ("name", "raw"),
    [("VVP_HELPER_PORT", "inf"), ("VVP_VERIFIER_CONCURRENCY", "nan")],
)
def test_from_env_non_finite_integer_setting_is_a_config_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


def test_from_env_fractional_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="VVP_HELPER_PORT"):
        Settings.from_env({"VVP_HELPER_PORT": "8480.9"})


def test_from_env_reads_the_verifier_protection_settings() -> None:
    settings = Settings.from_env(
        {
            "VVP_BREAKER_WINDOW": "100",
            "VVP_BREAKER_MIN_CALLS": "40",
            "VVP_BREAKER_FAILURE_RATE": "0.6",
            "VVP_BREAKER_RESET": "2",
            "VVP_VERIFIER_MAX_WAIT": "0.1",
        }
    )
    assert (settings.breaker_window, settings.breaker_min_calls) == (100, 40)
    assert settings.breaker_failure_rate == 0.6
    assert settings.breaker_reset == 2.0
    assert settings.verifier_max_wait == 0.1


@pytest.mark.parametrize(
    "env",
    [
        {"VVP_BREAKER_MIN_CALLS": "60"},  # more than the window holds: it could never open
        {"VVP_BREAKER_MIN_CALLS": "0"},
        {"VVP_BREAKER_FAILURE_RATE": "0"},
        {"VVP_BREAKER_FAILURE_RATE": "1.5"},
        {"VVP_VERIFIER_MAX_WAIT": "-1"},
    ],
)
def test_from_env_refuses_verifier_protection_that_cannot_work(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)
