"""The operator interface as an operator meets it: the console script, its output and exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET
from redis import Redis as SyncRedis
from redis_server import RedisServer, free_port
from service_process import ServiceProcess

from quantum_apply_layer.emulator import ExchangeEmulator

SCRIPT = str(Path(sys.executable).parent / "quantum-apply-layer")


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "--no-env-file", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_config_masks_secrets_and_passes() -> None:
    done = cli(
        "check-config",
        REDIS_URL="redis://apply_layer:pw-123@127.0.0.1:6379/0",
        BINANCE_API_KEY="key-abcd",
        BINANCE_API_SECRET="secret-xyz",
    )
    assert done.returncode == 0, done.stderr
    assert "TESTNET=false" in done.stdout
    assert "REDIS_URL=redis://apply_layer:***@127.0.0.1:6379/0" in done.stdout
    assert "pw-123" not in done.stdout
    assert "secret-xyz" not in done.stdout


@pytest.mark.parametrize("testnet", ["yes", "TRUE-ish", ""])
def test_a_bad_mode_refuses_with_the_variable_named(testnet: str) -> None:
    done = cli("check-config", TESTNET=testnet)
    assert done.returncode == 2
    assert "TESTNET=" in done.stderr
    assert "'false'" in done.stderr


def test_run_refuses_testnet_pointed_at_production() -> None:
    done = cli(
        "run",
        TESTNET="true",
        APPLY_EXCHANGE_URL="https://fapi.binance.com",
        BINANCE_API_KEY="k",
        BINANCE_API_SECRET="s",
    )
    assert done.returncode == 2
    [line] = done.stdout.splitlines()  # one JSON log line, as the journal gets it; no traceback
    assert "testnet may only reach a sandbox" in json.loads(line)["msg"]
    assert done.stderr == ""


def flush(server: RedisServer) -> None:
    SyncRedis.from_url(server.url).flushall()


def test_kill_and_status(redis_server: RedisServer) -> None:
    flush(redis_server)
    env = {"REDIS_URL": redis_server.url}
    done = cli("kill", "on", "--reason", "INC-1 test", "--who", "alice", **env)
    assert done.returncode == 0, done.stderr
    assert "global: running (absent) -> halted (true)" in done.stdout
    assert cli("kill", "reduce-only", "--symbol", "ETHUSDT", "--reason", "wind down", **env).returncode == 0
    status = json.loads(cli("status", "--json", **env).stdout)
    assert status["cli_mode"] == "production"
    assert status["mode"].startswith("production (no service running")
    assert status["instances"] == []
    assert status["switch"]["global"] == {"state": "halted", "value": "true", "reason": "INC-1 test"}
    assert status["switch"]["symbols"]["ETHUSDT"]["state"] == "reduce_only"
    assert [entry["who"] for entry in status["audit"]][-1] == "alice"
    text = cli("status", **env).stdout
    assert "kill switch (global): halted  value='true'  reason='INC-1 test'" in text  # as runbooks grep it
    assert "services: NONE LIVE: no apply layer is reading the plan stream" in text
    assert cli("kill", "off", "--reason", "", **env).returncode == 2  # a reason is required
    assert cli("kill", "on", "--symbol", "eth/usdt", "--reason", "x", **env).returncode == 2


def test_a_switch_no_replica_confirmed_is_set_but_reported(redis_server: RedisServer) -> None:
    """Behind Sentinel the operator must know when a failover could lose the halt just set."""
    flush(redis_server)
    env = {"REDIS_URL": redis_server.url, "APPLY_REDIS_WAIT_REPLICAS": "1"}
    done = cli("kill", "on", "--reason", "INC-2 no replica", **env)
    assert done.returncode == 6
    assert "only 0 of 1 replicas confirmed it" in done.stderr
    assert SyncRedis.from_url(redis_server.url).get("quantum:global:kill_switch") == b"true"


def test_status_says_when_redis_is_unreachable() -> None:
    done = cli("status", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 3
    assert "Redis error" in done.stderr


def test_metrics_endpoint_serves_the_contract_names(
    redis_server: RedisServer, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    flush(redis_server)
    port = free_port()
    service = ServiceProcess(
        redis_server.url, emulator.base_url, tmp_path / "log", APPLY_METRICS_PORT=str(port)
    )
    service.start()
    try:
        body = ""
        deadline = time.monotonic() + 20
        while "apply_redis_up 1.0" not in body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.1)
    finally:
        assert service.terminate() == 0  # SIGTERM: a clean stop
    assert 'apply_build_info{mode="production"' in body
    assert "apply_redis_up 1.0" in body
    for name in (
        "p33_permit_allow_total",
        "permit_wait_ms_bucket",
        'apply_kill_switch_state{state="running"} 1.0',
    ):
        assert name in body
    assert EMULATOR_API_SECRET not in body
    assert EMULATOR_API_KEY not in body


def test_help_lists_exit_codes_and_every_variable() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for text in ("exit codes:", "2  configuration error", "6  kill:", "APPLY_MAX_NOTIONAL_USDT", "REDIS_URL"):
        assert text in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("kill", "on", "--reason", "\x1b[31mred\x1b[0m"),
        ("kill", "on", "--reason", "x" * 120_000),
        ("kill", "on", "--reason", "ok", "--who", "eve\nroot"),
        ("emergency-close", "BTCUSDT", "--reason", "ok", "--wait", "inf"),
        ("emergency-close", "BTCUSDT", "--reason", "ok", "--wait", "-1"),
        ("emergency-close", "BTCUSDT", "--reason", "ok", "--wait", "nan"),
    ],
)
def test_operator_input_that_would_harm_is_refused_before_anything_is_written(
    redis_server: RedisServer, args: tuple[str, ...]
) -> None:
    flush(redis_server)
    done = cli(*args, REDIS_URL=redis_server.url)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert SyncRedis.from_url(redis_server.url).dbsize() == 0  # nothing queued, nothing audited


def test_a_named_env_file_that_is_missing_is_an_error() -> None:
    done = subprocess.run(
        [SCRIPT, "--env-file", "/nonexistent/apply-layer.env", "check-config"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot read the env file" in done.stderr


def test_check_config_catches_an_address_run_could_not_listen_on() -> None:
    keys = {"BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"}
    done = cli("check-config", APPLY_METRICS_ADDR="192.0.2.1", **keys)  # TEST-NET-1: not on this host
    assert done.returncode == 2
    assert "APPLY_METRICS_ADDR=192.0.2.1" in done.stderr
    with socket.socket() as holder:  # a busy port is what the running service itself looks like
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        done = cli("check-config", APPLY_METRICS_ADDR="127.0.0.1", APPLY_METRICS_PORT=port, **keys)
    assert done.returncode == 0
    assert f"APPLY_METRICS_PORT={port}: in use" in done.stderr


def test_status_shows_the_running_service_not_the_shell(
    redis_server: RedisServer, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    """The shell has no TESTNET (production); the service runs on testnet: status says testnet."""
    flush(redis_server)
    service = ServiceProcess(
        redis_server.url, emulator.base_url, tmp_path / "log", TESTNET="true", APPLY_CONSUMER_NAME="apply-7"
    )
    service.start()
    try:
        deadline = time.monotonic() + 20
        status: dict[str, object] = {}
        while not status.get("instances") and time.monotonic() < deadline:
            status = json.loads(cli("status", "--json", REDIS_URL=redis_server.url).stdout)
            time.sleep(0.1)
        text = cli("status", REDIS_URL=redis_server.url).stdout
        ttl = SyncRedis.from_url(redis_server.url).ttl("quantum:apply:instance:apply-7")
    finally:
        assert service.terminate() == 0
    assert status["mode"] == "testnet"
    assert status["cli_mode"] == "production"
    instances = status["instances"]
    assert isinstance(instances, list)
    assert [instance["consumer"] for instance in instances] == ["apply-7"]
    assert "service apply-7 on" in text
    assert "testnet" in text
    assert 0 < ttl <= 10  # gone within seconds of the process dying
