"""Binance's checks of who signed a request and when, shared by the emulator's REST API, its websocket
API and its user data stream: the same codes whichever door a request comes in by."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from quantum_apply_layer.emulator_state import BinanceError

_DEFAULT_RECV_WINDOW_MS = 5_000
_MAX_RECV_WINDOW_MS = 60_000
# Binance accepts a timestamp up to one second ahead of its clock.
_FUTURE_TOLERANCE_MS = 1_000


def check_api_key(sent: str | None, expected: str) -> None:
    if not sent:
        raise BinanceError(401, -2014, "API-key format invalid.")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def check_timestamp(params: Mapping[str, str], server_time: int) -> None:
    try:
        timestamp = int(params["timestamp"])
    except (KeyError, ValueError):
        raise BinanceError(
            400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
        ) from None
    try:
        recv_window = int(params.get("recvWindow", _DEFAULT_RECV_WINDOW_MS))
    except ValueError:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'recvWindow' was not sent, was empty/null, or malformed."
        ) from None
    if not 0 < recv_window <= _MAX_RECV_WINDOW_MS:
        raise BinanceError(400, -1131, "recvWindow must be less than 60000")
    if timestamp >= server_time + _FUTURE_TOLERANCE_MS or server_time - timestamp > recv_window:
        raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def check_signature(secret: bytes, payload: str, signature: str | None) -> None:
    """HMAC-SHA256 of `payload` (what Binance signs) against the hex signature sent."""
    if not signature:
        raise BinanceError(
            400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
        )
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceError(400, -1022, "Signature for this request is not valid.")
