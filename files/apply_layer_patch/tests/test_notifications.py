"""The start-up check that Redis publishes the keyspace events permit waiting listens to.

The apply layer's deployed Redis user has no CONFIG (under Sentinel, CONFIG GET shows the replication
password), so the check must work without it, and still refuse a Redis that publishes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from redis_server import RedisServer

from quantum_apply_layer.permits import NotificationsOff, check_notifications

USER, PASSWORD = "no-config-probe", "no-config-probe-password"


@pytest.fixture
async def user_without_config(redis: Redis, redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client logged in as a user like the deployed apply layer's: its keys and channels, no CONFIG."""
    await redis.acl_setuser(
        USER, enabled=True, passwords=[f"+{PASSWORD}"], keys=["quantum:apply:*"],
        channels=["__keyspace@*__:quantum:*"], commands=["-@all", "+@connection", "+set", "+subscribe"],
    )  # fmt: skip
    client = Redis.from_url(redis_server.url, username=USER, password=PASSWORD, decode_responses=True)
    yield client
    await client.aclose()
    await redis.acl_deluser(USER)


async def test_passes_for_a_user_without_config(user_without_config: Redis) -> None:
    with pytest.raises(NoPermissionError):
        await user_without_config.config_get("notify-keyspace-events")
    await check_notifications(user_without_config)


async def test_refuses_a_redis_that_publishes_no_keyspace_events(redis: Redis) -> None:
    await redis.config_set("notify-keyspace-events", "")
    try:
        with pytest.raises(NotificationsOff, match="K and \\$"):
            await check_notifications(redis)
    finally:
        await redis.config_set("notify-keyspace-events", "K$")
