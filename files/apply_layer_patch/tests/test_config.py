"""Settings are strict: a bad value stops start-up with a message naming the variable and what it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantum_apply_layer.config import (
    PRODUCTION_EXCHANGE_URL,
    TESTNET_EXCHANGE_URL,
    ConfigError,
    load_credentials,
    load_settings,
    mask_url_password,
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
