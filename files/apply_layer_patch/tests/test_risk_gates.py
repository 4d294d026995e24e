"""The apply layer's own risk gates: order-rate limits shared by every process, max notional per order,
the auto-trip that latches, and the operator's emergency close while halted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import ServiceFactory
from plans import add_plan, plan_fields, wait_for_results
from redis.asyncio import Redis
from redis_server import RedisServer
from service_process import ServiceProcess
from test_faults import SYMBOLS, load_plans

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_state import Faults

SCRIPT = str(Path(sys.executable).parent / "quantum-apply-layer")


async def test_two_processes_share_one_order_rate_limit(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    await load_plans(redis, 200, "rate")
    limit = {"APPLY_MAX_ORDERS_PER_SECOND": "10"}
    async with (
        running_service(APPLY_CONSUMER_NAME="host-a", **limit),
        running_service(APPLY_CONSUMER_NAME="host-b", **limit),
    ):
        found = await wait_for_results(redis, 200, timeout_s=60)
    assert {fields["consumer"] for fields in found.values()} == {"host-a", "host-b"}
    statuses = Counter(fields["status"] for fields in found.values())
    assert statuses["executed"] >= 1
    assert statuses["executed"] + statuses["blocked"] == 200
    assert all(
        f["reason"] == "rate_limited: global:10/s orders" for f in found.values() if f["status"] == "blocked"
    )
    # Fixed one-second windows: no second of arrivals at the exchange holds more than two windows' worth.
    times = sorted(o.received_monotonic for o in emulator.orders())
    assert len(times) == statuses["executed"]
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 20


async def test_the_rate_counter_is_shared_through_redis(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"ETHUSDT": 10.0})
    await redis.set(keys.rate_counter("ETHUSDT"), 3, px=60_000)  # another process used this second up
    async with running_service(APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL="3"):
        await add_plan(redis, "eth", symbol="ETHUSDT")
        await add_plan(redis, "btc", symbol="BTCUSDT")
        found = await wait_for_results(redis, 2)
    assert found["eth"]["status"] == "blocked"
    assert found["eth"]["reason"] == "rate_limited: symbol:3/s orders"
    assert found["btc"]["status"] != "blocked"  # another symbol has its own window


async def test_an_order_over_the_notional_limit_is_blocked_not_trimmed(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 1.0, "ETHUSDT": 1.0})
    async with running_service(APPLY_MAX_NOTIONAL_USDT="BTCUSDT=1000,*=5000"):
        await add_plan(redis, "big")  # 0.01 BTC at 65000 = 650 USDT: under the BTC limit
        await redis.set(keys.governor_permit("huge"), json.dumps({"granted": True}))
        await redis.set(keys.p33_permit("huge"), json.dumps({"allow": True, "safe_close_qty": 0.5}))
        await redis.xadd(keys.PLAN_STREAM, plan_fields("huge"))  # 0.5 BTC = 32500 USDT
        await add_plan(redis, "eth", symbol="ETHUSDT")  # 0.01 ETH: under the * limit
        found = await wait_for_results(redis, 3)
    assert found["big"]["status"] == "executed"
    assert found["eth"]["status"] == "executed"
    assert found["huge"]["status"] == "blocked"
    assert "over the 1000 USDT limit per order" in found["huge"]["reason"]
    assert sorted(str(o.client_order_id) for o in emulator.orders()) == ["qh-big-0", "qh-eth-0"]


async def test_auto_trip_latches_across_a_restart_until_an_operator_resumes(
    redis_server: RedisServer, redis: Redis, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_positions({"BTCUSDT": 1.0})
    emulator.set_faults(Faults(fail_next=3, fail_code=-1001, fail_http_status=503))
    env = {"APPLY_AUTO_TRIP_EXCHANGE_ERRORS": "3", "APPLY_AUTO_TRIP_CHECKS": "2"}
    service = ServiceProcess(redis_server.url, emulator.base_url, tmp_path / "log", **env)
    service.start()
    try:
        for n in range(3):
            await add_plan(redis, f"fail-{n}")
        await wait_for_results(redis, 3)
        for _ in range(200):  # bounded: 10 s; the trip needs 2 checks, one a second
            if await redis.get(keys.GLOBAL_SWITCH) == "true":
                break
            await asyncio.sleep(0.05)
        reason = await redis.get(keys.GLOBAL_SWITCH_REASON)
        assert reason.startswith("auto-trip: exchange_errors: ")
        service.terminate()
        service.start()  # a restart does not clear it
        await add_plan(redis, "after-restart")
        assert (await wait_for_results(redis, 4))["after-restart"]["status"] == "halted"
        resume = await asyncio.to_thread(
            subprocess.run,
            [
                SCRIPT,
                "--no-env-file",
                "kill",
                "off",
                "--reason",
                "exchange fixed",
                "--who",
                "bob",
            ],
            env={**os.environ, "REDIS_URL": redis_server.url},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "halted (true) -> running (false)" in resume.stdout
        await add_plan(redis, "resumed")
        assert (await wait_for_results(redis, 5))["resumed"]["status"] == "executed"
    finally:
        service.terminate()
    audit = [fields for _id, fields in await redis.xrange(keys.AUDIT_STREAM)]
    assert [(a["who"], a["new_state"]) for a in audit] == [
        ("auto-trip@proc-consumer", "halted"),
        ("bob", "running"),
    ]


async def emergency(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [SCRIPT, "--no-env-file", "emergency-close", *args, "--who", "carol", "--wait", "15"],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        check=False,
    )


async def test_emergency_close_while_halted_only_with_the_token_the_side_and_a_position(
    redis_server: RedisServer, redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5, "ETHUSDT": -2.0})
    await redis.set(keys.GLOBAL_SWITCH, "true")
    async with running_service():
        wrong_side = await emergency(redis_server.url, "BTCUSDT", "--side", "BUY", "--reason", "INC-9")
        assert wrong_side.returncode == 4, wrong_side.stdout + wrong_side.stderr
        assert "does not close the position" in wrong_side.stdout
        flat = await emergency(redis_server.url, "SOLUSDT", "--reason", "INC-9")
        assert flat.returncode == 4
        assert "no open position" in flat.stdout
        forged = plan_fields("forged", emergency="true", emergency_side="SELL")  # no CLI token
        await redis.xadd(keys.PLAN_STREAM, forged)
        await add_plan(redis, "normal")  # everything else stays blocked
        closed = await emergency(redis_server.url, "BTCUSDT", "--side", "SELL", "--reason", "INC-9 flatten")
        assert closed.returncode == 0, closed.stdout + closed.stderr
        found = await wait_for_results(redis, 5)
    assert found["forged"]["status"] == "blocked"
    assert found["forged"]["reason"] == "permit_denied: emergency:no_token"
    assert found["normal"]["status"] == "halted"
    (order,) = [o for o in emulator.orders() if o.status != "REJECTED"]
    assert (order.symbol, order.side, order.quantity, order.reduce_only) == ("BTCUSDT", "SELL", 0.5, True)
    assert emulator.position_amount("BTCUSDT") == 0
    assert await redis.get(keys.GLOBAL_SWITCH) == "true"  # the halt itself is untouched
    audit = [fields for _id, fields in await redis.xrange(keys.AUDIT_STREAM)]
    assert [(a["action"], a["who"]) for a in audit] == [("emergency-close", "carol")] * 3
