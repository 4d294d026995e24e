"""The consumer group lost while plans flow (deleted by hand, or Redis restarted without its data):
made again at once, and a replay never gives a plan a second result nor executes one recorded halted."""

from __future__ import annotations

import asyncio
import collections

from conftest import ServiceFactory
from plans import add_plan, wait_for_results
from redis.asyncio import Redis

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator

GROUP = "apply-layer"


async def results_per_entry(redis: Redis) -> collections.Counter[str]:
    return collections.Counter(fields["entry_id"] for _id, fields in await redis.xrange(keys.RESULT_STREAM))


async def wait_until_caught_up(redis: Redis, timeout_s: float = 20) -> None:
    """The group exists and has nothing left to deliver or acknowledge."""
    for _ in range(int(timeout_s / 0.05)):
        groups = await redis.xinfo_groups(keys.PLAN_STREAM) if await redis.exists(keys.PLAN_STREAM) else []
        mine = [group for group in groups if group["name"] == GROUP]
        if mine and mine[0]["lag"] == 0 and mine[0]["pending"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not caught up within {timeout_s}s: {await redis.xinfo_groups(keys.PLAN_STREAM)}")


def ordered_plans(emulator: ExchangeEmulator) -> collections.Counter[str]:
    return collections.Counter(str(order.client_order_id) for order in emulator.orders())


async def test_group_deleted_while_plans_flow_is_made_again_without_replaying(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 100})
    async with running_service():
        await redis.set(keys.GLOBAL_SWITCH, "true")
        halted = [f"halted-{n}" for n in range(10)]
        for plan_id in halted:
            await add_plan(redis, plan_id)
        assert {r["status"] for r in (await wait_for_results(redis, 10)).values()} == {"halted"}
        await redis.delete(keys.GLOBAL_SWITCH)
        for n in range(10):
            await add_plan(redis, f"before-{n}")
        await wait_for_results(redis, 20)

        await redis.xgroup_destroy(keys.PLAN_STREAM, GROUP)
        for n in range(10):
            await add_plan(redis, f"after-{n}")
        found = await wait_for_results(redis, 30)
        await wait_until_caught_up(redis)

    assert all(found[f"after-{n}"]["status"] == "executed" for n in range(10))
    assert set((await results_per_entry(redis)).values()) == {1}, "an entry got a second result"
    assert await redis.xlen(keys.RESULT_STREAM) == 30
    orders = ordered_plans(emulator)
    assert not [plan_id for plan_id in halted if f"qh-{plan_id}-0" in orders], "a halted plan was executed"
    assert set(orders.values()) == {1}
    assert len(orders) == 20


async def test_group_deleted_while_stopped_replays_nothing_at_the_next_start(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 100})
    await redis.set(keys.GLOBAL_SWITCH, "true")
    async with running_service():
        for n in range(5):
            await add_plan(redis, f"halted-{n}")
        await wait_for_results(redis, 5)
    await redis.xgroup_destroy(keys.PLAN_STREAM, GROUP)
    await redis.delete(keys.GLOBAL_SWITCH)  # an operator resumes: the halted plans must stay unexecuted
    async with running_service():
        await add_plan(redis, "fresh")
        found = await wait_for_results(redis, 6)
        await wait_until_caught_up(redis)
    assert found["fresh"]["status"] == "executed"
    assert await redis.xlen(keys.RESULT_STREAM) == 6
    assert list(ordered_plans(emulator)) == ["qh-fresh-0"]


async def test_redis_flushed_while_plans_flow_goes_on_with_a_new_group(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    """Redis restarted without its data: stream, group, marks and results are gone; the service makes
    the group again and handles what arrives next, once each."""
    emulator.set_positions({"BTCUSDT": 100})
    async with running_service() as service:
        for n in range(10):
            await add_plan(redis, f"old-{n}")
        await wait_for_results(redis, 10)
        await redis.flushall()
        for n in range(10):
            await add_plan(redis, f"new-{n}")
        found = await wait_for_results(redis, 10)
        await wait_until_caught_up(redis)
        assert not service.stopping.is_set()
    assert {found[f"new-{n}"]["status"] for n in range(10)} == {"executed"}
    assert set((await results_per_entry(redis)).values()) == {1}
    assert set(ordered_plans(emulator).values()) == {1}
