"""Each symbol's position and mark, kept in memory from the exchange's push and checked by its pull.

The user data stream (see user_stream.py) tells the book every change; positionRisk confirms it on
connect and every `max_age_s / 2`. A position is used to size an order only when the book can vouch
for it; otherwise `usable()` says why not, and the caller reads it by REST *before* the claim.

It vouches when all of these hold (each is a way the push alone could mislead):
- the stream is connected and has been reconciled since it (re)connected: nothing was missed;
- the last reconciliation is at most `max_age_s` old: a stream that went quiet is found within it;
- every market order we sent on the symbol has come back on the stream (its ORDER_TRADE_UPDATE in a
  final state, and an ACCOUNT_UPDATE at least as recent): a stale stream shows here at the next plan;
- the stream did not report the position growing or flipping since REST last confirmed it: closes only
  shrink a position, so a stream that lies upwards must never size an order; a shrink (a liquidation,
  a manual close, our own fill) is believed at once, which can only make an order smaller.
A confirmation by REST that differs from what the stream said is a mismatch: counted and alerted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum

from . import metrics
from .exchange import Position

log = logging.getLogger(__name__)
# Amounts closer than this are the same position (exchange quantities have at most 8 decimals).
POSITION_TOLERANCE = 1e-9
# How long a plan waits for its symbol's last order to come back on the stream before it reads the
# position by REST instead. The echo travels the same path as the order's answer, so it normally lands
# within a millisecond of it; a stale stream costs this wait plus one lookup, before the claim.
FILL_ECHO_WAIT_S = 0.25
FINAL_ORDER_STATES = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"})


class Unusable(StrEnum):
    """Why a position must be read by REST before the claim (the label of apply_position_lookups_total)."""

    STREAM_DOWN = "stream_down"
    NOT_RECONCILED = "not_reconciled"
    RECONCILE_OLD = "reconcile_old"
    AWAITING_FILL = "awaiting_fill"
    UNCONFIRMED_GROWTH = "unconfirmed_growth"


@dataclass
class _Entry:
    amount: float = 0.0
    mark: float = 0.0
    grew_since_rest: bool = False  # the stream said |amount| grew or flipped; REST has not confirmed it
    stream_said: bool = False  # the amount came from the stream since REST last confirmed it
    awaiting: set[str] = field(default_factory=set)  # client ids of market orders not yet back on the stream
    account_update_ms: int = 0  # transaction time of the last ACCOUNT_UPDATE applied
    needs_account_update_ms: int = 0  # an ACCOUNT_UPDATE at least this recent must come (our fills)
    sends: int = 0  # market orders started: a reconciliation older than one of them is not applied


class PositionBook:
    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._entries: dict[str, _Entry] = {}
        self._connected = False
        self._reconciled_at: float | None = None  # monotonic; None: not since the stream (re)connected
        self._changed = asyncio.Event()  # replaced at every event: set means "look again"
        self.mismatches = 0

    # --- the stream's state ---------------------------------------------------------------------
    def stream_connected(self) -> None:
        self._connected = True
        self._reconciled_at = None
        self._publish_health()

    def stream_lost(self) -> None:
        self._connected = False
        self._reconciled_at = None
        self._publish_health()

    @property
    def connected(self) -> bool:
        return self._connected

    def reconcile_age_s(self) -> float | None:
        return None if self._reconciled_at is None else time.monotonic() - self._reconciled_at

    def fresh(self) -> bool:
        """Connected, reconciled since, and recently: the book can vouch for symbols with nothing pending."""
        age = self.reconcile_age_s()
        return self._connected and age is not None and age <= self.max_age_s

    # --- the push ---------------------------------------------------------------------------------
    def account_update(self, symbol: str, amount: float, transaction_ms: int) -> bool:
        """ACCOUNT_UPDATE: the symbol's whole position now, as the stream says it. True when it grew or
        flipped, so REST should confirm it soon."""
        if not math.isfinite(amount):
            return False
        entry = self._entries.setdefault(symbol, _Entry())
        if transaction_ms < entry.account_update_ms:
            return False  # older than what the book holds
        shrinks = abs(amount) <= abs(entry.amount) + POSITION_TOLERANCE and amount * entry.amount >= 0
        entry.grew_since_rest = entry.grew_since_rest or not shrinks
        entry.amount = amount
        entry.stream_said = True
        entry.account_update_ms = transaction_ms
        self._wake()
        return not shrinks

    def order_update(self, symbol: str, client_order_id: str, status: str, transaction_ms: int) -> None:
        """ORDER_TRADE_UPDATE: one of our market orders reached a final state at transaction_ms."""
        entry = self._entries.get(symbol)
        if entry is None or client_order_id not in entry.awaiting or status not in FINAL_ORDER_STATES:
            return
        entry.awaiting.discard(client_order_id)
        entry.needs_account_update_ms = max(entry.needs_account_update_ms, transaction_ms)
        self._wake()

    def mark(self, symbol: str, price: float) -> None:
        if math.isfinite(price) and price > 0:
            self._entries.setdefault(symbol, _Entry()).mark = price

    # --- our own orders -----------------------------------------------------------------------------
    def sending(self, symbol: str, client_order_id: str) -> None:
        """Before a market order leaves: until it is back on the stream, the position is not vouched for."""
        entry = self._entries.setdefault(symbol, _Entry())
        entry.awaiting.add(client_order_id)
        entry.sends += 1

    def refused(self, symbol: str, client_order_id: str) -> None:
        """The exchange answered that it took no order: nothing will come back on the stream."""
        entry = self._entries.get(symbol)
        if entry is not None:
            entry.awaiting.discard(client_order_id)

    def send_counts(self) -> dict[str, int]:
        return {symbol: entry.sends for symbol, entry in self._entries.items()}

    # --- the pull -------------------------------------------------------------------------------------
    def confirm(self, symbol: str, position: Position) -> None:
        """positionRisk for one symbol, read while no order of ours on it was in flight."""
        entry = self._entries.setdefault(symbol, _Entry())
        if (
            entry.stream_said
            and not entry.awaiting
            and abs(entry.amount - position.amount) > POSITION_TOLERANCE
        ):
            self.mismatches += 1
            metrics.apply_stream_position_mismatch_total.labels(symbol).inc()
            log.warning(
                "position mismatch on %s: the stream said %s, the exchange holds %s",
                symbol,
                entry.amount,
                position.amount,
            )
        entry.amount = position.amount
        entry.mark = position.mark_price or entry.mark
        entry.grew_since_rest = entry.stream_said = False
        entry.awaiting.clear()
        entry.needs_account_update_ms = 0

    def reconciled(self, positions: dict[str, Position], sends_before: dict[str, int]) -> None:
        """positionRisk for every symbol (absent = flat). A symbol with an order started since the request
        left, or not yet back on the stream, keeps the stream's view: the answer may predate that order
        (the lookup before the next claim settles it)."""
        for symbol in set(positions) | set(self._entries):
            entry = self._entries.get(symbol)
            if entry is not None and (entry.awaiting or entry.sends != sends_before.get(symbol, 0)):
                continue
            self.confirm(symbol, positions.get(symbol, Position(0.0, self._mark_of(symbol))))
        if self._connected:
            self._reconciled_at = time.monotonic()
            metrics.apply_user_stream_last_reconcile_timestamp_seconds.set(time.time())

    # --- reading -----------------------------------------------------------------------------------
    def usable(self, symbol: str) -> Position | Unusable:
        """The position to size from, or why it must be read by REST first."""
        if not self._connected:
            return Unusable.STREAM_DOWN
        if self._reconciled_at is None:
            return Unusable.NOT_RECONCILED
        if time.monotonic() - self._reconciled_at > self.max_age_s:
            return Unusable.RECONCILE_OLD
        entry = self._entries.get(symbol, _Entry())
        if entry.awaiting or entry.account_update_ms < entry.needs_account_update_ms:
            return Unusable.AWAITING_FILL
        if entry.grew_since_rest:
            return Unusable.UNCONFIRMED_GROWTH
        return Position(entry.amount, entry.mark)

    async def wait_usable(self, symbol: str, timeout_s: float = FILL_ECHO_WAIT_S) -> Position | Unusable:
        """As usable(), but a position awaiting our last order's echo on the stream gets `timeout_s` to
        receive it before the caller falls back to REST."""
        deadline = time.monotonic() + timeout_s
        while (held := self.usable(symbol)) is Unusable.AWAITING_FILL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return held

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _mark_of(self, symbol: str) -> float:
        entry = self._entries.get(symbol)
        return entry.mark if entry is not None else 0.0

    def _publish_health(self) -> None:
        metrics.apply_user_stream_up.set(1 if self._connected else 0)
