"""A TCP proxy that puts the exchange at a distance: every byte waits `delay` each way (round trip 2 x delay).

For tests and the benchmark only, never in the product. Bytes keep their order; a chunk read at t leaves at
t + delay, so a request and its answer pay exactly one round trip, as on a VPS far from Binance. `cut()`
closes every connection and refuses new ones (the exchange unreachable) until `restore()`.

Run alone for the benchmark, in its own process so its timers do not share a loop with measurements:
    python delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

CHUNK = 65536


class DelayProxy:
    def __init__(self, target_port: int, delay_s: float, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay_s = delay_s
        self.connections_opened = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False

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
                self._pump(client_reader, target_writer), self._pump(target_reader, client_writer)
            )
        finally:
            for writer in (client_writer, target_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as it comes; write each chunk `delay` after it was read, in order."""
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
                due.put_nowait((time.monotonic() + self.delay_s, chunk))
            due.put_nowait((time.monotonic() + self.delay_s, b""))
            await delivering
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            delivering.cancel()


async def _serve_until_terminated(listen_port: int, target_port: int, delay_ms: float) -> None:
    """Until SIGTERM; then says how many connections it carried (keep-alive shows as few)."""
    proxy = DelayProxy(target_port, delay_ms / 1000)
    await proxy.start(listen_port)
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    await terminated.wait()
    await proxy.stop()
    print(f"connections opened: {proxy.connections_opened}", flush=True)


if __name__ == "__main__":
    listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(_serve_until_terminated(listen, target, delay))
