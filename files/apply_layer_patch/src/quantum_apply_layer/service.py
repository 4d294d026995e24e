"""The apply layer's path for each plan, top to bottom: receive -> validate -> gate -> execute -> record.

Plans come from a consumer group, so several processes share the stream and a dead process's
plans are reclaimed. Plans of one symbol run in stream order; different symbols run side by side,
at most APPLY_MAX_IN_FLIGHT at a time. Every Redis failure stops the plan in hand before anything is
sent (fail closed) and leaves it pending, to be taken up again once Redis answers.
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

from . import gates, keys, metrics
from .autotrip import AutoTrip
from .config import Settings
from .entry import RawFields, decode_entry, printable_name, text
from .exchange import Exchange, ExchangeError, client_order_id
from .execution import MismatchClock, PositionUnknown, Prepared, StepExecutor, StepOutcome
from .market_filters import FilterError
from .permits import PermitWatcher, check_notifications
from .plan import SYMBOL_PATTERN, Plan, PlanError, parse_plan
from .position_book import PositionBook
from .records import Recorder, Result
from .scripts import Scripts, register_scripts
from .user_stream import UserStream, user_stream_url

log = logging.getLogger(__name__)
READ_BATCH = 64
READ_BLOCK_MS = 1000
MAX_BACKOFF_S = 1.0
RESCAN_DELAY_S = 0.2  # before taking up plans left pending, so a failing Redis is not hammered
RISK_GATES = frozenset({"stale", "rate_global", "rate_symbol"})  # counted in apply_risk_block_total
# An entry that fails unexpectedly this many times (in any process) is dead-lettered as a poison pill
# rather than retried forever; the count lives in Redis so a crash loop or a takeover still counts.
POISON_ATTEMPTS = 3
POISON_COUNT_TTL_S = 86_400
Entry = tuple[str, RawFields | None]  # an entry id and its raw fields (None: trimmed before we read it)


class RedisUnavailable(Exception):
    """Redis failed while a plan was in hand: the plan stays pending and nothing more is sent for it."""


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
        self.recorder = Recorder(
            self.scripts,
            settings.consumer_group,
            settings.consumer_name,
            settings.mode,
            settings.result_maxlen,
            settings.dedupe_ttl_s,
        )
        self.stopping = asyncio.Event()
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
        delay = 0.05
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
                _redis_failed(error)
                waiting_for = _waiting_for(error)
                if waiting_for != said:  # once per cause, not once per retry
                    log.warning("waiting, halted (nothing can be claimed): %s", waiting_for)
                    said = waiting_for
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

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
        delay = 0.05
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
                delay = 0.05
            except ResponseError as error:
                pending_cursor = "0"
                if "NOGROUP" not in str(error):
                    _redis_failed(error)
                    log.warning("reading plans failed, will retry: %s", error)
                    await self._sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
                    continue
                try:
                    await self._group_lost()
                except (RedisError, OSError) as retry_error:
                    _redis_failed(retry_error)
                    await self._sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_S)
            except (RedisError, OSError) as error:
                _redis_failed(error)
                log.warning("reading plans failed, will retry: %s", error)
                pending_cursor = "0"
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

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
                await self.handle(entry_id, fields, recovered)
            else:
                async with lock:
                    await self.handle(entry_id, fields, recovered)
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
            await self._dead_letter(entry_id, fields or {}, reason, started)
            await self.redis.hdel(keys.FAILURES, entry_id)
        except (RedisError, OSError, RedisUnavailable) as redis_error:
            _redis_failed(redis_error)
            log.warning("plan %s left pending: %s", entry_id, redis_error)
            self._rescan_pending = True

    # ---- validate, gate, execute, record -------------------------------------------------------
    async def handle(self, entry_id: str, fields: RawFields | None, recovered: bool) -> None:
        started = time.perf_counter()
        if recovered and not await self._still_pending(entry_id):
            return
        if fields is None:  # trimmed from the stream before we could read it
            await self._record(entry_id, Result("", "", "dead_letter", "entry_deleted: no fields"), started)
            return
        try:
            plan = parse_plan(decode_entry(fields))
        except PlanError as error:
            await self._dead_letter(entry_id, fields, error, started)
            return

        verdict = gates.decision_gate(plan) or gates.freshness_gate(
            plan, time.time(), self.settings.max_plan_age_s
        )
        if verdict is not None:
            await self._record_verdict(entry_id, plan, verdict, started)
            return
        if self.stopping.is_set():
            raise RedisUnavailable("stopping before the claim")  # left pending for the next start
        # Everything the orders need, before the claim: after it, nothing but the orders.
        try:
            prepared = await self.executor.prepare(plan)
        except (RedisError, OSError) as error:  # the exchange limiter's count lives in Redis
            _redis_failed(error)
            raise RedisUnavailable(f"preparing failed: {error}") from error
        except (PositionUnknown, FilterError) as error:
            unknown = isinstance(error, PositionUnknown) and not error.held_back
            status = "error" if unknown else "blocked"
            await self._record_verdict(entry_id, plan, gates.Verdict(status, str(error), "prepare"), started)
            return

        # The claim and its WAIT on one connection: WAIT counts only what its own connection wrote, so
        # on another pooled connection it could confirm an older write while the claim is not on a replica.
        async with self.redis.client() as connection:
            claim = await self._claim_waiting_for_permits(plan, entry_id, connection)
            verdict = gates.claim_verdict(claim)
            if verdict is not None:
                _count_denial(claim)
                await self._record_verdict(entry_id, plan, verdict, started)
                return
            if not self.settings.testnet and not plan.emergency and claim.kind == "claimed":
                metrics.p33_permit_allow_total.inc()
            await self._confirm_replicated(plan, connection)

        prepared = self.executor.refreshed(plan, prepared)
        outcomes: list[StepOutcome] = []
        try:
            await self._execute(
                plan, entry_id, claim, prepared, outcomes, resumed=recovered or claim.kind == "resume"
            )
        except RedisUnavailable:
            raise  # the claim stays, and the plan resumes with a lookup once Redis answers
        except (RedisError, OSError) as error:  # e.g. the exchange limiter: nothing was sent
            _redis_failed(error)
            raise RedisUnavailable(f"sending failed: {error}") from error
        except Exception as error:
            # Whatever broke, orders may be out: the result says which steps were sent and what failed.
            log.exception("plan %s: step %d failed unexpectedly", plan.plan_id, len(outcomes))
            outcomes.append(await self.executor.settle_unexpected(plan, len(outcomes), error))
        result = _result_of(plan, outcomes)
        await self._record(entry_id, result, started, claim_mark=claim.mark)
        if plan.emergency:
            metrics.apply_emergency_close_total.labels(result.status).inc()

    async def _still_pending(self, entry_id: str) -> bool:
        """A plan read as pending (after an outage, or taken over) may have been recorded and acked
        while it waited for a slot or its symbol's turn: handling it again would give it a second
        result, or run a plan already recorded as halted."""
        try:
            pending = await self.redis.xpending_range(
                keys.PLAN_STREAM, self.settings.consumer_group, min=entry_id, max=entry_id, count=1
            )
        except (RedisError, OSError) as error:
            _redis_failed(error)
            raise RedisUnavailable(f"XPENDING failed: {error}") from error
        return bool(pending)

    async def _confirm_replicated(self, plan: Plan, connection: Redis) -> None:
        """With replicas (Sentinel), the claim must be on one before the order goes out: a failover
        then keeps the mark, and the plan resumes with a lookup instead of a second order."""
        wanted = self.settings.redis_wait_replicas
        if not wanted:
            return
        try:
            acked = await connection.wait(wanted, self.settings.redis_wait_timeout_ms)
        except (RedisError, OSError) as error:
            _redis_failed(error)
            raise RedisUnavailable(f"WAIT failed: {error}") from error
        if acked < wanted:
            raise RedisUnavailable(
                f"claim of {plan.plan_id} reached {acked} of {wanted} replicas; not sending"
            )

    async def _record_verdict(
        self, entry_id: str, plan: Plan, verdict: gates.Verdict, started: float
    ) -> None:
        if verdict.gate in RISK_GATES:
            metrics.apply_risk_block_total.labels(verdict.gate).inc()
        if plan.emergency:
            metrics.apply_emergency_close_total.labels(verdict.status).inc()
        await self._record(
            entry_id, Result(plan.plan_id, plan.symbol, verdict.status, verdict.reason), started
        )

    async def _claim_waiting_for_permits(
        self, plan: Plan, entry_id: str, connection: Redis
    ) -> gates.ClaimResult:
        waited_from = time.perf_counter()
        deadline = time.monotonic() + self.settings.permit_timeout_s
        permit_keys = [keys.governor_permit(plan.plan_id), keys.p33_permit(plan.plan_id)]
        async with self.permits.watching(permit_keys) as changed:
            while True:
                changed.clear()
                claim = await self._claim(plan, entry_id, connection)
                if claim.kind != "permit_missing":
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        if not self.settings.testnet:
            waited = time.perf_counter() - waited_from
            metrics.permit_wait_ms.observe(waited * 1000)
            metrics.apply_permit_wait_seconds.observe(waited)
        return claim

    async def _claim(self, plan: Plan, entry_id: str, connection: Redis) -> gates.ClaimResult:
        try:
            reply = await self.scripts.claim(
                keys=keys.claim_keys(plan.plan_id, plan.symbol),
                args=[
                    entry_id,
                    "0" if self.settings.testnet else "1",
                    "1" if plan.only_reduces else "0",
                    self.settings.dedupe_ttl_s,
                    self.settings.consumer_name,
                    len(plan.steps),
                    self.settings.max_orders_per_s,
                    self.settings.max_orders_per_s_per_symbol,
                    "1" if plan.emergency else "0",
                ],
                client=connection,
            )
        except (RedisError, OSError) as error:
            _redis_failed(error)
            raise RedisUnavailable(f"claim failed: {error}") from error
        return gates.ClaimResult.from_script(reply)

    async def _execute(
        self,
        plan: Plan,
        entry_id: str,
        claim: gates.ClaimResult,
        prepared: Prepared,
        outcomes: list[StepOutcome],
        resumed: bool,
    ) -> None:
        """One outcome per step tried, appended as each settles (so a failure keeps the earlier ones)."""
        for index in range(len(plan.steps)):
            if index > 0:
                # A halt set while earlier steps were sending stops the steps not yet sent.
                again = await self._claim(plan, entry_id, self.redis)
                if again.kind != "resume":
                    reason = gates.claim_verdict(again)
                    detail = reason.reason if reason else again.kind
                    outcomes.append(_not_sent(plan, index, "halted", detail))
                    break
            outcome = await self.executor.run(plan, index, claim.p33_permit, resumed, prepared)
            prepared = prepared.after(outcome)
            outcomes.append(outcome)
            if outcome.status in {"rejected", "error", "blocked", "held_back"}:
                break  # fail closed: later steps assumed this one worked

    async def _dead_letter(self, entry_id: str, fields: RawFields, error: PlanError, started: float) -> None:
        """The entry goes to the dead-letter stream byte for byte, plus `dlq_reason`."""
        log.warning("plan %s dead-lettered: %s", entry_id, error)
        result = Result(
            printable_name(fields.get(b"plan_id")),
            printable_name(fields.get(b"symbol")),
            "dead_letter",
            str(error),
        )
        dead_letter = {**fields, b"dlq_reason": str(error).encode()}
        if await self._record(entry_id, result, started, dead_letter=dead_letter):
            metrics.apply_dead_letters_total.labels(error.reason).inc()

    async def _record(
        self,
        entry_id: str,
        result: Result,
        started: float,
        claim_mark: dict[str, object] | None = None,
        dead_letter: RawFields | None = None,
    ) -> bool:
        """Retried until Redis takes it: once an order went out, its result must not be lost.
        False when the entry had been recorded before (a replay): nothing is counted twice."""
        delay = 0.05
        while True:
            try:
                recorded = await self.recorder.record(
                    entry_id, result, time.perf_counter() - started, claim_mark, dead_letter
                )
                break
            except (RedisError, OSError) as error:
                _redis_failed(error)
                if claim_mark is None:  # nothing was sent: leave it pending, it is safe to redo
                    raise RedisUnavailable(f"recording failed: {error}") from error
                log.warning("recording plan %s failed, retrying: %s", result.plan_id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        if not recorded:
            log.info("entry %s had been recorded before (replayed); acknowledged only", entry_id)
            return False
        metrics.apply_executed_total.labels(result.status).inc()
        metrics.apply_plan_duration_seconds.observe(time.perf_counter() - started)
        log.info(
            "plan handled",
            extra={"plan_id": result.plan_id, "status": result.status, "reason": result.reason},
        )
        return True


def _result_of(plan: Plan, outcomes: list[StepOutcome]) -> Result:
    placed = sum(outcome.placed for outcome in outcomes)
    last = outcomes[-1]
    steps = [outcome.as_dict() for outcome in outcomes]
    short = [outcome for outcome in outcomes if outcome.placed and not outcome.complete]
    if placed == len(plan.steps) and not short:
        return Result(plan.plan_id, plan.symbol, "executed", "", steps)
    if short:
        # The exchange filled less than asked (EXPIRED, price protection): never `executed`.
        first = short[0]
        reason = (
            f"step {first.index} filled {first.filled_qty:g} of {first.quantity:g} ({first.exchange_status})"
        )
        return Result(plan.plan_id, plan.symbol, "partial", reason, steps)
    if placed:
        return Result(
            plan.plan_id, plan.symbol, "partial", f"step {last.index} {last.status}: {last.detail}", steps
        )
    if all(outcome.status == "nothing_to_do" for outcome in outcomes):
        return Result(plan.plan_id, plan.symbol, "skipped", f"nothing_to_do: {last.detail}", steps)
    # Held back by the exchange's limits: nothing went out, like a gate that blocked it.
    status = {"halted": "halted", "blocked": "blocked", "held_back": "blocked"}.get(last.status, "error")
    return Result(plan.plan_id, plan.symbol, status, f"step {last.index} {last.status}: {last.detail}", steps)


def _not_sent(plan: Plan, index: int, status: str, detail: str) -> StepOutcome:
    return StepOutcome(
        index, plan.steps[index].kind, status, client_order_id(plan.plan_id, index), detail=detail
    )


def _count_denial(claim: gates.ClaimResult) -> None:
    if claim.kind == "permit_missing":
        for missing in claim.detail.split(","):
            counter = metrics.governor_block_total if missing == "governor" else metrics.p33_permit_deny_total
            counter.labels("timeout").inc()
    elif claim.kind == "denied":
        which, _, reason = claim.detail.partition(":")
        counter = metrics.governor_block_total if which == "governor" else metrics.p33_permit_deny_total
        counter.labels(_label(reason)).inc()


def _label(reason: str) -> str:
    """Keep label values few: free text from upstream would make a series per message."""
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in reason.lower())[:40]
    return cleaned or "unspecified"


def _waiting_for(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return f"Redis refused the login ({error}): check the user and password in REDIS_URL"
    if isinstance(error, NoPermissionError):
        return f"Redis refused a command to the apply layer's user ({error}): check its ACL (roles/redis)"
    if isinstance(error, RedisError | OSError):
        return f"Redis does not answer ({error}): is it up, and is REDIS_URL right?"
    return f"the exchange does not answer ({error}): is APPLY_EXCHANGE_URL right and reachable?"


def _redis_failed(error: BaseException) -> None:
    if isinstance(error, RedisError | OSError):
        metrics.apply_redis_up.set(0)
        metrics.apply_redis_errors_total.inc()
