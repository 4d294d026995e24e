"""The machine's floor under "permit arrival -> order leaves the host": the gate's two Redis hops with no
gate in between, measured in the bench's run so that its figure can be read against this machine.

Between a permit's SET and its order, the gate cannot do without two trips through Redis: the keyspace
notification that wakes the plan, and the claim's round trip. Each wakes a process that was idle; on a
virtual machine that costs far more than the work it carries. Here a probe process of its own, as the
service is, listens to the same notifications through redis-py and, at each, sends one packed `EVALSHA`
on a held connection and reads its answer, with no other work in between. The bench writes the key as
it writes a permit (TIME and SET in one MULTI, after the same idle), and takes SET -> answer read.

Run by bench.py; `python bench_floor.py REDIS_URL` is the probe: a line per answer on stdout,
`<notification read> <answer read>` on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

from redis.asyncio import Redis

FLOOR_KEY_PREFIX = "quantum:bench:floor:"
TRIVIAL_SCRIPT = "return redis.call('GET', KEYS[1])"


async def probe(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    sha = await redis.script_load(TRIVIAL_SCRIPT)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(f"__keyspace@0__:{FLOOR_KEY_PREFIX}*")
    print("ready", flush=True)
    async with redis.client() as held:
        await held.ping()
        connection = held.connection
        assert connection is not None
        packed = connection.pack_command("EVALSHA", sha, 1, f"{FLOOR_KEY_PREFIX}x")
        async for _message in pubsub.listen():
            read_at = time.monotonic()
            await connection.send_packed_command(packed)
            await connection.read_response()
            answered_at = time.monotonic()
            print(f"{read_at:.7f} {answered_at:.7f}", flush=True)


async def floor_latencies(
    redis: Redis, redis_url: str, trials: int, idle_s: float, moment: Callable[[tuple[int, int]], float]
) -> list[float]:
    """SET -> the probe read the answer of its round trip, in ms, for `trials` keys each written after
    `idle_s`; `moment` turns Redis's TIME into CLOCK_MONOTONIC. A probe that fails raises
    SubprocessError, which the bench reports as broken."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, redis_url, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        if await asyncio.wait_for(process.stdout.readline(), 15) != b"ready\n":
            raise subprocess.SubprocessError("the floor's probe did not start")
        latencies = []
        for n in range(trials):
            await asyncio.sleep(idle_s)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.time()  # as for a permit: Redis's moment just before the SET
                pipe.set(f"{FLOOR_KEY_PREFIX}{n}", "1", ex=60)
                redis_time, _ = await pipe.execute()
            line = await asyncio.wait_for(process.stdout.readline(), 5)
            if not line:
                raise subprocess.SubprocessError("the floor's probe ended")
            _read_at, answered_at = (float(value) for value in line.split())
            latencies.append((answered_at - moment(redis_time)) * 1000)
        return latencies
    except TimeoutError as late:
        raise subprocess.SubprocessError("the floor's probe did not answer in time") from late
    finally:
        process.terminate()
        await process.wait()


if __name__ == "__main__":
    asyncio.run(probe(sys.argv[1]))
