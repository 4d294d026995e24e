"""Orders signed as Binance wants them, by hand, for the websocket API's tests and the benchmark's
comparison of the two doors (no client library in between: both doors pay the same local work)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET


def close_params(client_order_id: str, quantity: str = "0.001", symbol: str = "BTCUSDT") -> dict[str, str]:
    """A reduce-only market close, as the apply layer sends it."""
    return {
        "symbol": symbol,
        "side": "SELL",
        "type": "MARKET",
        "quantity": quantity,
        "reduceOnly": "true",
        "newClientOrderId": client_order_id,
        "newOrderRespType": "RESULT",
    }


def _hmac(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def rest_order_body(params: dict[str, str], secret: str = EMULATOR_API_SECRET) -> str:
    """The form body of POST /fapi/v1/order (the key goes in X-MBX-APIKEY)."""
    payload = urlencode({**params, "timestamp": int(time.time() * 1000)})
    return f"{payload}&signature={_hmac(secret, payload)}"


def ws_api_request(
    request_id: str, params: dict[str, str], secret: str = EMULATOR_API_SECRET, method: str = "order.place"
) -> dict[str, object]:
    """A websocket API request: the key and timestamp in the params, signed sorted by name."""
    signed: dict[str, object] = {**params, "apiKey": EMULATOR_API_KEY, "timestamp": int(time.time() * 1000)}
    signed["signature"] = _hmac(secret, urlencode(sorted(signed.items())))
    return {"id": request_id, "method": method, "params": signed}
