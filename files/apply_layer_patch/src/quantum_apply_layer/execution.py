"""From a gated plan step to at most one exchange order.

Everything an order needs is known before the claim (`prepare`): the position and mark (from the
PositionBook, else one REST read), the market's filters, the stop prices rounded and checked. After the
claim only local work is left (the min with P3.3's safe_close_qty, the notional check, the step rounding)
and the order itself, so a claim is one exchange trip from its order, whatever the distance.

Sizing is pure (testable without an exchange). Sending is never retried: a retried POST could open a
second order. A plan resumed after a crash first looks its orders up by client id (`clientAlgoId` for a
stop), and sends only the steps the exchange has never seen.

A stop-loss update replaces the position's protective stop: Binance refuses a second closePosition stop
in the same direction (-4130), so the standing one is cancelled first and the new one placed next. A
crash between the two leaves the position without a stop until the plan resumes: the lookup by
`clientAlgoId` finds nothing, the open stops are listed again (none), and the new stop is placed.

A close records what the exchange filled, not what was asked: a close filled in part is `sent` with its
`filled_qty` short of its `quantity` (the plan is then `partial`), one that filled nothing is `rejected`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

from . import gates, metrics
from .exchange import Exchange, ExchangeError, OrderAck, Position, StopOrder, client_order_id
from .exchange_limits import Budget
from .market_filters import FilterError, MarketFilters
from .plan import OrderType, Plan, Step
from .position_book import POSITION_TOLERANCE, PositionBook, Unusable
from .statuses import PLACED, StepStatus

log = logging.getLogger(__name__)
Side = Literal["BUY", "SELL"]
_CODE_IN_DETAIL = re.compile(r"code=(-?\d+)")
# Final states of a market order in which nothing more will fill.
_NOTHING_FILLED = frozenset({"EXPIRED", "CANCELED", "REJECTED", "EXPIRED_IN_MATCH"})


@dataclass(frozen=True)
class StepOutcome:
    index: int
    step: str
    status: StepStatus
    client_order_id: str
    exchange_order_id: str = ""
    detail: str = ""
    quantity: float = 0.0  # asked (a close), 0 for a stop
    filled_qty: float = 0.0  # what the exchange says it executed
    exchange_status: str = ""  # the exchange's status: FILLED, EXPIRED, NEW, ...

    @property
    def placed(self) -> bool:
        return self.status in PLACED

    @property
    def complete(self) -> bool:
        """Placed, and for a close, filled in full."""
        return self.placed and self.filled_qty >= self.quantity - POSITION_TOLERANCE

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def close_side(position_amt: float) -> Side:
    return "SELL" if position_amt > 0 else "BUY"


def close_quantity(step: Step, position_amt: float, safe_close_qty: float | None) -> float:
    """The step's share of the position, never more than what P3.3 judged safe to close."""
    quantity = abs(position_amt) * (step.pct or 0.0) / 100
    if safe_close_qty is not None:
        quantity = min(quantity, safe_close_qty)
    return max(quantity, 0.0)


def positions_disagree(p33_amt: float | None, exchange_amt: float) -> bool:
    if p33_amt is None:
        return False
    return abs(p33_amt - exchange_amt) > POSITION_TOLERANCE


class MismatchClock:
    """position_mismatch_seconds: how long P3.3 and the exchange have disagreed, per symbol."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def observe(self, symbol: str, disagree: bool) -> None:
        if disagree:
            first = self._since.setdefault(symbol, time.time())
            metrics.position_mismatch_seconds.labels(symbol).set(time.time() - first)
        else:
            self._since.pop(symbol, None)
            metrics.position_mismatch_seconds.labels(symbol).set(0)

    def oldest_seconds(self) -> float:
        return time.time() - min(self._since.values()) if self._since else 0.0

    def restart(self) -> None:
        """Count again from now: after an auto-trip, the same old mismatch must not trip it at once."""
        now = time.time()
        self._since = dict.fromkeys(self._since, now)

    def refresh(self) -> None:
        now = time.time()
        for symbol, first in self._since.items():
            metrics.position_mismatch_seconds.labels(symbol).set(now - first)


@dataclass(frozen=True)
class Prepared:
    """What a plan's orders need, known before its claim."""

    held: Position
    filters: MarketFilters
    # The protective stops standing for the symbol, read before the claim when the plan updates one.
    standing_stops: tuple[StopOrder, ...] = ()
    # The claim counted the orders in the exchange's budget: they are sent with no trip to Redis first.
    orders_counted: bool = False

    def after(self, outcome: StepOutcome) -> Prepared:
        """The position as the next step finds it: less what a placed close asked for. A fill smaller than
        asked leaves the real position larger, so the next step is sized smaller, never larger."""
        if outcome.status != StepStatus.SENT or outcome.quantity <= 0:
            return self
        reduced = max(abs(self.held.amount) - outcome.quantity, 0.0)
        return replace(self, held=Position(math.copysign(reduced, self.held.amount), self.held.mark_price))


