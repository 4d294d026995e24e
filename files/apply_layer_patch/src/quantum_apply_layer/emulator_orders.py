"""One order as the emulator takes it, whichever door it came in by (REST POST or the websocket API's
`order.place`): the faults first, then the state, so both doors validate, count and fail alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quantum_apply_layer.emulator_state import BinanceError, ExchangeState

Placer = Callable[[Mapping[str, str], float], dict[str, Any]]


@dataclass(frozen=True)
class OrderAnswer:
    status: int  # HTTP status; the websocket API's "status" carries the same
    body: dict[str, Any] = field(default_factory=dict)  # the order, or Binance's {"code", "msg"}
    dropped: bool = False  # not applied, and the connection is to close without an answer
    late_s: float = 0.0  # applied, answered this late (the latency fault)

    @property
    def ok(self) -> bool:
        return self.status == 200


def take_order(
    state: ExchangeState, place: Placer, params: Mapping[str, str], received: float
) -> OrderAnswer:
    """Authenticated params in; the fault it meets (drop, fail) or what the state made of it."""
    action, faults = state.take_fault()
    if action == "drop":
        state.record_unanswered(params, received, "DROPPED", None)
        return OrderAnswer(503, dropped=True)
    if action == "fail":
        state.record_unanswered(params, received, "REJECTED", faults.fail_code)
        return OrderAnswer(faults.fail_http_status, {"code": faults.fail_code, "msg": faults.fail_msg})
    try:
        order = place(params, received)
    except BinanceError as error:
        return OrderAnswer(error.http_status, error.body())
    return OrderAnswer(200, order, late_s=faults.latency_ms / 1000)
