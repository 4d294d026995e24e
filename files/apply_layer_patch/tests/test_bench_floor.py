"""The bench's floor probe: one answer per permit-like SET, tied to its key, and a probe that breaks is a
broken bench (SubprocessError), never a traceback or figures read off the wrong line."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator

import pytest
from bench import monotonic_of
from bench_floor import floor_latencies
from redis.asyncio import Redis
from redis_server import RedisServer, free_port

TRIALS = 3
IDLE_S = 0.005


@pytest.fixture
async def publishing_everything(redis: Redis) -> AsyncIterator[None]:
    """Redis publishes every keyspace event, an expiry's too (`SET ... EX` sends `set` and `expire`)."""
    await redis.config_set("notify-keyspace-events", "KA")
    yield
    await redis.config_set("notify-keyspace-events", "K$")


async def test_each_set_gets_its_notification_then_its_answer(
    redis: Redis, redis_server: RedisServer
) -> None:
    floor = await floor_latencies(redis, redis_server.url, TRIALS, IDLE_S, monotonic_of)
    assert len(floor.notified_ms) == len(floor.answered_ms) == TRIALS
    for notified, answered in zip(floor.notified_ms, floor.answered_ms, strict=True):
        assert 0 < notified < answered


@pytest.mark.usefixtures("publishing_everything")
async def test_other_events_of_the_same_key_are_not_read_as_answers(
    redis: Redis, redis_server: RedisServer
) -> None:
    floor = await floor_latencies(redis, redis_server.url, TRIALS, IDLE_S, monotonic_of)
    assert len(floor.answered_ms) == TRIALS


async def test_a_probe_that_cannot_start_is_a_broken_bench(redis: Redis) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the probe dies at once
    with pytest.raises(subprocess.SubprocessError, match="did not start"):
        await floor_latencies(redis, nowhere, TRIALS, IDLE_S, monotonic_of)
