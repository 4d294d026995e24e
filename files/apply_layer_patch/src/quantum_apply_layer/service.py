"""The stream consumer: receive each plan and hand it to the plan pipeline (pipeline.py), which
validates, gates, executes and records it.

Plans come from a consumer group, so several processes share the stream and a dead process's
plans are reclaimed. Plans of one symbol run in stream order; different symbols run side by side,
at most APPLY_MAX_IN_FLIGHT at a time. A plan left pending by a Redis failure (RedisUnavailable) is
taken up again once Redis answers; a lost consumer group (NOGROUP) is made again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from . import keys, metrics
from .autotrip import AutoTrip
from .backoff import Backoff
from .config import Settings
from .decoding import text
from .entry import RawFields, printable_name
from .exchange import Exchange, ExchangeError
from .execution import MismatchClock, StepExecutor
from .permits import PermitWatcher, check_notifications
from .pipeline import PlanPipeline
from .plan import SYMBOL_PATTERN, PlanError
from .position_book import PositionBook
from .redis_guard import RedisUnavailable, redis_failed
from .scripts import Scripts, register_scripts
from .user_stream import UserStream
from .websocket_hosts import user_stream_url

log = logging.getLogger(__name__)
READ_BATCH = 64
READ_BLOCK_MS = 1000
RESCAN_DELAY_S = 0.2  # before taking up plans left pending, so a failing Redis is not hammered
# An entry that fails unexpectedly this many times (in any process) is dead-lettered as a poison pill
# rather than retried forever; the count lives in Redis so a crash loop or a takeover still counts.
POISON_ATTEMPTS = 3
POISON_COUNT_TTL_S = 86_400
Entry = tuple[str, RawFields | None]  # an entry id and its raw fields (None: trimmed before we read it)


class ApplyLayer:
    def __init__(self, settings: Settings, redis: Redis, exchange: Exchange) -> None:
        self.settings = settings
        self.redis = redis
        self.exchange = exchange
        self.scripts: Scripts = register_scripts(redis)
        self.permits = PermitWatcher(redis)
        self.mismatch = MismatchClock()
        self.positions = PositionBook(settings.position_max_age_s)
        self.user_stream = UserStream(exchange, self.positions, user_stream_url(settings.exchange_url))
        self.executor = StepExecutor(exchange, self.positions, self.mismatch, settings.notional_limit)
        self.stopping = asyncio.Event()
        self.pipeline = PlanPipeline(
            settings, redis, self.scripts, self.permits, self.executor, self.stopping
        )
        self.ready = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._symbol_locks: dict[str, asyncio.Lock] = {}
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rescan_pending = False  # a plan was left pending: take our own pending plans up again

    def autotrip(self) -> AutoTrip:
        def reset() -> None:
            self.executor.error_streak = 0
            self.mismatch.restart()

        return AutoTrip(
            self.redis,
            self.scripts,
            self.settings,
            lambda: self.executor.error_streak,
            self.mismatch.oldest_seconds,
            reset,
        )

    # ---- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop claiming: plans already sending finish, plans not yet claimed stay pending."""
        self.stopping.set()

    async def run(self) -> None:
        await self._start()
        self.permits.start()
        stream = asyncio.create_task(self.user_stream.run(self.stopping), name="user-data-stream")
        self.ready.set()
        log.info("consuming plans")
        try:
            await self._consume()
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            # The permit watcher first, as before the stream existed: cancelled while it subscribes,
            # redis-py can swallow the cancellation and the watcher would retry forever.
            await self.permits.stop()
            self.stopping.set()
            await stream

    async def _start(self) -> None:
        """Wait, without consuming anything, until Redis and the exchange both answer. Until then nothing
        can be claimed, so nothing is sent (fail closed), and apply_redis_up says 0. A Redis that answers
        without keyspace notifications raises NotificationsOff: a setting to fix, not a wait."""
        backoff = Backoff()
        said = ""
        while not self.stopping.is_set():
            try:
                await check_notifications(self.redis)
                await self._ensure_group()
                await self.exchange.open()
                if said:
                    log.warning("Redis and the exchange answer: starting")
                return
            except (RedisError, OSError, ExchangeError) as error:
                redis_failed(error)
                waiting_for = _waiting_for(error)
                if waiting_for != said:  # once per cause, not once per retry
                    log.warning("waiting, halted (nothing can be claimed): %s", waiting_for)
                    said = waiting_for
                await self._sleep(backoff.next_delay())

    async def _ensure_group(self) -> bool:
        """Create the consumer group unless it exists; True when this call created it.

        It starts at the oldest entry the marks can still recognise (APPLY_DEDUPE_TTL_S back), so a
        group made again after it was lost replays what it may not have handled, and every entry it
        had handled is only acknowledged again (record.lua, claim.lua): never a second result, never
        an order for a plan recorded as halted. Older entries are stale for any gate anyway."""
        now_s, _micro = await self.redis.time()
        start_ms = max(0, (int(now_s) - self.settings.dedupe_ttl_s) * 1000)
        try:
            await self.redis.xgroup_create(
                keys.PLAN_STREAM, self.settings.consumer_group, id=f"{start_ms}-0", mkstream=True
            )
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            return False
        return True

    async def _group_lost(self) -> None:
        """The group was deleted, or Redis restarted without its data: make it again at once."""
        if await self._ensure_group():
            metrics.apply_consumer_group_recreated_total.inc()
            log.error(
                "consumer group %s was gone (deleted, or Redis lost its data); made it again: entries "
                "already handled are acknowledged, not replayed",
                self.settings.consumer_group,
            )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # ---- receive -----------------------------------------------------------------------------
    async def _consume(self) -> None:
        pending_cursor: str | None = "0"  # our own unacknowledged plans first (a restart, an outage)
        next_reclaim = 0.0
        backoff = Backoff()
        while not self.stopping.is_set():
            if self._rescan_pending and pending_cursor is None:
                self._rescan_pending = False
                pending_cursor = "0"
                await self._sleep(RESCAN_DELAY_S)
            try:
                if pending_cursor is not None:
                    entries = await self._read(pending_cursor, block=None)
                    pending_cursor = entries[-1][0] if entries else None
                    await self._dispatch_all(entries, recovered=True)
                elif time.monotonic() >= next_reclaim:
                    await self._reclaim_from_dead_consumers()
                    next_reclaim = time.monotonic() + self.settings.reclaim_idle_ms / 2000
                else:
                    await self._dispatch_all(await self._read(">", block=READ_BLOCK_MS), recovered=False)
                metrics.apply_redis_up.set(1)
                backoff.reset()
            except (RedisError, OSError) as error:
                pending_cursor = "0"
                if not await self._recovered_group(error):
                    await self._sleep(backoff.next_delay())

    async def _recovered_group(self, error: RedisError | OSError) -> bool:
        """After a failed read: True when it was only the consumer group gone, made again now."""
        if isinstance(error, ResponseError) and "NOGROUP" in str(error):
            try:
                await self._group_lost()
                return True
            except (RedisError, OSError) as retry_error:
                redis_failed(retry_error)
                return False
        redis_failed(error)
        log.warning("reading plans failed, will retry: %s", error)
        return False

    async def _read(self, cursor: str, block: int | None) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            self.settings.consumer_group,
            self.settings.consumer_name,
            {keys.PLAN_STREAM: cursor},
            count=READ_BATCH,
            block=block,
        )
        # XREADGROUP answers [[stream, [[id, fields], ...]]]; fields are None for a trimmed entry. They
        # stay bytes here: decoding them is part of handling the plan, inside its own guard.
        streams = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]], reply or [])
        return [
            (text(entry_id), fields or None)
            for _stream, stream_entries in streams
            for entry_id, fields in stream_entries
        ]

    async def _reclaim_from_dead_consumers(self) -> None:
        """Plans a crashed consumer read but never recorded: take them over and resume them."""
        start = "0-0"
        while not self.stopping.is_set():
            reply = await self.redis.xautoclaim(
                keys.PLAN_STREAM,
                self.settings.consumer_group,
                self.settings.consumer_name,
                min_idle_time=self.settings.reclaim_idle_ms,
                start_id=start,
                count=READ_BATCH,
            )
            # XAUTOCLAIM answers [next start, [[id, fields], ...], deleted ids].
            start, claimed = text(reply[0]), cast(list[tuple[bytes, dict[bytes, bytes] | None]], reply[1])
            entries = [(text(entry_id), fields or None) for entry_id, fields in claimed]
            if entries:
                log.warning("reclaimed %d plans from a dead consumer", len(entries))
            await self._dispatch_all(entries, recovered=True)
            if start == "0-0":
                return

    async def _dispatch_all(self, entries: Sequence[Entry], recovered: bool) -> None:
        for entry_id, fields in entries:
            if entry_id in self._in_flight:
                continue
            await self._slots.acquire()
            self._in_flight.add(entry_id)
            task = asyncio.create_task(self._run_entry(entry_id, fields, recovered), name=f"plan-{entry_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_entry(self, entry_id: str, fields: RawFields | None, recovered: bool) -> None:
        symbol = printable_name((fields or {}).get(b"symbol")).strip()
        lock = self._symbol_locks.setdefault(symbol, asyncio.Lock()) if SYMBOL_PATTERN.match(symbol) else None
        try:
            if lock is None:
                await self.pipeline.handle(entry_id, fields, recovered)
            else:
                async with lock:
                    await self.pipeline.handle(entry_id, fields, recovered)
        except RedisUnavailable as error:
            log.warning("plan %s left pending: %s", entry_id, error)
            self._rescan_pending = True
        except Exception as error:
            # A bug must not kill the loop: the entry is tried again, and after POISON_ATTEMPTS
            # failures it is dead-lettered with the exception's name instead of blocking its symbol.
            log.exception("plan %s failed unexpectedly", entry_id)
            await self._failed_unexpectedly(entry_id, fields, error)
        finally:
            self._in_flight.discard(entry_id)
            self._slots.release()

    async def _failed_unexpectedly(self, entry_id: str, fields: RawFields | None, error: Exception) -> None:
        started = time.perf_counter()
        try:
            failures = await self.redis.hincrby(keys.FAILURES, entry_id, 1)
            await self.redis.expire(keys.FAILURES, POISON_COUNT_TTL_S)
            if failures < POISON_ATTEMPTS:
                self._rescan_pending = True  # taken up again with our other pending plans
                return
            name = type(error).__name__
            metrics.apply_poison_plans_total.labels(name).inc()
            reason = PlanError("poison", f"{name} in {failures} attempts: {str(error)[:200]}")
            await self.pipeline.dead_letter(entry_id, fields or {}, reason, started)
            await self.redis.hdel(keys.FAILURES, entry_id)
        except (RedisError, OSError, RedisUnavailable) as redis_error:
            redis_failed(redis_error)
            log.warning("plan %s left pending: %s", entry_id, redis_error)
            self._rescan_pending = True


def _waiting_for(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return f"Redis refused the login ({error}): check the user and password in REDIS_URL"
    if isinstance(error, NoPermissionError):
        return f"Redis refused a command to the apply layer's user ({error}): check its ACL (roles/redis)"
    if isinstance(error, RedisError | OSError):
        return f"Redis does not answer ({error}): is it up, and is REDIS_URL right?"
    return f"the exchange does not answer ({error}): is APPLY_EXCHANGE_URL right and reachable?"
