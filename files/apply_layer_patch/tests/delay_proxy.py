"""A TCP proxy that puts the exchange at a distance: every byte waits `delay` each way (round trip 2 x delay).

For tests and the benchmark only, never in the product. Bytes keep their order; a chunk read at t leaves at
t + delay, so a request and its answer pay exactly one round trip, as on a VPS far from Binance. At
delay 0 a chunk is written in the same callback that read it: the proxy adds no scheduling of its own.
`cut()` closes every connection and refuses new ones (the exchange unreachable) until `restore()`.

Where the order's bytes leave the service is where the benchmark's clock stops: with `departures`, the
proxy writes `<client order id> <CLOCK_MONOTONIC>` for every order request the moment it reads it from
the service (the bytes have left the host; they reach the exchange exactly `delay` later), so neither
the delay's timers nor the emulator's parsing are counted as the gate's.

Run alone for the benchmark, in its own process so its timers do not share a loop with measurements:
    python delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS [DEPARTURES_FILE]
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

CHUNK = 65536
# An order request's client id, in its form body or query string (POST /fapi/v1/order).
_CLIENT_ORDER_ID = re.compile(rb"newClientOrderId=([.A-Za-z0-9:/_-]{1,36})")


class DelayProxy:
    def __init__(
        self,
        target_port: int,
        delay_s: float,
        target_host: str = "127.0.0.1",
        departures: TextIO | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay_s = delay_s
        self.connections_opened = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._departures = departures

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=1024)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self._cut = False

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            client_writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections_opened += 1
        self._writers.update((client_writer, target_writer))
        try:
            await asyncio.gather(
                self._pump(client_reader, target_writer, self._stamp_orders),
                self._pump(target_reader, client_writer),
            )
        except asyncio.CancelledError:
            # The proxy is stopping. Ended quietly: Python 3.11's streams print a traceback for a
            # connection handler that ends cancelled.
            pass
        finally:
            for writer in (client_writer, target_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    def _stamp_orders(self, chunk: bytes, read_at: float) -> None:
        if self._departures is None:
            return
        for client_order_id in _CLIENT_ORDER_ID.findall(chunk):
            self._departures.write(f"{client_order_id.decode()} {read_at:.6f}\n")

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_chunk: Callable[[bytes, float], None] | None = None,
    ) -> None:
        """Read as it comes; write each chunk `delay` after it was read, in order."""
        if self.delay_s <= 0:
            await self._pass_through(reader, writer, on_chunk)
            return
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, chunk = await due.get()
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(CHUNK):
                read_at = time.monotonic()
                due.put_nowait((read_at + self.delay_s, chunk))
                if on_chunk is not None:
                    on_chunk(chunk, read_at)
            due.put_nowait((time.monotonic() + self.delay_s, b""))
            await delivering
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            delivering.cancel()

    @staticmethod
    async def _pass_through(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_chunk: Callable[[bytes, float], None] | None,
    ) -> None:
        """No delay: each chunk is written as soon as it is read, then stamped."""
        try:
            while chunk := await reader.read(CHUNK):
                read_at = time.monotonic()
                writer.write(chunk)
                if on_chunk is not None:
                    on_chunk(chunk, read_at)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            return


async def _serve_until_terminated(
    listen_port: int, target_port: int, delay_ms: float, departures: TextIO | None
) -> None:
    """Until SIGTERM; then says how many connections it carried (keep-alive shows as few)."""
    proxy = DelayProxy(target_port, delay_ms / 1000, departures=departures)
    await proxy.start(listen_port)
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    await terminated.wait()
    await proxy.stop()
    print(f"connections opened: {proxy.connections_opened}", flush=True)


if __name__ == "__main__":
    listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    # Line-buffered: a stamp is in the file before the order's answer can come back through the proxy.
    with contextlib.ExitStack() as stack:
        stamps = stack.enter_context(open(sys.argv[4], "a", buffering=1)) if len(sys.argv) > 4 else None
        asyncio.run(_serve_until_terminated(listen, target, delay, stamps))
