"""Event-driven permit waiting: one pattern subscription to the permit keys' keyspace notifications.

A plan whose permits are not there yet registers the keys it needs and sleeps until Redis says one of
them changed or its deadline passes; no polling. Redis must publish keyspace events for string
commands (`notify-keyspace-events` with K and $), which `check_notifications` verifies at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError

from . import keys

log = logging.getLogger(__name__)


class NotificationsOff(Exception):
    """Redis does not publish the keyspace events permit waiting depends on."""


async def check_notifications(redis: Redis) -> None:
    """Raises NotificationsOff when Redis answers but cannot serve permit waiting (a setting to fix);
    a Redis that is down or refuses the login raises RedisError, and start-up waits for it."""
    try:
        config = await redis.config_get("notify-keyspace-events")
    except NoPermissionError as error:
        raise NotificationsOff(
            f"cannot read notify-keyspace-events ({error}); grant the apply layer's Redis user +config|get"
        ) from error
    flags = str(next(iter(config.values()), ""))
    has_keyspace = "K" in flags
    has_strings = "$" in flags or "A" in flags
    if not (has_keyspace and has_strings):
        raise NotificationsOff(
            f"Redis notify-keyspace-events is {flags!r}; the apply layer needs K and $ (e.g. 'K$') "
            "to wait for permits without polling"
        )


class PermitWatcher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._db = int(redis.connection_pool.connection_kwargs.get("db", 0))
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def channel_prefix(self) -> str:
        return f"__keyspace@{self._db}__:"

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="permit-watcher")

    async def stop(self) -> None:
        """Cancelled while it subscribes, redis-py can swallow the cancellation, and the loop would go on:
        so the loop also checks a flag, and the cancellation is repeated until the task has ended."""
        if self._task is None:
            return
        self._stopped = True
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @contextlib.asynccontextmanager
    async def watching(self, permit_keys: Iterable[str]) -> AsyncIterator[asyncio.Event]:
        """An event set whenever one of these keys changes (or the subscription was re-made)."""
        event = asyncio.Event()
        watched = list(permit_keys)
        for key in watched:
            self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in watched:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

    async def _listen(self) -> None:
        pattern = f"{self.channel_prefix}{keys.PERMIT_PREFIX}*"
        while not self._stopped:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                # Anything that changed while we were not subscribed would be missed: let every
                # waiter look again now.
                self._wake_all()
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    self._wake(str(channel).removeprefix(self.channel_prefix))
            except (RedisError, OSError) as error:
                log.warning("permit watcher lost its subscription: %s", error)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
