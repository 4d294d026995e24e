"""Event-driven permit waiting: one pattern subscription to the permit keys' keyspace notifications.

A plan whose permits are not there yet registers the keys it needs and sleeps until Redis says one of
them changed or its deadline passes; no polling. Redis must publish keyspace events for string
commands (`notify-keyspace-events` with K and $), which `check_notifications` proves at start
with a probe key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import keys

log = logging.getLogger(__name__)

# The probe key outlives the wait, then expires by itself; the wait covers a loaded Redis.
PROBE_TTL_MS = 10_000
PROBE_WAIT_S = 2.0


class NotificationsOff(Exception):
    """Redis does not publish the keyspace events permit waiting depends on."""


async def check_notifications(redis: Redis) -> None:
    """Write a key of the apply layer's own and wait for its keyspace event. A probe rather than
    CONFIG GET: the apply layer's Redis user may not read the server's configuration, which under
    Sentinel holds the replication password."""
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))
    probe = keys.notification_probe(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(f"__keyspace@{db}__:{probe}")
        await redis.set(probe, "1", px=PROBE_TTL_MS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_WAIT_S
        while (remaining := deadline - loop.time()) > 0:
            if await pubsub.get_message(timeout=remaining) is not None:
                return
    finally:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    raise NotificationsOff(
        f"Redis published no keyspace event within {PROBE_WAIT_S:.0f} s for a SET of {probe}: "
        "set notify-keyspace-events to contain K and $ (e.g. 'K$'); the apply layer waits for permits "
        "without polling"
    )


class PermitSignal(asyncio.Event):
    """Set when a watched permit key changed. `at`: when the service read that notification
    (time.perf_counter()); None when it was set for a new subscription, which carries no moment."""

    at: float | None = None


class PermitWatcher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._db = int(redis.connection_pool.connection_kwargs.get("db", 0))
        self._waiters: dict[str, set[PermitSignal]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def awaited(self, key: str) -> bool:
        """Whether a plan is waiting for this permit key now."""
        return bool(self._waiters.get(key))

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
    async def watching(self, permit_keys: Iterable[str]) -> AsyncIterator[PermitSignal]:
        """An event set whenever one of these keys changes (or the subscription was re-made)."""
        event = PermitSignal()
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
        read_at = time.perf_counter()
        for event in self._waiters.get(key, ()):
            event.at = read_at
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.at = None
                event.set()
