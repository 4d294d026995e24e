"""A TCP proxy that puts the exchange at a distance: every byte waits `delay` each way (round trip 2 x delay).

For tests and the benchmark only, never in the product. Bytes keep their order; a chunk read at t leaves at
t + delay, so a request and its answer pay exactly one round trip, as on a VPS far from Binance. At
delay 0 a chunk is written as soon as it is read: the proxy adds no timers of its own.
`cut()` closes every connection and refuses new ones (the exchange unreachable) until `restore()`.

Where the order's bytes leave the service is where the benchmark's clock stops: with `departures`, the
proxy writes `<client order id> <left> <read>` for every order request, both on CLOCK_MONOTONIC. `left` is
the kernel's receive stamp (SO_TIMESTAMPNS), which on loopback the kernel takes as the service writes: the
moment the bytes left the host, as they would leave for a real exchange with no process of ours to wake.
The stamp is taken at or just after that write (later when the kernel defers the segment to a worker),
for a chunk its last segment's; where the kernel gave none, `left` is `read`: both err long, never short.
`read` is when this proxy's loop got to them, later by its own wake-up, which the benchmark reports apart.
Neither the delay's timers nor the emulator's parsing are counted as the gate's.

Run alone for the benchmark, in its own process so its timers do not share a loop with measurements:
    python delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS [DEPARTURES_FILE]
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

CHUNK = 65536
MAX_FRAME = 65536  # an order.place request is some 500 bytes
# An order request's client id, in its form body or query string (POST /fapi/v1/order), or in the JSON
# params of a websocket API request (order.place), once its frame is unmasked.
_CLIENT_ORDER_ID = re.compile(rb"newClientOrderId=([.A-Za-z0-9:/_-]{1,36})")
_CLIENT_ORDER_ID_JSON = re.compile(rb'"newClientOrderId":\s*"([.A-Za-z0-9:/_-]{1,36})"')
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h, as on x86-64 and arm64; Python's socket module does not
# name it): each segment received carries the CLOCK_REALTIME of its arrival, as a 64-bit struct timespec
# in an SCM_TIMESTAMPNS (the same number) message.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)

Receive = Callable[[], Awaitable[bytes]]
Send = Callable[[bytes], Awaitable[None]]


def _masked_frames(data: bytes) -> tuple[list[bytes], bytes, int]:
    """The payloads of the whole client websocket frames `data` starts with (RFC 6455: a client masks every
    frame with a 4-byte key); the start of a frame not whole yet, to be read on with the next chunk (a
    frame may end in a later chunk than it began); and how many bytes of a frame too large to be an order
    are still to come, to be skipped. Nothing for data that is no such frame."""
    payloads: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            return payloads, data[at:], 0
        if not data[at + 1] & 0x80:
            return payloads, b"", 0  # unmasked: not a client's frame (an HTTP request, an upgrade)
        length, head = data[at + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[at + 2 : at + 10], "big"), 10
        start = at + head + 4
        if start > len(data):  # the header itself is cut: its length may be read short, so wait for it
            return payloads, data[at:], 0
        if length > MAX_FRAME:
            return payloads, b"", start + length - len(data)
        if start + length > len(data):
            return payloads, data[at:], 0
        key = data[at + head : start]
        payloads.append(bytes(byte ^ key[n % 4] for n, byte in enumerate(data[start : start + length])))
        at = start + length
    return payloads, b"", 0


class _ClientFrames:
    """A connection's client frames read chunk by chunk: a frame begun in one chunk is read on with the
    next, and the rest of a frame too large to be an order is skipped, however many chunks it spans."""

    def __init__(self) -> None:
        self._start = b""  # a frame begun in an earlier chunk
        self._skip = 0  # bytes of a frame too large to be an order, still to come

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the frames that end in this chunk."""
        skipped = min(self._skip, len(chunk))
        self._skip -= skipped
        if self._skip:  # the whole chunk was inside the large frame
            return []
        payloads, self._start, self._skip = _masked_frames(self._start + chunk[skipped:])
        return payloads


