"""Writing plans and permits the way upstream does, and waiting (bounded) for what the service records."""

from __future__ import annotations

import asyncio
import json
import time

from redis.asyncio import Redis

from quantum_apply_layer import keys

CLOSE_FULL = json.dumps([{"step": "CLOSE_FULL", "type": "market_reduce_only", "pct": 100}])


def plan_fields(
    plan_id: str, symbol: str = "BTCUSDT", steps: str = CLOSE_FULL, **extra: str
) -> dict[str, str]:
    return {
        "plan_id": plan_id,
        "symbol": symbol,
        "action": "FULL_CLOSE_PROPOSED",
        "decision": "EXECUTE",
        "steps": steps,
        "reason_codes": "kill_score_high",
        "kill_score": "0.9",
        "timestamp": f"{time.time():.3f}",
        **extra,
    }


def permits(plan_id: str, safe_close_qty: float = 0.01, position: float = 0.5) -> dict[str, str]:
    """Both permits as the risk governor and the position brain write them: key -> JSON."""
    p33 = {
        "allow": True,
        "safe_close_qty": safe_close_qty,
        "exchange_position_amt": position,
        "reason": "test",
    }
    return {
        keys.governor_permit(plan_id): json.dumps({"granted": True}),
        keys.p33_permit(plan_id): json.dumps(p33),
    }


async def grant_permits(
    redis: Redis, plan_id: str, safe_close_qty: float = 0.01, position: float = 0.5, ttl: int = 60
) -> None:
    for key, value in permits(plan_id, safe_close_qty, position).items():
        await redis.set(key, value, ex=ttl)


async def add_plan(redis: Redis, plan_id: str, permits: bool = True, **fields: str) -> str:
    if permits:
        await grant_permits(redis, plan_id)
    entry_id = await redis.xadd(keys.PLAN_STREAM, plan_fields(plan_id, **fields))
    return str(entry_id)


async def results(redis: Redis) -> dict[str, dict[str, str]]:
    """The latest result per plan id."""
    entries = await redis.xrange(keys.RESULT_STREAM)
    return {fields["plan_id"]: fields for _id, fields in entries}


async def wait_for_results(redis: Redis, count: int, timeout_s: float = 20) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await redis.xlen(keys.RESULT_STREAM) >= count:
            return await results(redis)
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"{await redis.xlen(keys.RESULT_STREAM)} results after {timeout_s}s, expected {count}"
    )
