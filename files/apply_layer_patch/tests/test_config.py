"""Settings are strict: a bad value stops start-up with a message naming the variable and what it accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantum_apply_layer.config import (
    PRODUCTION_EXCHANGE_URL,
    TESTNET_EXCHANGE_URL,
    ConfigError,
    check_environment,
    load_credentials,
    load_settings,
    mask_url_password,
    process_env,
    read_env_file,
)


def test_production_is_the_default() -> None:
    settings = load_settings({})
    assert settings.testnet is False
    assert settings.exchange_url == PRODUCTION_EXCHANGE_URL
    assert settings.metrics_port == 8000


@pytest.mark.parametrize(
    ("raw", "testnet"), [("true", True), ("false", False), (" TRUE ", True), ("False", False)]
)
def test_testnet_accepts_true_and_false(raw: str, testnet: bool) -> None:
    settings = load_settings({"TESTNET": raw})
    assert settings.testnet is testnet
    assert settings.exchange_url == (TESTNET_EXCHANGE_URL if testnet else PRODUCTION_EXCHANGE_URL)


@pytest.mark.parametrize("raw", ["1", "0", "yes", "no", "", "on", "prod", "treu"])
def test_any_other_testnet_value_refuses_to_start(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"TESTNET=.*accepted values are 'false'.*'true'"):
        load_settings({"TESTNET": raw})


@pytest.mark.parametrize("url", ["https://fapi.binance.com", "https://example.com", "https://10.0.0.5:8090"])
def test_testnet_may_only_reach_a_sandbox(url: str) -> None:
    with pytest.raises(ConfigError, match="TESTNET=true"):
        load_settings({"TESTNET": "true", "APPLY_EXCHANGE_URL": url})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8090", "http://localhost:1", "http://[::1]:9", TESTNET_EXCHANGE_URL]
)
def test_testnet_sandboxes_are_accepted(url: str) -> None:
    assert load_settings({"TESTNET": "true", "APPLY_EXCHANGE_URL": url}).exchange_url == url


def test_production_never_trades_on_the_testnet_nor_over_plain_http() -> None:
    with pytest.raises(ConfigError, match="never trades on the testnet"):
        load_settings({"APPLY_EXCHANGE_URL": TESTNET_EXCHANGE_URL})
    with pytest.raises(ConfigError, match="plain http"):
        load_settings({"APPLY_EXCHANGE_URL": "http://exchange.example"})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("APPLY_METRICS_PORT", "http"),
        ("APPLY_METRICS_PORT", "70000"),
        ("APPLY_PERMIT_TIMEOUT_MS", "0"),
        ("APPLY_MAX_IN_FLIGHT", "-1"),
        ("APPLY_LOG_FORMAT", "xml"),
        ("REDIS_URL", "http://x"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: raw})


def test_redis_password_is_masked() -> None:
    settings = load_settings({"REDIS_URL": "redis://apply_layer:s3cret@127.0.0.1:6379/0"})
    assert "s3cret" not in repr(settings)
    assert settings.describe()["REDIS_URL"] == "redis://apply_layer:***@127.0.0.1:6379/0"
    assert mask_url_password("redis://127.0.0.1") == "redis://127.0.0.1"


def test_credentials_come_from_the_systemd_directory_first(tmp_path: Path) -> None:
    (tmp_path / "BINANCE_API_KEY").write_text("key-from-file\n")
    (tmp_path / "BINANCE_API_SECRET").write_text("secret-from-file\n")
    credentials = load_credentials({"CREDENTIALS_DIRECTORY": str(tmp_path), "BINANCE_API_KEY": "env"})
    assert (credentials.api_key, credentials.api_secret) == ("key-from-file", "secret-from-file")
    assert "secret-from-file" not in repr(credentials)


def test_missing_credentials_say_how_to_provide_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LoadCredential=BINANCE_API_KEY"):
        load_credentials({})
    with pytest.raises(ConfigError, match="cannot read credential"):
        load_credentials({"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_env_file_is_read_like_systemd(tmp_path: Path) -> None:
    env_file = tmp_path / "apply-layer.env"
    env_file.write_text('# comment\n\nTESTNET=false\nREDIS_URL="redis://127.0.0.1:6379/0"\n')
    assert read_env_file(env_file) == {"TESTNET": "false", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    env_file.write_text("not a pair\n")
    with pytest.raises(ConfigError, match=":1: expected KEY=VALUE"):
        read_env_file(env_file)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("export TESTNET=false\n", "without `export`"),
        (
            "APPLY_MAX_NOTIONAL_USD=1000\n",
            "unknown setting APPLY_MAX_NOTIONAL_USD; did you mean APPLY_MAX_NOTIONAL_USDT",
        ),
        ("REDIS_ULR=redis://x\n", "did you mean REDIS_URL"),
        ("TESTNET=false\nTESTNET=true\n", ":2: TESTNET is set twice"),
        ("BINANCE_API_SECRET=s\n", "LoadCredential=BINANCE_API_SECRET"),
        ("=value\n", "expected KEY=VALUE"),
    ],
)
def test_env_file_lines_that_would_mislead_are_refused(tmp_path: Path, content: str, message: str) -> None:
    env_file = tmp_path / "apply-layer.env"
    env_file.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_env_file(env_file)


def test_env_file_keys_of_other_programs_pass(tmp_path: Path) -> None:
    env_file = tmp_path / "apply-layer.env"
    env_file.write_text("PYTHONUNBUFFERED=1\nAPPLY_MAX_NOTIONAL_USDT=BTCUSDT=1000\n")
    assert read_env_file(env_file)["PYTHONUNBUFFERED"] == "1"


def test_an_unreadable_or_binary_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the env file"):
        read_env_file(tmp_path)  # a directory: unreadable as a file, whoever runs the test
    binary = tmp_path / "apply-layer.env"
    binary.write_bytes(b"TESTNET=false\nREDIS_URL=\xff\n")
    with pytest.raises(ConfigError, match=r"apply-layer.env:2: not UTF-8"):
        read_env_file(binary)


def test_a_named_env_file_must_exist_the_default_one_may_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the env file"):
        process_env(tmp_path / "missing.env", required=True)
    process_env(tmp_path / "missing.env", required=False)  # the default path: absent is fine


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APPLY_MAX_NOTIONAL_USDT": "*=1,*=2"}, "* is given twice"),
        ({"APPLY_MAX_NOTIONAL_USDT": "BTCUSDT=1,btcusdt=2"}, "BTCUSDT is given twice"),
        ({"REDIS_URL": "redis://127.0.0.1:99999/0"}, "port must be a number"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/abc"}, "database must be a number"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/16"}, "database must be a number"),
        ({"REDIS_URL": "redis:///0"}, "redis://user:password@host:port/db"),
        ({"APPLY_METRICS_ADDR": "eth0"}, "APPLY_METRICS_ADDR='eth0'"),
    ],
)
def test_values_run_would_trip_on_are_refused_at_parse(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env)


def test_a_misspelt_variable_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean APPLY_MAX_NOTIONAL_USDT"):
        check_environment({"APPLY_MAX_NOTIONAL_USD": "1000", "HOME": "/root", "REDIS_PORT": "6379"})
