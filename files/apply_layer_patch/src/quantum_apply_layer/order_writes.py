"""When a request's bytes were written to the exchange's connection: where "what the gate adds" ends.

An order sent on the websocket API (`order_socket.py`) is stamped by the door itself, as it calls its
frame's write. One sent by REST is stamped as follows.

ccxt makes its requests with aiohttp. aiohttp calls a trace hook as it writes a request's body, a few
microseconds before the socket's write, in its writing task, which inherits the caller's context: so a
context variable set by a plan's task is seen there, and each plan gets its own stamp, however many run
at once. Requests without a body (lookups, a cancel) are not stamped; on Binance every order has one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, cast

import aiohttp

log = logging.getLogger(__name__)


class WriteStamp:
    """`first_at`: time.perf_counter() when the first request body was written while it was watched."""

    def __init__(self) -> None:
        self.first_at: float | None = None


_WATCHING: ContextVar[WriteStamp | None] = ContextVar("order_writes", default=None)


@contextlib.contextmanager
def watching_writes(stamp: WriteStamp) -> Iterator[WriteStamp]:
    """Stamps the first request body this task (and the tasks it starts) writes inside the block."""
    token = _WATCHING.set(stamp)
    try:
        yield stamp
    finally:
        _WATCHING.reset(token)


def stamp_write() -> None:
    """The watched task writes an order now: the websocket door calls it as it calls its frame's write."""
    stamp = _WATCHING.get()
    if stamp is not None and stamp.first_at is None:
        stamp.first_at = time.perf_counter()


async def _body_written(
    _session: aiohttp.ClientSession, _context: SimpleNamespace, _params: aiohttp.TraceRequestChunkSentParams
) -> None:
    stamp_write()


def trace_writes(client: Any) -> None:
    """Give ccxt's client the session ccxt would open for itself (its TLS context, made as ccxt makes it,
    and its connector settings, see ccxt's `Exchange.open`), with the hook. Given before ccxt's first
    request, ccxt uses it and closes it. A SOCKS proxy (which the apply layer does not configure) would
    use a session of ccxt's own, unmeasured."""
    if client.session is not None:
        log.warning("ccxt's session was open before it could be traced: apply_gate_seconds stays empty")
        return
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_body_written)
    client.tcp_connector = aiohttp.TCPConnector(
        ssl=_tls_context(client), enable_cleanup_closed=True, family=socket.AF_UNSPEC, happy_eyeballs_delay=0
    )
    client.session = aiohttp.ClientSession(
        connector=client.tcp_connector, trust_env=client.aiohttp_trust_env, trace_configs=[trace]
    )


def _tls_context(client: Any) -> ssl.SSLContext | bool:
    """ccxt's own when it has one, else one made as ccxt's `open()` makes it: verifying with ccxt's CA
    file, or none with `verify` off (the apply layer changes neither, nor `include_OS_certificates`)."""
    if client.ssl_context is None:
        client.ssl_context = ssl.create_default_context(cafile=client.cafile) if client.verify else False
    return cast(ssl.SSLContext | bool, client.ssl_context)
