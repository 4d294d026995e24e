"""The orders' held door: Binance's websocket API, `order.place` on wss://ws-fapi.binance.com/ws-fapi/v1.

Why: from the call to the bytes written, a close through ccxt's REST request costs about 1.3 ms of Python
on the bench machine after an idle wait (ccxt builds and signs the request, aiohttp builds the HTTP
request), and a close by this door about 0.4: one JSON text, one HMAC, one frame on a connection that is
already open (measured in one run, p50, 300 closes each, alternated).

- One connection, opened when the adapter opens and held: aiohttp answers the server's pings and sends
  its own, so a connection dead without a FIN is found within two heartbeats. After a drop it is opened
  again with a backoff; at 23 hours, before Binance's 24-hour limit, it is drained, closed and opened
  again. While no connection is open, `place` refuses before sending anything (`sent=False`) and the
  adapter sends by REST: an order goes by one door, never both.
- A request is signed as Binance documents for HMAC keys: `apiKey` and `timestamp` (the exchange's
  clock, as ccxt measures it) among the params, and the signature over all params sorted by name.
- An answer is matched to its request by id. A connection lost, or no answer within the timeout, while an
  order is in flight: its outcome is unknown (`OrderSocketLost`, `TimeoutError`), and the caller looks the
  order up before it sends again, as after a REST timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp

from . import metrics
from .order_writes import stamp_write

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
MAX_AGE_S = 23 * 3600.0  # Binance closes a connection at 24 hours; the next one is opened before that
DRAIN_S = 10.0  # how long a retired connection may still be read for answers in flight
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
# A connection that closes sooner does not reset the backoff: a server that accepts and drops at once
# would otherwise be connected to ten times a second, at weight 5 each.
STABLE_S = 60.0
_THROTTLED = (429, 418)


def _retry_after_s(headers: Mapping[str, str] | None) -> float:
    """A refusal's Retry-After in seconds; 60 when it gave none (as the REST door does)."""
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value.isdigit() else 60.0


class OrderSocketLost(Exception):
    """The connection closed with the request in flight, or was not open: see `sent`."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class OrderSocket:
    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        clock_ms: Callable[[], int],
        before_connect: Callable[[], Awaitable[None]],
        refused: Callable[[int, float], Awaitable[None]],
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._secret = api_secret.encode()
        self._clock_ms = clock_ms
        self._before_connect = before_connect  # the connection's weight passes the limits, or it raises
        self._refused = refused  # a 429 or 418 at the handshake, and its Retry-After: nothing is sent
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._opened = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once a connection is open; False if none opened within `timeout_s`."""
        try:
            await asyncio.wait_for(self._opened.wait(), timeout_s)
        except TimeoutError:
            return False
        return self.connected

    async def place(self, params: dict[str, str], timeout_s: float) -> dict[str, Any]:
        """Send `order.place` with these params; the answer as Binance gives it: `status`, then `result`
        or `error`, and `rateLimits`."""
        socket = self._socket
        if socket is None or socket.closed:
            raise OrderSocketLost("the websocket API connection is not open", sent=False)
        signed: dict[str, object] = {**params, "apiKey": self._api_key, "timestamp": self._clock_ms()}
        payload = urlencode(sorted(signed.items()))
        signed["signature"] = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        request_id = str(next(self._ids))
        answer = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        request = json.dumps({"id": request_id, "method": "order.place", "params": signed})
        try:
            # Stamped as the write is called, as REST's hook is: on loopback the kernel takes the bytes
            # some 20 µs into the write, and most of the rest is the process they woke running first,
            # not the gate's. A write that raises was stamped too: its outcome is looked up anyway.
            stamp_write()
            await socket.send_str(request)
            return await asyncio.wait_for(answer, timeout_s)
        except (ConnectionError, aiohttp.ClientError) as error:
            raise OrderSocketLost(f"the websocket API connection failed: {error}", sent=True) from error
        finally:
            self._pending.pop(request_id, None)

    async def run(self) -> None:
        """Hold a connection until cancelled: connect, read answers, and after a drop connect again."""
        delay = MIN_BACKOFF_S
        last_failure = ""
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            while True:
                opened_at = None
                try:
                    await self._before_connect()
                    async with session.ws_connect(self._url, heartbeat=HEARTBEAT_S) as socket:
                        opened_at = loop.time()
                        self._socket = socket
                        self._opened.set()
                        metrics.apply_exchange_order_socket_up.set(1)
                        log.info("websocket API open: closes go by order.place", extra={"url": self._url})
                        last_failure = ""
                        await self._read(socket)
                    failure = "the connection closed"
                except aiohttp.WSServerHandshakeError as error:
                    failure = f"handshake refused: {error.status} {error.message}"
                    if error.status in _THROTTLED:
                        await self._refused(error.status, _retry_after_s(error.headers))
                except Exception as error:  # any failure: REST carries the closes meanwhile
                    failure = str(error) or type(error).__name__
                finally:
                    self._socket = None
                    self._opened.clear()
                    metrics.apply_exchange_order_socket_up.set(0)
                    self._fail_pending()
                if opened_at is not None and loop.time() - opened_at >= STABLE_S:
                    delay = MIN_BACKOFF_S
                if failure != last_failure:  # once per kind of failure, not every few seconds of a ban
                    log.warning(
                        "websocket API not open: closes go by REST until it is",
                        extra={"error": failure, "retry_in_s": delay},
                    )
                    last_failure = failure
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Answers until the connection closes, or until it is MAX_AGE_S old: then it takes no more
        requests and is read until its answers are in (at most DRAIN_S)."""
        loop = asyncio.get_running_loop()
        retire_at = loop.time() + MAX_AGE_S
        while True:
            if self._socket is socket and loop.time() >= retire_at:
                self._socket = None  # new closes take REST until the next connection is open
                metrics.apply_exchange_order_socket_up.set(0)
                retire_at = loop.time() + DRAIN_S  # from now on, the end of the drain
            retiring = self._socket is not socket
            if retiring and not self._pending:
                return
            # At least 1 ms: aiohttp reads a timeout of 0 as none at all.
            try:
                message = await socket.receive(timeout=max(retire_at - loop.time(), 0.001))
            except TimeoutError:
                if retiring:
                    return
                continue
            if message.type is aiohttp.WSMsgType.TEXT:
                self._answer(message.data)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    def _answer(self, text: str) -> None:
        try:
            answer = json.loads(text)
            waiting = self._pending.get(str(answer.get("id")))
        except (ValueError, AttributeError):
            log.warning("websocket API: an answer that is not a JSON object", extra={"answer": text[:200]})
            return
        if waiting is None:  # its close gave up waiting (an unknown outcome, looked up) or no such id
            log.warning("websocket API: an answer no close waits for", extra={"answer": text[:200]})
        elif not waiting.done():
            waiting.set_result(answer)

    def _fail_pending(self) -> None:
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(OrderSocketLost("the websocket API connection closed", sent=True))
