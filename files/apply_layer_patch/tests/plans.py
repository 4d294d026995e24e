"""Writing plans and permits the way upstream does (the fields from quantum_apply_layer.sample_plans),
and waiting (bounded) for what the service records."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from quantum_apply_layer import keys
from quantum_apply_layer.sample_plans import CLOSE_FULL, permits, plan_fields

__all__ = ["CLOSE_FULL", "add_plan", "grant_permits", "permits", "plan_fields", "results", "wait_for_results"]


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
