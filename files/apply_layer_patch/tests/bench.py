"""`make bench`: the apply layer's latencies and throughput, measured in one run, printed as a table.

Everything runs as in production on one host: a real redis-server, the exchange emulator in its own
process, and the service as `quantum-apply-layer run` in its own process (TESTNET=false, every gate),
so neither shares a GIL with this script. Times are taken on CLOCK_MONOTONIC, which is system-wide on
Linux: the emulator stamps every order it receives with it, so its stamps compare with ours.

1. switch SET -> last order started: plans flow, the global switch is SET; the latency is the last
   order the exchange accepted after the SET (0 when none). Claims after the SET are counted, too: the
   dedupe marks counted in the SET's own MULTI against those after the drain (must be 0).
2. permit arrival -> order sent: a plan waits for its permits; both are SET in one MULTI; the latency
   is the emulator's arrival stamp of the plan's order.
3. plans/s through all gates, from the first plan's start to the last result (a preloaded backlog),
   and that rate against `redis-benchmark` EVAL throughput on the same Redis, in the same run.

Benchmarks never fail on a time: the exit status is 1 only when something broke (a wrong count of
orders or results, a claim after the SET, a process that would not start or stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import aiohttp
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET
from plans import grant_permits, plan_fields, wait_for_results
from redis.asyncio import Redis
from redis_server import RedisServer, free_port
from service_process import ServiceProcess
from test_faults import SYMBOLS, load_plans

from quantum_apply_layer import keys

HALT_TRIALS = 15
HALT_PLANS = 2000
HALT_AFTER_RESULTS = 300
PERMIT_TRIALS = 200
PERMIT_WARMUP_PLANS = 5
PERMIT_SETTLE_S = 0.005  # the plan is read and waiting on its permits before they arrive
RATE_RUNS = 3
RATE_PLANS = 5000
EVAL_REQUESTS = 100_000
EVAL_CLIENTS = 50
EVAL_SCRIPT = "return redis.call('GET', KEYS[1])"
POSITION = 100_000.0  # large enough that no plan of the run finds the position closed
# Production settings (ServiceProcess's test defaults put back), with the in-flight bound the issue names.
SERVICE_ENV = {
    "APPLY_MAX_IN_FLIGHT": "64",
    "APPLY_RECLAIM_IDLE_MS": "30000",
    "APPLY_PERMIT_TIMEOUT_MS": "2000",
    "APPLY_LOG_FORMAT": "json",
}
TARGET_HALT_MS = 5.0
TARGET_PERMIT_MS = 5.0
TARGET_PLANS_PER_S = 2000.0
START_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 60.0
# The number of dedupe marks, read inside the MULTI that sets the switch: the claims before the SET.
COUNT_DEDUPE_MARKS = "return #redis.call('KEYS', 'quantum:apply:dedupe:*')"
P = ParamSpec("P")
T = TypeVar("T")


class BenchBroken(Exception):
    """The run did not do what it measures (counts wrong, a process dead): its figures mean nothing."""


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def entry_ms(entry_id: str) -> int:
    """A stream entry id's millisecond part: when Redis appended it, on Redis's clock."""
    return int(entry_id.split("-", 1)[0])


class EmulatorProcess:
    """`quantum-exchange-emulator` in its own process, driven through its /_emulator/ endpoints."""

    def __init__(self, log_path: Path) -> None:
        script = shutil.which("quantum-exchange-emulator", path=str(Path(sys.executable).parent))
        if script is None:
            raise BenchBroken("quantum-exchange-emulator is not installed in this venv (make venv)")
        self.script = script
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        env = {**os.environ, "BINANCE_API_KEY": EMULATOR_API_KEY, "BINANCE_API_SECRET": EMULATOR_API_SECRET}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.script, "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.base_url}/_emulator/info") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise BenchBroken(f"the emulator did not answer on port {self.port}; see {self.log_path}")

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    async def _call(self, method: str, path: str, body: object = None) -> Any:
        assert self.session is not None
        async with self.session.request(method, f"{self.base_url}/_emulator/{path}", json=body) as response:
            if response.status != 200:
                raise BenchBroken(f"emulator {method} {path}: HTTP {response.status}")
            return await response.json()

    async def reset(self) -> None:
        await self._call("POST", "reset")
        await self._call("POST", "positions", dict.fromkeys(SYMBOLS, POSITION))

    async def accepted_orders(self) -> dict[str, float]:
        """client order id -> arrival on CLOCK_MONOTONIC, for every order the exchange accepted."""
        orders = (await self._call("GET", "orders"))["orders"]
        accepted = [order for order in orders if order["status"] not in {"REJECTED", "DROPPED"}]
        arrivals = {str(order["clientOrderId"]): float(order["receivedMonotonic"]) for order in accepted}
        if len(arrivals) != len(accepted):
            raise BenchBroken(f"{len(accepted) - len(arrivals)} client order ids were used twice")
        return arrivals


@dataclass
class Lab:
    directory: Path
    redis_server: RedisServer
    redis: Redis
    emulator: EmulatorProcess

    async def reset(self) -> None:
        """Flat Redis (no switch, streams, marks or permits) and an emulator with fresh positions."""
        await self.redis.flushall()
        await self.emulator.reset()

    @contextlib.asynccontextmanager
    async def service(self) -> AsyncIterator[ServiceProcess]:
        service = ServiceProcess(
            self.redis_server.url, self.emulator.base_url, self.directory / "service.log", **SERVICE_ENV
        )
        service.start()
        try:
            yield service
        finally:
            code = service.terminate()
        if code != 0:
            raise BenchBroken(f"the service exited with {code}; see {service.log_path}")


def plan_id_of(client_order_id: str) -> str:
    return client_order_id.removeprefix("qh-").rsplit("-", 1)[0]


async def wait_for_result_count(redis: Redis, count: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while await redis.xlen(keys.RESULT_STREAM) < count:
        if time.monotonic() > deadline:
            raise BenchBroken(f"fewer than {count} results after {RUN_TIMEOUT_S}s")
        await asyncio.sleep(0.002)


@dataclass(frozen=True)
class HaltTrial:
    latency_ms: float
    orders_after_set: int
    claims_after_set: int


async def halt_trial(lab: Lab, trial: int) -> HaltTrial:
    await lab.reset()
    plan_ids = await load_plans(lab.redis, HALT_PLANS, f"halt{trial}")
    async with lab.service():
        await wait_for_result_count(lab.redis, HALT_AFTER_RESULTS)
        async with lab.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.GLOBAL_SWITCH, "true")
            pipe.eval(COUNT_DEDUPE_MARKS, 0)
            # Taken before the MULTI leaves: the SET takes effect after it, so the latency is not flattered.
            set_at = time.monotonic()
            _, marks_at_set = await pipe.execute()
        found = await wait_for_results(lab.redis, HALT_PLANS, timeout_s=RUN_TIMEOUT_S)
    marks_after = await lab.redis.eval(COUNT_DEDUPE_MARKS, 0)
    arrivals = await lab.emulator.accepted_orders()
    statuses = Counter(found[plan_id]["status"] for plan_id in plan_ids if plan_id in found)
    ordered = {plan_id_of(coid) for coid in arrivals}
    if (
        len(found) != HALT_PLANS
        or statuses["executed"] + statuses["halted"] != HALT_PLANS
        or statuses["executed"] != len(arrivals)
        or not ordered <= set(plan_ids)
    ):
        raise BenchBroken(
            f"halt trial {trial}: {len(found)} results {dict(statuses)}, {len(arrivals)} orders"
        )
    if statuses["halted"] == 0:
        raise BenchBroken(f"halt trial {trial}: every plan ran before the SET; nothing was measured")
    after = [at - set_at for at in arrivals.values() if at > set_at]
    return HaltTrial(max(after, default=0.0) * 1000, len(after), int(marks_after) - int(marks_at_set))


async def permit_latencies(lab: Lab) -> list[float]:
    await lab.reset()
    permits_at: dict[str, float] = {}
    async with lab.service():
        # Warm: the service has connected to the exchange and reads the stream before the first trial.
        for n in range(PERMIT_WARMUP_PLANS):
            await grant_permits(lab.redis, f"warm-{n}", position=POSITION)
            await lab.redis.xadd(keys.PLAN_STREAM, plan_fields(f"warm-{n}", symbol=SYMBOLS[n]))
        await wait_for_results(lab.redis, PERMIT_WARMUP_PLANS, timeout_s=START_TIMEOUT_S + RUN_TIMEOUT_S)
        last_id = str((await lab.redis.xrevrange(keys.RESULT_STREAM, count=1))[0][0])
        for n in range(PERMIT_TRIALS):
            plan_id = f"permit-{n}"
            await lab.redis.xadd(keys.PLAN_STREAM, plan_fields(plan_id, symbol=SYMBOLS[n % len(SYMBOLS)]))
            await asyncio.sleep(PERMIT_SETTLE_S)
            async with lab.redis.pipeline(transaction=True) as pipe:
                await grant_permits(pipe, plan_id, position=POSITION)  # queued: both SETs in one MULTI
                permits_at[plan_id] = time.monotonic()
                await pipe.execute()
            reply = await lab.redis.xread({keys.RESULT_STREAM: last_id}, count=1, block=5000)
            if not reply:
                raise BenchBroken(f"no result for {plan_id} within 5 s")
            # XREAD answers [[stream, [[id, fields]]]].
            entry_id, fields = cast(tuple[str, dict[str, str]], reply[0][1][0])
            last_id = str(entry_id)
            if fields["plan_id"] != plan_id or fields["status"] != "executed":
                raise BenchBroken(f"{plan_id}: unexpected result {fields}")
    arrivals = await lab.emulator.accepted_orders()
    if len(arrivals) != PERMIT_WARMUP_PLANS + PERMIT_TRIALS:
        raise BenchBroken(f"{len(arrivals)} orders for {PERMIT_WARMUP_PLANS + PERMIT_TRIALS} plans")
    return [(arrivals[f"qh-{plan_id}-0"] - at) * 1000 for plan_id, at in permits_at.items()]


async def plans_per_second(lab: Lab, run: int) -> float:
    await lab.reset()
    await load_plans(lab.redis, RATE_PLANS, f"rate{run}")
    async with lab.service():
        await wait_for_result_count(lab.redis, RATE_PLANS)
    entries = await lab.redis.xrange(keys.RESULT_STREAM)
    arrivals = await lab.emulator.accepted_orders()
    executed = sum(fields["status"] == "executed" for _, fields in entries)
    if len(entries) != RATE_PLANS or executed != RATE_PLANS or len(arrivals) != RATE_PLANS:
        raise BenchBroken(
            f"rate run {run}: {len(entries)} results, {executed} executed, {len(arrivals)} orders"
        )
    # On Redis's clock: the first plan's start (its result's time less its duration) to the last result.
    started_ms = min(entry_ms(entry_id) - float(fields["duration_ms"]) for entry_id, fields in entries)
    finished_ms = max(entry_ms(entry_id) for entry_id, _ in entries)
    return RATE_PLANS / ((finished_ms - started_ms) / 1000)


def eval_per_second(port: int) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise BenchBroken("redis-benchmark is not installed: apt-get install redis-tools")
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-q", "--csv", "-n", str(EVAL_REQUESTS)]
    command += ["-c", str(EVAL_CLIENTS), "EVAL", EVAL_SCRIPT, "1", keys.GLOBAL_SWITCH]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = list(csv.DictReader(output.splitlines()))
    if len(rows) != 1:
        raise BenchBroken(f"redis-benchmark printed {output!r}")
    return float(rows[0]["rps"])


def yes_no(met: bool) -> str:
    return "yes" if met else "no"


def print_table(halts: list[HaltTrial], permits: list[float], rates: list[float], evals: list[float]) -> None:
    halt_ms = [trial.latency_ms for trial in halts]
    rate, eval_rate = statistics.median(rates), statistics.median(evals)
    rows = [
        ("metric", "median", "p99", "target", "met"),
        (
            "switch SET -> last order started (ms)",
            f"{statistics.median(halt_ms):.2f}",
            f"{p99(halt_ms):.2f}",
            f"<= {TARGET_HALT_MS:g} ms",
            yes_no(p99(halt_ms) <= TARGET_HALT_MS),
        ),
        (
            "permit arrival -> order sent (ms)",
            f"{statistics.median(permits):.2f}",
            f"{p99(permits):.2f}",
            f"<= {TARGET_PERMIT_MS:g} ms",
            yes_no(p99(permits) <= TARGET_PERMIT_MS),
        ),
        (
            "plans/s through all gates",
            f"{rate:.0f}",
            "-",
            f">= {TARGET_PLANS_PER_S:.0f}/s",
            yes_no(rate >= TARGET_PLANS_PER_S),
        ),
        ("redis-benchmark EVAL requests/s", f"{eval_rate:.0f}", "-", "-", "-"),
        ("plans/s / EVAL/s", f"{rate / eval_rate:.4f}", "-", "-", "-"),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    print(f"halt trials: {len(halts)} x {HALT_PLANS} plans, SET after {HALT_AFTER_RESULTS} results;")
    print(f"  orders accepted after the SET per trial: {[trial.orders_after_set for trial in halts]}")
    print(f"  plans claimed after the SET: {sum(trial.claims_after_set for trial in halts)} (must be 0)")
    print(f"permit trials: {len(permits)}, one plan at a time, max {max(permits):.2f} ms")
    print(f"plans/s runs ({RATE_PLANS} plans each): {', '.join(f'{value:.0f}' for value in rates)}")
    print(f"EVAL runs (redis-benchmark -n {EVAL_REQUESTS} -c {EVAL_CLIENTS} EVAL {EVAL_SCRIPT!r} 1 ")
    print(f"  {keys.GLOBAL_SWITCH}): {', '.join(f'{value:.0f}' for value in evals)}")


async def measure(directory: Path) -> None:
    redis_server = RedisServer(directory)
    redis_server.start()
    emulator = EmulatorProcess(directory / "emulator.log")
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    emulator.start()
    try:
        await emulator.wait_ready()
        lab = Lab(directory, redis_server, redis, emulator)
        halts = [
            await timed(f"halt trial {n + 1}/{HALT_TRIALS}", halt_trial, lab, n) for n in range(HALT_TRIALS)
        ]
        if any(trial.claims_after_set for trial in halts):
            raise BenchBroken(f"plans claimed after the switch SET: {[t.claims_after_set for t in halts]}")
        permits = await timed(f"{PERMIT_TRIALS} permit trials", permit_latencies, lab)
        rates: list[float] = []
        evals: list[float] = []
        for run in range(RATE_RUNS):  # interleaved, so both see the same load on the machine
            rates.append(await timed(f"rate run {run + 1}/{RATE_RUNS}", plans_per_second, lab, run))
            await lab.reset()
            evals.append(eval_per_second(redis_server.port))
        print_table(halts, permits, rates, evals)
    finally:
        await redis.aclose()
        await emulator.stop()
        redis_server.stop()


async def timed(label: str, step: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    started = time.monotonic()
    value = await step(*args, **kwargs)
    print(f"{label}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return value


def main() -> int:
    load = os.getloadavg()
    print(
        f"apply layer benchmark: {os.cpu_count()} CPUs, load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, Python {platform.python_version()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as directory:
        try:
            asyncio.run(measure(Path(directory)))
        except (BenchBroken, subprocess.SubprocessError) as error:
            print(f"benchmark broke: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
