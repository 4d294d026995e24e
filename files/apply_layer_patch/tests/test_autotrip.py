"""Auto-trip conditions, each alone, and the switch with its audit surviving a Redis restart."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis_server import RedisServer

from quantum_apply_layer import keys, metrics
from quantum_apply_layer.autotrip import AutoTrip
from quantum_apply_layer.config import load_settings
from quantum_apply_layer.scripts import register_scripts
from quantum_apply_layer.switch import read_audit, set_switch


class Signals:
    """What the service would report: an error streak and the oldest position mismatch."""

    def __init__(self) -> None:
        self.errors = 0
        self.mismatch_s = 0.0
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.errors = 0
        self.mismatch_s = 0.0


def autotrip(redis: Redis, signals: Signals, **env: str) -> AutoTrip:
    settings = load_settings({"APPLY_AUTO_TRIP_CHECKS": "3", "APPLY_CONSUMER_NAME": "host-x", **env})
    return AutoTrip(
        redis,
        register_scripts(redis),
        settings,
        lambda: signals.errors,
        lambda: signals.mismatch_s,
        signals.reset,
    )


async def test_a_mismatch_trips_only_after_n_checks_in_a_row(redis: Redis) -> None:
    signals = Signals()
    trip = autotrip(redis, signals, APPLY_AUTO_TRIP_MISMATCH_S="60")
    signals.mismatch_s = 61
    await trip.check()
    signals.mismatch_s = 0  # one good check breaks the run
    await trip.check()
    signals.mismatch_s = 61
    await trip.check()
    await trip.check()
    assert await redis.get(keys.GLOBAL_SWITCH) is None
    await trip.check()  # the third in a row
    assert await redis.get(keys.GLOBAL_SWITCH) == "true"
    assert (await redis.get(keys.GLOBAL_SWITCH_REASON)).startswith("auto-trip: position_mismatch: ")
    assert signals.resets == 1


async def test_dead_letters_above_the_rate_trip(redis: Redis) -> None:
    signals = Signals()
    trip = autotrip(
        redis, signals, APPLY_AUTO_TRIP_DEAD_LETTERS_PER_MIN="5", APPLY_AUTO_TRIP_EXCHANGE_ERRORS="0"
    )
    await trip.check()  # the window starts here
    metrics.apply_dead_letters_total.labels("missing_field").inc(6)
    for _ in range(3):
        await trip.check()
    assert (await redis.get(keys.GLOBAL_SWITCH_REASON)).startswith("auto-trip: dead_letters: 6 dead letters")
    (entry,) = await read_audit(redis, 5)
    assert entry["who"] == "auto-trip@host-x"


async def test_an_operator_halt_is_not_overwritten_by_an_auto_trip(redis: Redis) -> None:
    await set_switch(redis, register_scripts(redis), "on", "maintenance", "alice")
    signals = Signals()
    signals.errors = 10
    trip = autotrip(redis, signals)
    for _ in range(3):
        await trip.check()
    assert await redis.get(keys.GLOBAL_SWITCH_REASON) == "maintenance"
    assert len(await read_audit(redis, 5)) == 1


async def test_the_switch_and_its_audit_survive_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = Redis.from_url(server.url, decode_responses=True)
        await set_switch(client, register_scripts(client), "on", "INC-7", "alice", symbol="ETHUSDT")
        await set_switch(client, register_scripts(client), "on", "INC-8", "bob")
        await client.aclose()
        server.stop()
        server.start()
        client = Redis.from_url(server.url, decode_responses=True)
        assert await client.mget(keys.GLOBAL_SWITCH, keys.GLOBAL_SWITCH_REASON) == ["true", "INC-8"]
        assert await client.get(keys.symbol_switch("ETHUSDT")) == "true"
        assert [entry["who"] for entry in await read_audit(client, 5)] == ["bob", "alice"]
        await client.aclose()
    finally:
        server.stop()
