"""Start-up as it happens on a host: Redis not there yet, a wrong password, a Redis without keyspace
events, a busy port. The service waits (halted) for what can come back, and for what an operator must
fix it stops with one log line naming the setting and an exit code from --help: never a traceback."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from conftest import SettingsFactory
from plans import permits, plan_fields
from redis import Redis as SyncRedis
from redis_server import RedisServer, free_port
from service_process import ServiceProcess

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.runtime import connect_redis, freeze_heap_once_started
from quantum_apply_layer.service import ApplyLayer


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def wait_for(condition: object, timeout_s: float = 15) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s}s: {condition}")


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_without_redis_it_waits_halted_then_starts_and_freezes_its_heap_when_redis_answers(
    tmp_path: Path, emulator: ExchangeEmulator
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    redis_server = RedisServer(tmp_path)  # its port is chosen, nothing listens there yet
    metrics_port = free_port()
    service = ServiceProcess(
        redis_server.url, emulator.base_url, tmp_path / "service.log", APPLY_METRICS_PORT=str(metrics_port)
    )
    service.start()
    try:
        wait_for(lambda: metric(metrics_port, "apply_redis_up") == 0.0)
        time.sleep(1.0)  # several retries: it must still be up, and must not have said it N times
        assert service.alive
        waiting = [line for line in log_lines(service.log_path) if "waiting, halted" in line]
        assert len(waiting) == 1, waiting
        assert "Redis does not answer" in waiting[0]
        assert "REDIS_URL" in waiting[0]

        redis_server.start()
        client = SyncRedis.from_url(redis_server.url, decode_responses=True)
        for key, value in permits("after-start").items():
            client.set(key, value, ex=60)
        client.xadd(keys.PLAN_STREAM, plan_fields("after-start"))
        wait_for(lambda: client.xlen(keys.RESULT_STREAM) == 1)
        assert client.xrange(keys.RESULT_STREAM)[0][1]["status"] == "executed"
        assert metric(metrics_port, "apply_redis_up") == 1.0
        assert service.terminate() == 0
    finally:
        if service.alive:
            service.kill()
        redis_server.stop()
    lines = log_lines(service.log_path)
    assert "Traceback" not in "\n".join(lines)
    # The heap is frozen once, when the service has started: not while it waited for Redis.
    (frozen,) = [n for n, line in enumerate(lines) if "loaded heap frozen" in line]
    assert frozen > lines.index(waiting[0])
    assert int(lines[frozen].split("frozen_objects=")[1].split()[0]) > 100_000  # ccxt's modules and markets


def test_a_refused_login_keeps_it_up_and_halted_with_a_clear_line(
    tmp_path: Path, emulator: ExchangeEmulator
) -> None:
    redis_server = RedisServer(tmp_path, "--requirepass", "the-right-one")
    redis_server.start()
    metrics_port = free_port()
    url = f"redis://:the-wrong-one@127.0.0.1:{redis_server.port}/0"
    service = ServiceProcess(
        url, emulator.base_url, tmp_path / "service.log", APPLY_METRICS_PORT=str(metrics_port)
    )
    service.start()
    try:
        wait_for(lambda: any("refused the login" in line for line in log_lines(service.log_path)))
        assert service.alive
        assert metric(metrics_port, "apply_redis_up") == 0.0
    finally:
        service.kill()
        redis_server.stop()
    text = service.log_path.read_text()
    assert "Traceback" not in text
    assert "check the user and password in REDIS_URL" in text


def fatal_line(service: ServiceProcess, expected_exit: int) -> dict[str, object]:
    """Started, the service stops by itself with `expected_exit`; every line it wrote is JSON, and
    exactly one is an error: the one that says what to fix."""
    assert service.process is not None
    assert service.process.wait(timeout=30) == expected_exit
    lines = [json.loads(line) for line in log_lines(service.log_path)]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, lines
    assert errors[0]["exit_code"] == expected_exit
    return dict(errors[0])


def test_redis_without_keyspace_events_is_one_line_naming_the_setting(
    tmp_path: Path, emulator: ExchangeEmulator
) -> None:
    redis_server = RedisServer(tmp_path, "--notify-keyspace-events", "")
    redis_server.start()
    service = ServiceProcess(
        redis_server.url, emulator.base_url, tmp_path / "service.log", APPLY_LOG_FORMAT="json"
    )
    try:
        service.start()
        line = fatal_line(service, 3)
    finally:
        redis_server.stop()
    assert "notify-keyspace-events" in str(line["msg"])
    assert "K$" in str(line["msg"])


def test_a_busy_metrics_port_is_one_line_naming_the_setting(
    tmp_path: Path, emulator: ExchangeEmulator
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = ServiceProcess(
            "redis://127.0.0.1:1/0",
            emulator.base_url,
            tmp_path / "service.log",
            APPLY_LOG_FORMAT="json",
            APPLY_METRICS_ADDR="127.0.0.1",
            APPLY_METRICS_PORT=str(port),
        )
        service.start()
        line = fatal_line(service, 2)
    assert "APPLY_METRICS_PORT" in str(line["msg"])


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("REDIS_URL", "redis://127.0.0.1:99999/0", "REDIS_URL"),
        ("REDIS_URL", "redis://127.0.0.1:6379/x", "REDIS_URL"),
        ("APPLY_METRICS_ADDR", "not-an-address", "APPLY_METRICS_ADDR"),
        ("APPLY_MAX_NOTIONAL_USD", "1000", "APPLY_MAX_NOTIONAL_USDT"),  # a typo, with the fix
        ("APPLY_MAX_NOTIONAL_USDT", "*=1,*=2", "given twice"),
    ],
)
def test_a_bad_setting_stops_run_with_one_line_and_exit_2(
    tmp_path: Path, emulator: ExchangeEmulator, variable: str, value: str, named: str
) -> None:
    service = ServiceProcess(
        "redis://127.0.0.1:1/0", emulator.base_url, tmp_path / "service.log", APPLY_LOG_FORMAT="json"
    )
    service.env[variable] = value
    service.start()
    line = fatal_line(service, 2)
    assert named in str(line["msg"])


async def test_once_started_the_loaded_heap_is_out_of_the_collectors_sight() -> None:
    """A full collection walks every tracked object: with ccxt's modules and markets loaded, tens of ms
    during which no plan and no kill switch moves. Frozen, they are not walked."""
    service = SimpleNamespace(ready=asyncio.Event())
    freezing = asyncio.create_task(freeze_heap_once_started(cast(ApplyLayer, service)))
    await asyncio.sleep(0)
    assert gc.get_freeze_count() == 0  # not before the service has started
    tracked = len(gc.get_objects())
    service.ready.set()
    await freezing
    try:
        assert len(gc.get_objects()) < tracked / 100  # what a full collection still walks
        assert gc.get_freeze_count() > tracked / 2
    finally:
        gc.unfreeze()


async def test_the_redis_pool_holds_every_plan_in_flight(make_settings: SettingsFactory) -> None:
    """Each plan in flight keeps its claim's connection until its orders are out, and may take a second;
    redis-py refuses a connection beyond its pool's size (100 by default) rather than waiting for one."""
    redis = connect_redis(make_settings(APPLY_MAX_IN_FLIGHT="1024"))
    try:
        assert redis.connection_pool.max_connections >= 2 * 1024
    finally:
        await redis.aclose()
