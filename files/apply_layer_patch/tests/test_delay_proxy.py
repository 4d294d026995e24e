"""The delay proxy's clock: `make bench` stops its clock at the kernel's stamp of an order's bytes, so that
stamp must be the sender's write, not the proxy's later read, and no request may go unstamped or unsent."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from delay_proxy import MAX_FRAME, SO_TIMESTAMPNS, DelayProxy, _ClientFrames

# How long the sender keeps the proxy's loop from reading, so that a read time cannot pass for the stamp.
HELD_S = 0.05


@dataclass(frozen=True)
class Departure:
    left_at: float
    read_at: float


class Target:
    """The far side: collects what the proxy forwards and answers each chunk with `ok`."""

    def __init__(self) -> None:
        self.received = b""
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.received += chunk
            self.changed.set()
            writer.write(b"ok")
            await writer.drain()
        writer.close()

    async def until_received(self, tail: bytes) -> None:
        async with asyncio.timeout(5):
            while not self.received.endswith(tail):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    far = Target()
    await far.start()
    yield far
    assert far.server is not None
    far.server.close()
    await far.server.wait_closed()


def order_request(client_order_id: str) -> bytes:
    body = f"symbol=BTCUSDT&side=SELL&type=MARKET&newClientOrderId={client_order_id}"
    return f"POST /fapi/v1/order HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()


def departures(written: io.StringIO) -> dict[str, Departure]:
    rows = (line.split() for line in written.getvalue().splitlines())
    return {coid: Departure(float(left), float(read)) for coid, left, read in rows}


def send_and_hold(sender: socket.socket, request: bytes) -> tuple[float, float]:
    """Send, reading the clock just before and just after; then keep the loop (and so the proxy) from
    reading for HELD_S. Returns the two clock reads."""
    before = time.monotonic()
    sender.sendall(request)
    after = time.monotonic()
    time.sleep(HELD_S)  # blocks the loop on purpose: the proxy reads only after this
    return before, after


@pytest.fixture
def written() -> io.StringIO:
    return io.StringIO()


def until_the_kernel_stamps() -> None:
    """Linux turns receive stamps on for the whole host a moment after the first socket asks for them (a
    deferred switch): a segment received before has none, and the proxy would use its read time. Wait
    until a socket that asks gets one (the proxy's listener, asking too, keeps them on)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.create_connection(listener.getsockname()) as sender:
                receiver, _ = listener.accept()
                with receiver:
                    sender.sendall(b"?")
                    _data, ancillary, _flags, _address = receiver.recvmsg(1, socket.CMSG_SPACE(16))
            if ancillary:
                return
            time.sleep(0.01)
    raise AssertionError("the kernel gave no receive stamp within 5 s")


@pytest.fixture
async def proxy(target: Target, written: io.StringIO) -> AsyncIterator[DelayProxy]:
    delay_proxy = DelayProxy(target.port, 0.0, departures=written)
    await delay_proxy.start()
    until_the_kernel_stamps()
    yield delay_proxy
    await delay_proxy.stop()


def connect(proxy: DelayProxy) -> socket.socket:
    """A blocking connection: the kernel completes it from the listen backlog, before any accept()."""
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def assert_stamped_at_the_write(departure: Departure, before: float, after: float) -> None:
    # The stamp is the write's, within the sender's two clock reads (slack for the proxy's realtime ->
    # monotonic conversion, which errs late, and a preemption between its two clock reads)...
    assert before <= departure.left_at <= after + 0.010
    # ... and not the proxy's read, which the sender held off for HELD_S.
    assert departure.read_at >= after + HELD_S


async def test_a_request_sent_before_the_accept_is_forwarded_and_stamped_at_its_write(
    proxy: DelayProxy, target: Target, written: io.StringIO
) -> None:
    with connect(proxy) as sender:
        # No await since start(): the proxy's accept task has not run, the bytes wait in the kernel.
        before, after = send_and_hold(sender, order_request("qh-early-0"))
        await target.until_received(b"qh-early-0")
        assert proxy.connections_opened == 1
    assert_stamped_at_the_write(departures(written)["qh-early-0"], before, after)


async def test_a_request_on_a_kept_alive_connection_is_stamped_at_its_write(
    proxy: DelayProxy, target: Target, written: io.StringIO
) -> None:
    loop = asyncio.get_running_loop()
    with connect(proxy) as sender:
        sender.setblocking(False)
        for n in range(3):
            before, after = send_and_hold(sender, order_request(f"qh-kept-{n}"))
            await target.until_received(f"qh-kept-{n}".encode())
            assert await loop.sock_recv(sender, 16) == b"ok"  # the answer came back through the proxy
            assert_stamped_at_the_write(departures(written)[f"qh-kept-{n}"], before, after)
    assert proxy.connections_opened == 1


def masked_text_frame(text: str, key: bytes) -> bytes:
    """A client's websocket text frame (RFC 6455: masked with a 4-byte key), as aiohttp writes it."""
    payload = text.encode()
    if len(payload) < 126:
        head = bytes([0x81, 0x80 | len(payload)])
    else:
        head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + key + bytes(byte ^ key[n % 4] for n, byte in enumerate(payload))


async def test_orders_in_websocket_frames_are_stamped_by_their_client_id(
    proxy: DelayProxy, target: Target, written: io.StringIO
) -> None:
    short = json.dumps({"id": "1", "method": "order.place", "params": {"newClientOrderId": "qh-ws-0"}})
    long = json.dumps(
        {"id": "2", "method": "order.place", "params": {"newClientOrderId": "qh-ws-1", "x": "y" * 200}}
    )
    chunk = masked_text_frame(short, b"\x01\x02\x03\x04") + masked_text_frame(long, b"\xfa\x0b\x1c\x2d")
    assert b"qh-ws-0" not in chunk  # masked: only unmasking finds it
    with connect(proxy) as sender:
        before, after = send_and_hold(sender, chunk)
        await target.until_received(chunk[-8:])
    stamped = departures(written)
    assert set(stamped) == {"qh-ws-0", "qh-ws-1"}
    assert_stamped_at_the_write(stamped["qh-ws-1"], before, after)


async def test_an_order_frame_split_across_writes_is_stamped_at_its_last(
    proxy: DelayProxy, target: Target, written: io.StringIO
) -> None:
    request = json.dumps({"id": "3", "method": "order.place", "params": {"newClientOrderId": "qh-split-0"}})
    frame = masked_text_frame(request, b"\x05\x06\x07\x08")
    with connect(proxy) as sender:
        send_and_hold(sender, frame[:20])  # read by the proxy alone: the frame is not whole yet
        await target.until_received(frame[:20])
        before, after = send_and_hold(sender, frame[20:])
        await target.until_received(frame[-8:])
    assert_stamped_at_the_write(departures(written)["qh-split-0"], before, after)


def frames_read_in_chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """What the proxy reads of `data` when it comes in chunks, cut at `cuts`."""
    frames = _ClientFrames()
    bounds = [0, *cuts, len(data)]
    return [payload for at, end in itertools.pairwise(bounds) for payload in frames.feed(data[at:end])]


@pytest.mark.parametrize("size", [20, 300], ids=["7-bit length", "16-bit length"])
def test_a_frame_cut_anywhere_is_read_whole_once(size: int) -> None:
    text = json.dumps({"params": {"newClientOrderId": "qh-cut-0", "pad": "p" * size}})
    frame = masked_text_frame(text, b"\x09\x0a\x0b\x0c")
    data = frame + frame  # a whole frame after the cut one, in the same chunk
    for cut in range(1, len(data)):
        assert frames_read_in_chunks(data, [cut]) == [text.encode()] * 2, cut


@pytest.mark.parametrize("cuts", [[100], [100, 30_000, 60_000]], ids=["two chunks", "four chunks"])
def test_a_frame_too_large_for_an_order_is_skipped_and_the_next_one_read(cuts: list[int]) -> None:
    large = b"\x81\xff" + (MAX_FRAME + 1).to_bytes(8, "big") + b"\x00" * 4 + b"x" * (MAX_FRAME + 1)
    order = json.dumps({"params": {"newClientOrderId": "qh-after-0"}})
    data = large + masked_text_frame(order, b"\x01\x02\x03\x04")
    assert frames_read_in_chunks(data, cuts) == [order.encode()]
