"""The PositionBook alone: when it vouches for a position, and when it sends the caller to REST."""

from __future__ import annotations

import time

import pytest

from quantum_apply_layer.config import ConfigError, load_settings
from quantum_apply_layer.exchange import Position
from quantum_apply_layer.position_book import PositionBook, Unusable


def live_book(amount: float = 1.0) -> PositionBook:
    book = PositionBook(max_age_s=10)
    book.stream_connected()
    book.reconciled({"BTCUSDT": Position(amount, 65000.0)}, {})
    return book


def test_a_book_vouches_only_once_connected_and_reconciled() -> None:
    book = PositionBook(max_age_s=10)
    assert book.usable("BTCUSDT") is Unusable.STREAM_DOWN
    book.stream_connected()
    assert book.usable("BTCUSDT") is Unusable.NOT_RECONCILED
    book.reconciled({"BTCUSDT": Position(1.0, 65000.0)}, {})
    assert book.usable("BTCUSDT") == Position(1.0, 65000.0)
    assert book.usable("ETHUSDT") == Position(0.0, 0.0)  # absent from positionRisk: flat
    book.stream_lost()
    assert book.usable("BTCUSDT") is Unusable.STREAM_DOWN


def test_a_reconciliation_older_than_the_bound_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    book = live_book()
    later = time.monotonic() + 11
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert book.usable("BTCUSDT") is Unusable.RECONCILE_OLD


def test_a_shrink_is_believed_at_once_a_growth_only_after_rest_confirms_it() -> None:
    book = live_book(1.0)
    assert book.account_update("BTCUSDT", 0.4, 100) is False
    assert book.usable("BTCUSDT") == Position(0.4, 65000.0)
    assert book.account_update("BTCUSDT", 0.9, 101) is True  # grew: REST must confirm
    assert book.usable("BTCUSDT") is Unusable.UNCONFIRMED_GROWTH
    book.confirm("BTCUSDT", Position(0.9, 65010.0))
    assert book.usable("BTCUSDT") == Position(0.9, 65010.0)
    assert book.account_update("BTCUSDT", -0.1, 102) is True  # flipped
    assert book.usable("BTCUSDT") is Unusable.UNCONFIRMED_GROWTH


def test_an_older_event_never_overwrites_a_newer_one() -> None:
    book = live_book(1.0)
    book.account_update("BTCUSDT", 0.5, 200)
    book.account_update("BTCUSDT", 0.7, 150)
    assert book.usable("BTCUSDT") == Position(0.5, 65000.0)


def test_our_own_order_must_come_back_on_the_stream_in_either_order() -> None:
    for order_first in (True, False):
        book = live_book(1.0)
        book.sending("BTCUSDT", "qh-a-0")
        assert book.usable("BTCUSDT") is Unusable.AWAITING_FILL
        if order_first:
            book.order_update("BTCUSDT", "qh-a-0", "FILLED", 300)
            assert book.usable("BTCUSDT") is Unusable.AWAITING_FILL  # the position change not yet seen
            book.account_update("BTCUSDT", 0.5, 300)
        else:
            book.account_update("BTCUSDT", 0.5, 300)
            book.order_update("BTCUSDT", "qh-a-0", "FILLED", 300)
        assert book.usable("BTCUSDT") == Position(0.5, 65000.0)


def test_a_refused_order_is_not_awaited() -> None:
    book = live_book(1.0)
    book.sending("BTCUSDT", "qh-b-0")
    book.refused("BTCUSDT", "qh-b-0")
    assert book.usable("BTCUSDT") == Position(1.0, 65000.0)


def test_a_reconciliation_older_than_an_order_is_not_applied() -> None:
    book = live_book(1.0)
    before = book.send_counts()
    book.sending("BTCUSDT", "qh-c-0")  # left while positionRisk was on its way
    book.order_update("BTCUSDT", "qh-c-0", "FILLED", 400)
    book.account_update("BTCUSDT", 0.5, 400)
    book.reconciled({"BTCUSDT": Position(1.0, 65000.0)}, before)  # the answer predates the fill
    assert book.usable("BTCUSDT") == Position(0.5, 65000.0)


def test_rest_that_disagrees_with_the_stream_is_a_mismatch() -> None:
    book = live_book(0.5)
    book.account_update("BTCUSDT", 0.2, 500)  # the stream says a manual close happened
    book.reconciled({"BTCUSDT": Position(0.5, 65000.0)}, book.send_counts())  # it did not
    assert book.mismatches == 1
    assert book.usable("BTCUSDT") == Position(0.5, 65000.0)
    book.reconciled({"BTCUSDT": Position(0.5, 65000.0)}, book.send_counts())
    assert book.mismatches == 1  # agreeing again is not another mismatch


@pytest.mark.parametrize("bound", ["1", "301", "ten"])
def test_the_bound_is_a_setting_checked_at_start(bound: str) -> None:
    with pytest.raises(ConfigError, match="APPLY_POSITION_MAX_AGE_S"):
        load_settings({"APPLY_POSITION_MAX_AGE_S": bound})
    assert load_settings({"APPLY_POSITION_MAX_AGE_S": "30"}).position_max_age_s == 30