class _Link:
    """One proxied connection: the client's socket, read raw for its kernel stamps, and its task."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.task: asyncio.Task[None] | None = None
        self.frames = _ClientFrames()


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
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._links: set[_Link] = set()
        self._cut = False
        self._departures = departures

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    async def start(self, port: int = 0) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # On the listener, so that every accepted socket has it from its first segment, even one that
        # arrived before the accept.
        listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept(listener), name="delay-proxy-accept")

    async def stop(self) -> None:
        self.cut()
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        await asyncio.gather(
            *(link.task for link in self._links if link.task is not None), return_exceptions=True
        )
        if self._listener is not None:
            self._listener.close()

    def cut(self) -> None:
        self._cut = True
        for link in self._links:
            if link.task is not None:
                link.task.cancel()

    def restore(self) -> None:
        self._cut = False

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)  # non-blocking, as asyncio hands it over
            except OSError:
                continue  # that connection failed (aborted, no file descriptor left): not the proxy
            if self._cut:
                client.close()
                continue
            link = _Link(client)
            self._links.add(link)
            link.task = asyncio.create_task(self._serve(link))
            # Closed when the task ends, even one cancelled (a cut) before it ever ran.
            link.task.add_done_callback(functools.partial(self._close, link))

    async def _serve(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        client = link.client

        async def from_client() -> bytes:
            chunk, left_at, read_at = await _receive_stamped(loop, client)
            self._stamp_orders(link, chunk, left_at, read_at)
            return chunk

        async def to_client(chunk: bytes) -> None:
            await loop.sock_sendall(client, chunk)

        try:
            target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except (OSError, asyncio.CancelledError):
            return
        self.connections_opened += 1

        async def to_target(chunk: bytes) -> None:
            target_writer.write(chunk)
            await target_writer.drain()

        try:
            await asyncio.gather(
                self._pump(from_client, to_target, target_writer.write_eof),
                self._pump(
                    lambda: target_reader.read(CHUNK), to_client, lambda: client.shutdown(socket.SHUT_WR)
                ),
            )
        except asyncio.CancelledError:
            pass  # cut, or the proxy is stopping
        finally:
            target_writer.transport.abort()

    def _close(self, link: _Link, _ended: asyncio.Task[None]) -> None:
        self._links.discard(link)
        link.client.close()

    def _stamp_orders(self, link: _Link, chunk: bytes, left_at: float, read_at: float) -> None:
        """An order leaves with its last byte: a frame that ends in this chunk has this chunk's stamps."""
        if self._departures is None:
            return
        found = _CLIENT_ORDER_ID.findall(chunk)
        for frame in link.frames.feed(chunk) if not found else []:
            found += _CLIENT_ORDER_ID_JSON.findall(frame)
        for client_order_id in found:
            self._departures.write(f"{client_order_id.decode()} {left_at:.6f} {read_at:.6f}\n")

    async def _pump(self, receive: Receive, send: Send, end: Callable[[], None]) -> None:
        """Read as it comes; write each chunk `delay` after it was read, in order; pass the end on."""
        if self.delay_s <= 0:
            await self._pass_through(receive, send, end)
            return
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, chunk = await due.get()
                if not chunk:
                    with contextlib.suppress(OSError):
                        end()
                    return
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await send(chunk)

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await receive():
                due.put_nowait((time.monotonic() + self.delay_s, chunk))
            due.put_nowait((time.monotonic() + self.delay_s, b""))
            await delivering
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivering

    @staticmethod
    async def _pass_through(receive: Receive, send: Send, end: Callable[[], None]) -> None:
        """No delay: each chunk is written as soon as it is read."""
        try:
            while chunk := await receive():
                await send(chunk)
            with contextlib.suppress(OSError):
                end()
        except (OSError, asyncio.IncompleteReadError):
            return


async def _receive_stamped(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> tuple[bytes, float, float]:
    """A chunk, when the kernel received its last segment and when we read it, both on CLOCK_MONOTONIC.
    asyncio's streams read with recv(), which drops the stamp: so the socket is read with recvmsg()."""
    while True:
        try:
            chunk, ancillary, _flags, _address = sock.recvmsg(CHUNK, _STAMP_SPACE)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        # Realtime first: a pause between the two reads can only make the stamp later, never earlier.
        read_real, read_at = time.time(), time.monotonic()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) == _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack(data)
                return chunk, read_at - (read_real - (seconds + nanoseconds / 1e9)), read_at
        return chunk, read_at, read_at  # no stamp (an end of stream has none): the read time, later


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    descriptor = sock.fileno()

    def wake() -> None:
        loop.remove_reader(descriptor)  # once: the socket stays readable until read
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(descriptor, wake)
    try:
        await ready
    finally:
        loop.remove_reader(descriptor)


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
