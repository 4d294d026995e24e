"""The user data stream client: positions pushed by the exchange into the PositionBook, checked by REST.

Binance's documented stream, read with aiohttp directly rather than ccxt.pro's `watch_positions`: ccxt.pro
keeps its own position cache and reconnect logic out of sight, while the book must know exactly when the
stream was down, what it missed and which event said what (a stale or lying stream is a state here, not
a surprise). The protocol is small: POST /fapi/v1/listenKey, a websocket at <ws>/ws/<listenKey>, a PUT
every KEEPALIVE_S (Binance: a key lives 60 minutes), and a new key and connection after any failure.

Each connection: connect, then reconcile (GET /fapi/v3/positionRisk, weight 5), then read events; while
connected, reconcile every `max_age_s / 2` and at once when the stream says a position grew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp

from .exchange import Exchange, ExchangeError
from .position_book import PositionBook

log = logging.getLogger(__name__)
KEEPALIVE_S = 30 * 60.0
HEARTBEAT_S = 10.0  # websocket pings: a connection dead without a FIN is found within two of them
MAX_BACKOFF_S = 5.0


class UserStream:
    def __init__(self, exchange: Exchange, book: PositionBook, ws_base: str) -> None:
        self._exchange = exchange
        self._book = book
        self._ws_base = ws_base.rstrip("/")
        self._reconcile_now = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping`: connect, reconcile, follow; after any failure, again with a backoff."""
        delay = 0.1
        async with aiohttp.ClientSession() as session:
            while not stopping.is_set():
                try:
                    await self._follow(session, stopping)
                    delay = 0.1
                except (ExchangeError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    log.warning("user data stream failed, reconnecting in %.1fs: %s", delay, error)
                except Exception:
                    # A bug must not end the stream for good: plans would read REST until a restart.
                    log.exception("user data stream failed unexpectedly, reconnecting in %.1fs", delay)
                finally:
                    self._book.stream_lost()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def reconcile(self) -> None:
        sends_before = self._book.send_counts()
        positions = await self._exchange.positions()
        self._book.reconciled(positions, sends_before)

    async def _follow(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> None:
        listen_key = await self._exchange.open_listen_key()
        async with session.ws_connect(f"{self._ws_base}/ws/{listen_key}", heartbeat=HEARTBEAT_S) as socket:
            self._book.stream_connected()
            # After connecting, so that nothing between the answer and the first event is missed.
            await self.reconcile()
            log.info("user data stream connected and reconciled")
            helpers = [
                asyncio.create_task(_closing_when_done(socket, self._keep_alive())),
                asyncio.create_task(_closing_when_done(socket, self._reconcile_periodically())),
                asyncio.create_task(_closing_when_done(socket, stopping.wait())),
            ]
            try:
                async for message in socket:
                    if message.type is aiohttp.WSMsgType.TEXT and not self._apply(message.data):
                        break  # the key expired: a new key, a new connection
                    if message.type is aiohttp.WSMsgType.ERROR:
                        break
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
        if not stopping.is_set():
            log.warning("user data stream closed by the exchange")

    def _apply(self, text: str) -> bool:
        """One event into the book; False when the listen key expired."""
        try:
            event = json.loads(text)
            kind = event.get("e")
            if kind == "listenKeyExpired":
                return False
            if kind == "ACCOUNT_UPDATE":
                self._account_update(event)
            elif kind == "ORDER_TRADE_UPDATE":
                order = event["o"]
                self._book.order_update(str(order["s"]), str(order["c"]), str(order["X"]), int(event["T"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("user data stream: an event we cannot read was ignored (%s): %.200s", error, text)
        return True

    def _account_update(self, event: dict[str, Any]) -> None:
        transaction_ms = int(event["T"])
        for position in event["a"]["P"]:
            if position.get("ps", "BOTH") != "BOTH":
                continue  # hedge mode is refused at start; its legs are not this book's positions
            symbol, amount = str(position["s"]), float(position["pa"])
            if self._book.account_update(symbol, amount, transaction_ms):
                self._reconcile_now.set()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self._exchange.keep_listen_key()

    async def _reconcile_periodically(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_now.wait(), self._book.max_age_s / 2)
            self._reconcile_now.clear()
            await self.reconcile()


async def _closing_when_done(socket: aiohttp.ClientWebSocketResponse, work: Awaitable[object]) -> None:
    """A helper that ends (stopping) or fails (a keep-alive or reconciliation refused) ends the connection:
    the next one starts with a new key and a fresh reconciliation."""
    try:
        await work
    except (ExchangeError, aiohttp.ClientError, OSError, TimeoutError) as error:
        log.warning("user data stream: %s; reconnecting", error)
    finally:
        await socket.close()
