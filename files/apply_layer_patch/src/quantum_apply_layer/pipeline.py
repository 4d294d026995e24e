"""One plan, top to bottom: validate -> gate -> execute -> record. `handle()` is the model of the path.

The stream consumer (service.py) hands each entry here. Every Redis failure stops the plan in hand
before anything is sent (fail closed, RedisUnavailable) and leaves it pending for the consumer to take
up again once Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import gates, keys, metrics
from .backoff import Backoff
from .claim import ClaimResult, claim_args, claim_keys
from .config import Settings
from .decoding import optional_text
from .entry import RawFields, decode_entry, printable_name
from .exchange import client_order_id
from .execution import PositionUnknown, Prepared, StepExecutor, StepOutcome
from .held_claim import HeldClaim
from .market_filters import FilterError
from .order_writes import WriteStamp, watching_writes
from .permits import PermitWatcher
from .plan import OrderType, Plan, PlanError, parse_plan
from .records import Recorder, Result
from .redis_guard import RedisUnavailable, redis_failed, redis_guard
from .scripts import Scripts
from .statuses import STOPS_THE_PLAN, ResultStatus, StepStatus
from .switch import parse_switch

log = logging.getLogger(__name__)


class CouldGo(NamedTuple):
    """When a plan could go, for apply_gate_seconds (time.perf_counter()): `plan`, its permits there
    already, the start of its handling; `permit`, the read of the notification that woke it for the claim
    that passed, or, when a permit changed while that claim was in flight, the claim's sending."""

    since: Literal["permit", "plan"]
    at: float


