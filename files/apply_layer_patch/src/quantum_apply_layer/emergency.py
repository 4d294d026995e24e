"""`quantum-apply-layer emergency-close`: an operator closes a position while trading is halted.

The CLI sends no order itself: the service stays the only process that trades. The CLI writes a
one-time token, the audit entry and a plan marked emergency, in one MULTI/EXEC; the claim script lets
such a plan through the switch only with that token, only once, and only if it reduces. The service
then checks at the exchange that the position is open and on the side the operator named.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import cast

from redis.asyncio import Redis

from . import keys
from .decoding import text, text_fields
from .plan import OrderType, StepKind
from .switch import AUDIT_MAXLEN, read_global_switch

TOKEN_TTL_S = 60


async def request_emergency_close(
    redis: Redis, symbol: str, side: str, reason: str, who: str
) -> tuple[str, str]:
    """Queue the close; returns (plan_id, the result stream's last id before it)."""
    plan_id = f"emergency-{symbol}-{uuid.uuid4().hex[:12]}"
    switch = await read_global_switch(redis)
    last = await redis.xrevrange(keys.RESULT_STREAM, count=1) or []
    after = text(last[0][0] or "0-0") if last else "0-0"
    steps = [{"step": StepKind.CLOSE_FULL.value, "type": OrderType.MARKET_REDUCE_ONLY.value, "pct": 100}]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.emergency_token(plan_id), json.dumps({"who": who, "reason": reason}), ex=TOKEN_TTL_S)
        pipe.xadd(
            keys.AUDIT_STREAM,
            {
                "scope": f"symbol:{symbol}",
                "action": "emergency-close",
                "plan_id": plan_id,
                "side": side,
                "old_state": switch.state.value,
                "new_state": switch.state.value,
                "reason": reason,
                "who": who,
                "at": f"{time.time():.6f}",
            },
            maxlen=AUDIT_MAXLEN,
            approximate=True,
        )
        pipe.xadd(
            keys.PLAN_STREAM,
            {
                "plan_id": plan_id,
                "symbol": symbol,
                "action": "FULL_CLOSE_PROPOSED",
                "decision": "EXECUTE",
                "steps": json.dumps(steps),
                "reason_codes": "operator_emergency_close",
                "timestamp": f"{time.time():.3f}",
                "emergency": "true",
                "emergency_side": side,
            },
        )
        await pipe.execute()
    return plan_id, after


async def wait_for_result(redis: Redis, plan_id: str, after: str, timeout_s: float) -> dict[str, str] | None:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        reply = await redis.xread({keys.RESULT_STREAM: after}, count=100, block=max(1, int(remaining * 1000)))
        # XREAD answers [[stream, [[id, fields], ...]]].
        streams = cast(
            list[tuple[bytes, list[tuple[bytes | str, dict[bytes | str, bytes | str]]]]], reply or []
        )
        for _stream, entries in streams:
            for entry_id, fields in entries:
                after = entry_id if isinstance(entry_id, str) else entry_id.decode()
                decoded = text_fields(fields)
                if decoded.get("plan_id") == plan_id:
                    return decoded
    return None
