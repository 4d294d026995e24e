"""Binance's websocket hosts for its REST hosts: the user data stream's and the websocket API's. Any
other host (the loopback emulator) serves both itself, as ws(s) on the same host and port."""

from __future__ import annotations

from urllib.parse import urlsplit

_STREAM_HOSTS = {
    "fapi.binance.com": "wss://fstream.binance.com",
    "testnet.binancefuture.com": "wss://fstream.binancefuture.com",
}
_WS_API_HOSTS = {
    "fapi.binance.com": "wss://ws-fapi.binance.com",
    "testnet.binancefuture.com": "wss://testnet.binancefuture.com",
}
WS_API_PATH = "/ws-fapi/v1"


def _websocket_base(exchange_url: str, known_hosts: dict[str, str]) -> str:
    parts = urlsplit(exchange_url)
    known = known_hosts.get(parts.hostname or "")
    if known is not None:
        return known
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"


def user_stream_url(exchange_url: str) -> str:
    """The user data stream's websocket base (the stream is at <base>/ws/<listenKey>)."""
    return _websocket_base(exchange_url, _STREAM_HOSTS)


def order_socket_url(exchange_url: str) -> str:
    """The websocket API for orders."""
    return _websocket_base(exchange_url, _WS_API_HOSTS) + WS_API_PATH
