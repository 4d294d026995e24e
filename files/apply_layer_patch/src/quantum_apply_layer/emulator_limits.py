"""The emulator's rate limits, counted as Binance counts them: request weight per minute (per IP),
orders per 10 s and per minute (per account), in fixed windows.

Over a limit: HTTP 429 with `Retry-After` (seconds to the window's end). A client that sends anything
before that time has passed is banned: HTTP 418 with `Retry-After` for the whole ban, every request
refused until it ends. Every answer carries `X-MBX-USED-WEIGHT-1M`; order answers also
`X-MBX-ORDER-COUNT-10S` and `X-MBX-ORDER-COUNT-1M`.
"""

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """A limit's answer as Binance shapes it: an HTTP status and a {"code", "msg"} body."""

    http_status: int
    code: int
    msg: str


@dataclass(frozen=True)
class LimitSettings:
    weight_per_minute: int
    orders_per_10s: int
    orders_per_minute: int
    ban_seconds: int
    # Tests stretch the windows so that a window's end never falls in the middle of a test.
    window_scale: int


@dataclass(frozen=True)
class Admission:
    """The headers every answer carries, and the refusal when the request is over a limit."""

    headers: dict[str, str]
    refusal: Refusal | None
    retry_after_s: int | None


class RateLimits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}
        self._refused_until_ms = 0
        self._banned_until_ms = 0

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._refused_until_ms = self._banned_until_ms = 0

    def admit(self, weight: int, orders: int, now_ms: int, settings: LimitSettings) -> Admission:
        with self._lock:
            if now_ms < self._banned_until_ms:
                return self._banned(now_ms)
            if now_ms < self._refused_until_ms:
                # Going on after a 429 earns the ban.
                self._banned_until_ms = now_ms + settings.ban_seconds * 1000
                return self._banned(now_ms)
            minute = 60_000 * settings.window_scale
            ten_s = 10_000 * settings.window_scale
            used = self._add("weight", minute, weight, now_ms)
            headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
            if orders:
                count_10s = self._add("orders_10s", ten_s, orders, now_ms)
                count_1m = self._add("orders_1m", minute, orders, now_ms)
                headers["X-MBX-ORDER-COUNT-10S"] = str(count_10s)
                headers["X-MBX-ORDER-COUNT-1M"] = str(count_1m)
                if count_10s > settings.orders_per_10s:
                    return self._refuse(
                        now_ms, ten_s, headers, -1015, f"{settings.orders_per_10s} orders per TEN_SECONDS"
                    )
                if count_1m > settings.orders_per_minute:
                    return self._refuse(
                        now_ms, minute, headers, -1015, f"{settings.orders_per_minute} orders per MINUTE"
                    )
            if used > settings.weight_per_minute:
                return self._refuse(
                    now_ms, minute, headers, -1003, f"{settings.weight_per_minute} requests per minute"
                )
            return Admission(headers, None, None)

    def _add(self, name: str, window_ms: int, amount: int, now_ms: int) -> int:
        key = (name, now_ms // window_ms)
        self._counts = {k: v for k, v in self._counts.items() if k[0] != name or k[1] >= key[1]}
        self._counts[key] = self._counts.get(key, 0) + amount
        return self._counts[key]

    def _refuse(
        self, now_ms: int, window_ms: int, headers: dict[str, str], code: int, limit: str
    ) -> Admission:
        window_end = (now_ms // window_ms + 1) * window_ms
        self._refused_until_ms = max(self._refused_until_ms, window_end)
        retry_after = math.ceil((window_end - now_ms) / 1000)
        headers = {**headers, "Retry-After": str(retry_after)}
        if code == -1015:
            msg = f"Too many new orders; current limit is {limit}."
        else:
            msg = (
                f"Too many requests; current limit is {limit}. "
                "Please use the websocket for live updates to avoid polling the API."
            )
        return Admission(headers, Refusal(429, code, msg), retry_after)

    def _banned(self, now_ms: int) -> Admission:
        retry_after = math.ceil((self._banned_until_ms - now_ms) / 1000)
        used = sum(v for (name, _), v in self._counts.items() if name == "weight")
        headers = {"X-MBX-USED-WEIGHT-1M": str(used), "Retry-After": str(retry_after)}
        msg = (
            f"Way too many requests; IP banned until {self._banned_until_ms}. "
            "Please use the websocket for live updates to avoid bans."
        )
        return Admission(headers, Refusal(418, -1003, msg), retry_after)


@dataclass(frozen=True)
class Cost:
    """What one call costs, from Binance's USD-M documentation."""

    weight: int
    orders: int = 0
    weight_without_symbol: int | None = None  # some lists cost more for every symbol at once


# (method, path) -> cost. Paths not listed (the emulator's own /_emulator/...) are free and unlimited.
ENDPOINT_COSTS: dict[tuple[str, str], Cost] = {
    ("GET", "/fapi/v1/ping"): Cost(1),
    ("GET", "/fapi/v1/time"): Cost(1),
    ("GET", "/fapi/v1/exchangeInfo"): Cost(1),
    ("GET", "/fapi/v1/leverageBracket"): Cost(1),
    ("GET", "/fapi/v2/positionRisk"): Cost(5),
    ("GET", "/fapi/v3/positionRisk"): Cost(5),
    ("GET", "/fapi/v1/positionSide/dual"): Cost(30),
    ("GET", "/fapi/v1/order"): Cost(1),
    ("POST", "/fapi/v1/order"): Cost(0, orders=1),
    ("POST", "/fapi/v1/algoOrder"): Cost(0, orders=1),
    ("GET", "/fapi/v1/algoOrder"): Cost(1),
    ("DELETE", "/fapi/v1/algoOrder"): Cost(1),
    ("GET", "/fapi/v1/openAlgoOrders"): Cost(1, weight_without_symbol=40),
    ("POST", "/fapi/v1/listenKey"): Cost(1),
    ("PUT", "/fapi/v1/listenKey"): Cost(1),
    ("DELETE", "/fapi/v1/listenKey"): Cost(1),
    # The websocket API: connecting weighs 5, each call its own cost ("WS", method).
    ("GET", "/ws-fapi/v1"): Cost(5),
    ("WS", "order.place"): Cost(0, orders=1),
}