class PlanPipeline:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        scripts: Scripts,
        permits: PermitWatcher,
        executor: StepExecutor,
        stopping: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.permits = permits
        self.executor = executor
        self.stopping = stopping
        self.recorder = Recorder(
            scripts,
            settings.consumer_group,
            settings.consumer_name,
            settings.mode,
            settings.result_maxlen,
            settings.dedupe_ttl_s,
        )

    async def handle(self, entry_id: str, fields: RawFields | None, recovered: bool) -> None:
        started = time.perf_counter()
        if recovered and not await self._still_pending(entry_id):
            return
        if fields is None:  # trimmed from the stream before we could read it
            result = Result("", "", ResultStatus.DEAD_LETTER, "entry_deleted: no fields")
            await self._record(entry_id, result, started)
            return
        try:
            plan = parse_plan(decode_entry(fields))
        except PlanError as error:
            await self.dead_letter(entry_id, fields, error, started)
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
            with redis_guard("preparing"):  # the exchange limiter's count lives in Redis
                prepared = await self.executor.prepare(plan)
        except (PositionUnknown, FilterError) as error:
            await self._record_verdict(entry_id, plan, await self._unprepared(plan, error), started)
            return

        # The claim and its WAIT on one connection: WAIT counts only what its own connection wrote, so
        # on another pooled connection it could confirm an older write while the claim is not on a replica.
        # The connection goes back to the pool after the orders: giving it back takes a few turns of the
        # event loop (0.15 ms on the bench), which the order does not wait for (the result's record does).
        async with contextlib.AsyncExitStack() as held:
            with redis_guard("claim connection"):  # a Redis that cannot give one leaves the plan pending
                connection = await held.enter_async_context(self.redis.client())
            claim, could_go = await self._claim_waiting_for_permits(plan, entry_id, connection, started)
            verdict = gates.claim_verdict(claim)
            if verdict is not None:
                _count_denial(claim)
                await self._record_verdict(entry_id, plan, verdict, started)
                return
            if not self.settings.testnet and not plan.emergency and claim.kind == "claimed":
                metrics.p33_permit_allow_total.inc()
            await self._confirm_replicated(plan, connection)
            first_order = WriteStamp()
            try:
                result = await self._send_claimed(plan, entry_id, claim, prepared, recovered, first_order)
            finally:  # an order written before Redis failed a later step was the gate's too
                _observe_gate(plan, could_go, first_order)
        await self._record(entry_id, result, started, claim_mark=claim.mark)
        if plan.emergency:
            metrics.apply_emergency_close_total.labels(result.status).inc()

    async def _send_claimed(
        self,
        plan: Plan,
        entry_id: str,
        claim: ClaimResult,
        prepared: Prepared,
        resumed: bool,
        first_order: WriteStamp,
    ) -> Result:
        """The claimed plan's orders; the result says which steps were sent and what failed.
        `first_order` is stamped when step 0's order is written (none when it was sent before)."""
        # The claim counted the orders in the exchange's budget when it was first made. A plan resumed
        # (its WAIT failed, a restart) sends on that count: counting again would hold plans back for
        # orders never sent, and the exchange's own count, read back after each answer, corrects ours.
        prepared = self.executor.refreshed(plan, prepared)
        outcomes: list[StepOutcome] = []
        try:
            resumed = resumed or claim.kind == "resume"
            await self._execute(plan, entry_id, claim, prepared, outcomes, resumed, first_order)
        except RedisUnavailable:
            raise  # the claim stays, and the plan resumes with a lookup once Redis answers
        except (RedisError, OSError) as error:  # e.g. the exchange limiter: nothing was sent
            redis_failed(error)
            raise RedisUnavailable(f"sending failed: {error}") from error
        except Exception as error:
            # Whatever broke, orders may be out: the result says which steps were sent and what failed.
            log.exception("plan %s: step %d failed unexpectedly", plan.plan_id, len(outcomes))
            outcomes.append(await self.executor.settle_unexpected(plan, len(outcomes), error))
        return _result_of(plan, outcomes)

    async def _unprepared(self, plan: Plan, error: PositionUnknown | FilterError) -> gates.Verdict:
        """Why a plan that could not be prepared stops. A position nobody can read is an error, unless
        the switch would stop the plan anyway: then the halt is the reason (an outage during a halt)."""
        if isinstance(error, FilterError) or error.held_back:
            return gates.Verdict(ResultStatus.BLOCKED, str(error), "prepare")
        with redis_guard("reading the switch"):
            raw_global, raw_symbol = await self.redis.mget(
                keys.GLOBAL_SWITCH, keys.symbol_switch(plan.symbol)
            )
        halt = gates.switch_gate(
            plan, parse_switch(optional_text(raw_global)), parse_switch(optional_text(raw_symbol))
        )
        return halt or gates.Verdict(ResultStatus.ERROR, str(error), "prepare")

    async def _still_pending(self, entry_id: str) -> bool:
        """A plan read as pending (after an outage, or taken over) may have been recorded and acked
        while it waited for a slot or its symbol's turn: handling it again would give it a second
        result, or run a plan already recorded as halted."""
        with redis_guard("XPENDING"):
            pending = await self.redis.xpending_range(
                keys.PLAN_STREAM, self.settings.consumer_group, min=entry_id, max=entry_id, count=1
            )
        return bool(pending)

    async def _confirm_replicated(self, plan: Plan, connection: Redis) -> None:
        """With replicas (Sentinel), the claim must be on one before the order goes out: a failover
        then keeps the mark, and the plan resumes with a lookup instead of a second order."""
        wanted = self.settings.redis_wait_replicas
        if not wanted:
            return
        with redis_guard("WAIT"):
            acked = await connection.wait(wanted, self.settings.redis_wait_timeout_ms)
        if acked < wanted:
            raise RedisUnavailable(
                f"claim of {plan.plan_id} reached {acked} of {wanted} replicas; not sending"
            )

    async def _record_verdict(
        self, entry_id: str, plan: Plan, verdict: gates.Verdict, started: float
    ) -> None:
        gates.count_risk_block(verdict)
        if plan.emergency:
            metrics.apply_emergency_close_total.labels(verdict.status).inc()
        await self._record(
            entry_id, Result(plan.plan_id, plan.symbol, verdict.status, verdict.reason), started
        )

    async def _claim_waiting_for_permits(
        self, plan: Plan, entry_id: str, connection: Redis, started: float
    ) -> tuple[ClaimResult, CouldGo | None]:
        """The claim, and when the plan could go (None: woken by no notification, so unknown)."""
        could_go: CouldGo | None = CouldGo("plan", started)
        woken = False
        waited_from = time.perf_counter()
        deadline = time.monotonic() + self.settings.permit_timeout_s
        permit_keys = [keys.governor_permit(plan.plan_id), keys.p33_permit(plan.plan_id)]
        held = HeldClaim(
            self.scripts.claim,
            connection,
            claim_keys(plan.plan_id, plan.symbol),
            claim_args(plan, entry_id, self.settings, self.executor.budget(plan.emergency)),
        )
        async with self.permits.watching(permit_keys) as changed:
            while True:
                changed.clear()
                changed.at = None
                sent_at = time.perf_counter()
                with redis_guard("claim"):
                    claim = await held.run()
                if claim.kind != "permit_missing":
                    if woken and changed.at is not None:
                        # A permit changed while this claim was in flight: perhaps the one that let it
                        # pass, so the plan could go from this claim on, not from the earlier wake.
                        could_go = CouldGo("permit", sent_at)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # asyncio.timeout rather than wait_for: no task of its own, so a permit wakes the plan
                # one turn of the event loop sooner.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                woken = True
                could_go = None if changed.at is None else CouldGo("permit", changed.at)
        if not self.settings.testnet:
            waited = time.perf_counter() - waited_from
            metrics.permit_wait_ms.observe(waited * 1000)
            metrics.apply_permit_wait_seconds.observe(waited)
        return claim, could_go

    async def _claim_again(self, plan: Plan, entry_id: str) -> ClaimResult:
        """Before a later step of a claimed plan: on any pooled connection (no permit is awaited)."""
        with redis_guard("claim"):
            reply = await self.scripts.claim(
                keys=claim_keys(plan.plan_id, plan.symbol),
                args=claim_args(plan, entry_id, self.settings, self.executor.budget(plan.emergency)),
            )
        return ClaimResult.from_script(reply)

    async def _execute(
        self,
        plan: Plan,
        entry_id: str,
        claim: ClaimResult,
        prepared: Prepared,
        outcomes: list[StepOutcome],
        resumed: bool,
        first_order: WriteStamp,
    ) -> None:
        """One outcome per step tried, appended as each settles (so a failure keeps the earlier ones)."""
        for index in range(len(plan.steps)):
            if index > 0:
                # A halt set while earlier steps were sending stops the steps not yet sent.
                again = await self._claim_again(plan, entry_id)
                if again.kind != "resume":
                    reason = gates.claim_verdict(again)
                    detail = reason.reason if reason else again.kind
                    outcomes.append(_not_sent(plan, index, StepStatus.HALTED, detail))
                    break
            # What the gate adds ends at the plan's first order: a resumed plan whose first order had
            # gone out before, and whose later step is sent now, adds no measure.
            watched = watching_writes(first_order) if index == 0 else contextlib.nullcontext(first_order)
            with watched:
                outcome = await self.executor.run(plan, index, claim.p33_permit, resumed, prepared)
            prepared = prepared.after(outcome)
            outcomes.append(outcome)
            if outcome.status in STOPS_THE_PLAN:
                break  # fail closed: later steps assumed this one worked

    async def dead_letter(self, entry_id: str, fields: RawFields, error: PlanError, started: float) -> None:
        """The entry goes to the dead-letter stream byte for byte, plus `dlq_reason`."""
        log.warning("plan %s dead-lettered: %s", entry_id, error)
        result = Result(
            printable_name(fields.get(b"plan_id")),
            printable_name(fields.get(b"symbol")),
            ResultStatus.DEAD_LETTER,
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
        backoff = Backoff()
        while True:
            try:
                recorded = await self.recorder.record(
                    entry_id, result, time.perf_counter() - started, claim_mark, dead_letter
                )
                break
            except (RedisError, OSError) as error:
                redis_failed(error)
                if claim_mark is None:  # nothing was sent: leave it pending, it is safe to redo
                    raise RedisUnavailable(f"recording failed: {error}") from error
                log.warning("recording plan %s failed, retrying: %s", result.plan_id, error)
                await asyncio.sleep(backoff.next_delay())
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
        return Result(plan.plan_id, plan.symbol, ResultStatus.EXECUTED, "", steps)
    if short:
        # The exchange filled less than asked (EXPIRED, price protection): never `executed`.
        first = short[0]
        reason = (
            f"step {first.index} filled {first.filled_qty:g} of {first.quantity:g} ({first.exchange_status})"
        )
        return Result(plan.plan_id, plan.symbol, ResultStatus.PARTIAL, reason, steps)
    if placed:
        reason = f"step {last.index} {last.status}: {last.detail}"
        return Result(plan.plan_id, plan.symbol, ResultStatus.PARTIAL, reason, steps)
    if all(outcome.status == StepStatus.NOTHING_TO_DO for outcome in outcomes):
        return Result(plan.plan_id, plan.symbol, ResultStatus.SKIPPED, f"nothing_to_do: {last.detail}", steps)
    # Held back by the exchange's limits: nothing went out, like a gate that blocked it.
    status = _NOTHING_SENT.get(last.status, ResultStatus.ERROR)
    return Result(plan.plan_id, plan.symbol, status, f"step {last.index} {last.status}: {last.detail}", steps)


# The plan's status when nothing went out, by its last step's status (anything else: error).
_NOTHING_SENT = {
    StepStatus.HALTED: ResultStatus.HALTED,
    StepStatus.BLOCKED: ResultStatus.BLOCKED,
    StepStatus.HELD_BACK: ResultStatus.BLOCKED,
}


def _not_sent(plan: Plan, index: int, status: StepStatus, detail: str) -> StepOutcome:
    return StepOutcome(
        index, plan.steps[index].kind, status, client_order_id(plan.plan_id, index), detail=detail
    )


def _count_denial(claim: ClaimResult) -> None:
    if claim.kind == "permit_missing":
        for missing in claim.detail.split(","):
            counter = metrics.governor_block_total if missing == "governor" else metrics.p33_permit_deny_total
            counter.labels("timeout").inc()
    elif claim.kind == "denied":
        which, _, reason = claim.detail.partition(":")
        counter = metrics.governor_block_total if which == "governor" else metrics.p33_permit_deny_total
        counter.labels(_label(reason)).inc()
    elif claim.kind == "held_back":
        metrics.apply_exchange_held_back_total.labels(claim.detail.partition(":")[0]).inc()


def _label(reason: str) -> str:
    """Keep label values few: free text from upstream would make a series per message."""
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in reason.lower())[:40]
    return cleaned or "unspecified"


def _observe_gate(plan: Plan, could_go: CouldGo | None, written: WriteStamp) -> None:
    """Measured where it runs: what the gate added before the plan's first order left (none: no order).
    A stop update's first order waits for the cancel of the standing stop (Binance's rule): kept apart."""
    if could_go is None or written.first_at is None:
        return
    order = "stop" if plan.steps[0].order_type is OrderType.STOP_LOSS_ORDER else "close"
    metrics.apply_gate_seconds.labels(could_go.since, order).observe(written.first_at - could_go.at)