class PositionUnknown(Exception):
    """Neither the stream nor the exchange could say what the position is: nothing is claimed.
    `held_back`: the read was not sent, to stay under the exchange's limits (no failure of the exchange)."""

    def __init__(self, message: str, held_back: bool = False) -> None:
        super().__init__(message)
        self.held_back = held_back


def _held_back(error: ExchangeError) -> bool:
    """Our own limiter or a Retry-After kept the request home: nothing was sent, nothing failed."""
    return error.kind == "rate_limit" and error.code is None


class StepExecutor:
    def __init__(
        self,
        exchange: Exchange,
        book: PositionBook,
        mismatch: MismatchClock,
        notional_limit: Callable[[str], float | None],
    ) -> None:
        self._exchange = exchange
        self._book = book
        self._mismatch = mismatch
        self._notional_limit = notional_limit
        self.error_streak = 0  # exchange failures in a row, for the auto-trip

    async def prepare(self, plan: Plan) -> Prepared:
        """Before the claim: the position (pushed, else read now), the filters, and every stop price and
        close checked against them. FilterError: the plan can never be sent as it is."""
        held = await self._book.wait_usable(plan.symbol)
        if isinstance(held, Unusable):
            metrics.apply_position_lookups_total.labels(held.value).inc()
            try:
                held = await self._exchange.position(plan.symbol, emergency=plan.emergency)
            except ExchangeError as error:
                if _held_back(error):
                    raise PositionUnknown(f"held_back: {error}", held_back=True) from error
                self.error_streak += 1
                raise PositionUnknown(f"position_unknown: {error.kind}: {error}") from error
            self._book.confirm(plan.symbol, held)
        try:
            filters = self._exchange.market_filters(plan.symbol)
        except ExchangeError as error:  # an unknown symbol
            raise FilterError(f"market_filter: {error}") from error
        remaining = abs(held.amount)
        for step in plan.steps:
            if step.order_type is OrderType.STOP_LOSS_ORDER:
                assert step.price is not None  # validated in plan.py
                filters.stop_price(step.price)
            elif remaining > 0 and step.pct:
                largest = remaining * (step.pct or 0.0) / 100  # before P3.3's safe_close_qty, which only cuts
                filters.reaches_min(largest)
                remaining -= largest
        stops: tuple[StopOrder, ...] = ()
        if any(step.order_type is OrderType.STOP_LOSS_ORDER for step in plan.steps):
            try:
                stops = tuple(await self._exchange.open_stops(plan.symbol))
            except ExchangeError as error:
                if _held_back(error):
                    raise PositionUnknown(f"held_back: {error}", held_back=True) from error
                self.error_streak += 1
                raise PositionUnknown(f"stops_unknown: {error.kind}: {error}") from error
        return Prepared(held, filters, stops)

    def budget(self, emergency: bool) -> Budget:
        """The share of the exchange's limits a plan may use, for claim.lua to count its orders in."""
        return self._exchange.budget(emergency)

    def refreshed(self, plan: Plan, prepared: Prepared) -> Prepared:
        """After the claim, locally: a change the stream pushed while the plan waited for its permits;
        and the orders are the claim's, counted in the exchange's budget when it was first made."""
        held = self._book.usable(plan.symbol)
        fresh = prepared if isinstance(held, Unusable) else replace(prepared, held=held)
        return replace(fresh, orders_counted=True)

    async def run(
        self, plan: Plan, index: int, p33: dict[str, object], resumed: bool, prepared: Prepared
    ) -> StepOutcome:
        step = plan.steps[index]
        coid = client_order_id(plan.plan_id, index)
        try:
            if resumed:
                found = await self._find(plan, step, coid)
                if found is not None:
                    return self._outcome(index, step, StepStatus.FOUND, coid, found, "sent before a restart")
            outcome = await self._send(plan, index, step, coid, p33, prepared)
        except ExchangeError as error:
            outcome = await self._after_error(plan, index, step, coid, error)
        if outcome.status == StepStatus.ERROR or self._stop_refused(step, outcome):
            # A refused stop leaves a position unprotected: the gate cannot do its job, as with an error.
            self.error_streak += 1
        elif outcome.placed:
            self.error_streak = 0
        return outcome

    async def settle_unexpected(self, plan: Plan, index: int, error: Exception) -> StepOutcome:
        """A step that raised something no one foresaw (a bug, a library's surprise): whether its order
        went out is unknown, so it is looked up, as after a timeout, before the result says anything."""
        step = plan.steps[index]
        unknown = ExchangeError("other", f"unexpected {type(error).__name__}: {error}")
        outcome = await self._after_error(plan, index, step, client_order_id(plan.plan_id, index), unknown)
        if outcome.status == StepStatus.ERROR:
            self.error_streak += 1
        return outcome

    async def _find(self, plan: Plan, step: Step, coid: str) -> OrderAck | None:
        """The step's order at the exchange, by its client id: a stop on the algo order API."""
        if step.order_type is OrderType.STOP_LOSS_ORDER:
            return await self._exchange.find_stop(plan.symbol, coid)
        return await self._exchange.find_order(plan.symbol, coid, emergency=plan.emergency)

    @staticmethod
    def _stop_refused(step: Step, outcome: StepOutcome) -> bool:
        if step.order_type is not OrderType.STOP_LOSS_ORDER or outcome.status != StepStatus.REJECTED:
            return False
        code = _CODE_IN_DETAIL.search(outcome.detail)
        metrics.apply_stop_loss_refused_total.labels(code.group(1) if code else "none").inc()
        return True

    async def _send(
        self, plan: Plan, index: int, step: Step, coid: str, p33: dict[str, object], prepared: Prepared
    ) -> StepOutcome:
        held = prepared.held
        position = held.amount
        if plan.emergency:
            return await self._emergency_close(plan, index, step, coid, prepared)
        p33_amt = _float(p33.get("exchange_position_amt"))
        self._mismatch.observe(plan.symbol, positions_disagree(p33_amt, position))
        verdict = gates.position_side_gate(p33_amt, position)
        if verdict:
            return _stopped(index, step, coid, verdict)
        if position == 0:
            return StepOutcome(index, step.kind, StepStatus.NOTHING_TO_DO, coid, detail="no open position")
        side = close_side(position)
        if step.order_type is OrderType.STOP_LOSS_ORDER:
            assert step.price is not None  # validated in plan.py
            verdict = gates.notional_gate(abs(position), step.price, self._notional_limit(plan.symbol))
            if verdict:
                return _stopped(index, step, coid, verdict)
            stop = float(prepared.filters.stop_price(step.price))
            return await self._replace_stop(plan, index, step, coid, stop, prepared)
        quantity = close_quantity(step, position, _float(p33.get("safe_close_qty")))
        if quantity <= 0:
            return StepOutcome(index, step.kind, StepStatus.NOTHING_TO_DO, coid, detail="safe_close_qty is 0")
        verdict = gates.notional_gate(quantity, held.mark_price, self._notional_limit(plan.symbol))
        if verdict:
            return _stopped(index, step, coid, verdict)
        return await self._send_close(plan, index, step, coid, side, quantity, prepared)

    async def _send_close(
        self,
        plan: Plan,
        index: int,
        step: Step,
        coid: str,
        side: Side,
        quantity: float,
        prepared: Prepared,
    ) -> StepOutcome:
        """A reduce-only market order, its quantity cut to the market's step. The book hears of it before it
        leaves: until it is back on the stream, the next plan reads the position by REST."""
        try:
            quantity = float(prepared.filters.market_quantity(quantity))
        except FilterError as error:
            return StepOutcome(index, step.kind, StepStatus.BLOCKED, coid, detail=str(error))
        self._book.sending(plan.symbol, coid)
        try:
            ack = await self._exchange.send_reduce_only_market(
                plan.symbol, side, quantity, coid, emergency=plan.emergency, counted=prepared.orders_counted
            )
        except ExchangeError as error:
            if error.kind == "rejected":
                self._book.refused(plan.symbol, coid)
            raise
        return self._sent(index, step, coid, ack, quantity)

    async def _replace_stop(
        self, plan: Plan, index: int, step: Step, coid: str, price: float, prepared: Prepared
    ) -> StepOutcome:
        """Exactly one protective stop for the position afterwards: cancel the standing one(s), read before
        the claim, then place. The cancel is part of the update, so it is the one trip besides the order."""
        side = close_side(prepared.held.amount)
        standing = [
            stop
            for stop in prepared.standing_stops
            if stop.close_position and stop.side == side and stop.order_type == "STOP_MARKET"
        ]
        mine = [stop for stop in standing if stop.client_algo_id == coid]
        if mine:
            ack = OrderAck(coid, mine[0].algo_id, "NEW", 0.0, 0.0)
            return self._outcome(index, step, StepStatus.FOUND, coid, ack, "placed before a restart")
        for stop in standing:
            await self._exchange.cancel_stop(plan.symbol, stop)
        ack = await self._exchange.send_stop_market_close(
            plan.symbol, side, price, coid, counted=prepared.orders_counted
        )
        outcome = self._sent(index, step, coid, ack, 0.0)
        replaced = ",".join(stop.client_algo_id for stop in standing)
        return replace(outcome, detail=f"{ack.status}; replaced {replaced}") if standing else outcome

    async def _emergency_close(
        self, plan: Plan, index: int, step: Step, coid: str, prepared: Prepared
    ) -> StepOutcome:
        """Only a reduce-only close of an open position on the side the operator named."""
        held = prepared.held
        verdict = gates.emergency_gate(plan.emergency_side or gates.ANY_SIDE, held.amount)
        if verdict:
            return _stopped(index, step, coid, verdict)
        quantity = close_quantity(step, held.amount, None)
        return await self._send_close(plan, index, step, coid, close_side(held.amount), quantity, prepared)

    async def _after_error(
        self, plan: Plan, index: int, step: Step, coid: str, error: ExchangeError
    ) -> StepOutcome:
        """A timeout leaves it unknown whether the exchange took the order: ask it, once, before saying."""
        if error.outcome_unknown:
            try:
                found = await self._find(plan, step, coid)
            except ExchangeError as lookup_error:
                detail = f"{error.kind}: {error}; lookup failed too ({lookup_error.kind}): outcome unknown"
                return StepOutcome(index, step.kind, StepStatus.ERROR, coid, detail=detail)
            if found is not None:
                return self._outcome(index, step, StepStatus.FOUND, coid, found, f"{error.kind}, then found")
        if _held_back(error):
            # Held back by our own limiter or a Retry-After: nothing was sent, the gate works as meant.
            return StepOutcome(index, step.kind, StepStatus.HELD_BACK, coid, detail=str(error))
        status = StepStatus.REJECTED if error.kind == "rejected" else StepStatus.ERROR
        code = f" code={error.code}" if error.code is not None else ""
        return StepOutcome(index, step.kind, status, coid, detail=f"{error.kind}{code}: {error}")

    def _sent(self, index: int, step: Step, coid: str, ack: OrderAck, quantity: float) -> StepOutcome:
        if quantity > 0 and ack.filled_qty <= 0 and ack.status in _NOTHING_FILLED:
            detail = f"{ack.status}: the exchange filled nothing of {quantity:g}"
            return StepOutcome(
                index,
                step.kind,
                StepStatus.REJECTED,
                coid,
                ack.exchange_order_id,
                detail,
                quantity,
                0.0,
                ack.status,
            )
        metrics.apply_last_execution_timestamp_seconds.set(time.time())
        detail = ack.status
        if quantity > 0 and ack.filled_qty < quantity - POSITION_TOLERANCE:
            detail = f"{ack.status}: filled {ack.filled_qty:g} of {quantity:g}"
        return StepOutcome(
            index,
            step.kind,
            StepStatus.SENT,
            coid,
            ack.exchange_order_id,
            detail,
            quantity,
            ack.filled_qty,
            ack.status,
        )

    @staticmethod
    def _outcome(
        index: int, step: Step, status: StepStatus, coid: str, ack: OrderAck, detail: str
    ) -> StepOutcome:
        return StepOutcome(
            index,
            step.kind,
            status,
            coid,
            ack.exchange_order_id,
            detail,
            ack.orig_qty,
            ack.filled_qty,
            ack.status,
        )


def _stopped(index: int, step: Step, coid: str, verdict: gates.Verdict) -> StepOutcome:
    """A gate before the order stopped this step: nothing was sent."""
    gates.count_risk_block(verdict)
    return StepOutcome(index, step.kind, StepStatus.BLOCKED, coid, detail=verdict.reason)


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
