"""The machine's floor under "permit arrival -> order leaves the host": the gate's two Redis hops with no
gate in between, measured in the bench's run so that its figure can be read against this machine.

Between a permit's SET and its order, the gate cannot do without two trips through Redis: the keyspace
notification that wakes the plan, and the claim's round trip. Each wakes a process that was idle; on a
virtual machine that costs far more than the work it carries. Here a probe process of its own, as the
service is, listens to the same notifications through redis-py and, at each, sends one packed `EVALSHA`
on a held connection and reads its answer, with no other work in between. The bench writes the key as
it writes a permit (TIME and SET in one MULTI, after the same idle), and takes SET -> notification read
and SET -> answer read. Both legs go through redis-py, as the service's do: it is the floor of the gate
as built, not of any client.

Run by bench.py; `python bench_floor.py REDIS_URL` is the probe: a line per notification on stdout,
`<key> <notification read> <answer read>` on CLOCK_MONOTONIC.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

FLOOR_KEY_PREFIX = "quantum:bench:floor:"
GET_SCRIPT = "return redis.call('GET', KEYS[1])"  # a script that does next to nothing
WARMUP_TRIALS = 5  # the probe's first answers pay for its start: not counted
STARTUP_TIMEOUT_S = 15.0
ANSWER_TIMEOUT_S = 5.0


async def probe(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    sha = await redis.script_load(GET_SCRIPT)
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))  # the URL's, as the service's watcher
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"__keyspace@{db}__:{FLOOR_KEY_PREFIX}*")
    async with redis.client() as held:
        await held.ping()
        connection = held.connection
        assert connection is not None
        packed = connection.pack_command("EVALSHA", sha, 1, f"{FLOOR_KEY_PREFIX}x")
        async for message in pubsub.listen():
            if message["type"] == "psubscribe":  # Redis confirmed the subscription: the bench may write
                print("ready", flush=True)
                continue
            if message["data"] != b"set":  # one line per SET, whatever else Redis is set to publish
                continue
            read_at = time.monotonic()
            await connection.send_packed_command(packed)
            await connection.read_response()
            answered_at = time.monotonic()
            key = message["channel"].decode().rsplit(":", 1)[-1]
            print(f"{key} {read_at:.7f} {answered_at:.7f}", flush=True)


@dataclass(frozen=True)
class Floor:
    notified_ms: list[float]  # SET -> the probe read its notification
    answered_ms: list[float]  # SET -> the probe read its round trip's answer: the floor


async def floor_latencies(
    redis: Redis, redis_url: str, trials: int, idle_s: float, moment: Callable[[tuple[int, int]], float]
) -> Floor:
    """`trials` keys, each written after `idle_s`; `moment` turns Redis's TIME into CLOCK_MONOTONIC.
    A probe that fails, falls silent or answers for another key raises SubprocessError, which the bench
    reports as broken."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, redis_url, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    floor = Floor([], [])
    try:
        if await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S) != b"ready\n":
            raise subprocess.SubprocessError("the floor's probe did not start")
        for n in range(WARMUP_TRIALS + trials):
            await asyncio.sleep(idle_s)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.time()  # as for a permit: Redis's moment just before the SET
                pipe.set(f"{FLOOR_KEY_PREFIX}{n}", "1", ex=60)
                redis_time, _ = await pipe.execute()
            line = (await asyncio.wait_for(process.stdout.readline(), ANSWER_TIMEOUT_S)).split()
            if len(line) != 3 or line[0] != str(n).encode():
                raise subprocess.SubprocessError(f"the floor's probe answered {line!r} for key {n}")
            if n >= WARMUP_TRIALS:
                written_at = moment(redis_time)
                floor.notified_ms.append((float(line[1]) - written_at) * 1000)
                floor.answered_ms.append((float(line[2]) - written_at) * 1000)
        return floor
    except TimeoutError as late:
        raise subprocess.SubprocessError("the floor's probe did not answer in time") from late
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
            process.terminate()
        await process.wait()


if __name__ == "__main__":
    try:
        asyncio.run(probe(sys.argv[1]))
    except (RedisError, OSError) as error:  # one line on stderr; the bench says what it meant
        sys.exit(f"the floor's probe: {error}")
