"""`make bench`: the apply layer's latencies and throughput, measured in one run, printed as a table.

Everything runs as in production on one host: a real redis-server, the exchange emulator in its own
process, and the service as `quantum-apply-layer run` in its own process (TESTNET=false, every gate),
so neither shares a GIL with this script. Times are compared on CLOCK_MONOTONIC, which is system-wide on
Linux: the emulator stamps every order it receives with it, so its stamps compare with ours.

1. switch SET -> last order leaves the host: plans flow, the global switch is SET; the latency runs from
   the SET's moment in Redis (TIME, read in the same MULTI just before it) to the last order whose bytes
   left the service after it (0 when none).
   Claims after the SET are counted, too: the dedupe marks that carry a claim, counted in the SET's own
   MULTI against those after the drain (must be 0).
2. permit arrival -> order leaves the host: a plan waits for its permits, written as two writers do: the
   governor's first, then the position brain's in a MULTI whose TIME, read just before its SET, is the
   arrival (the writer's own client time is not the gate's).
3. plans/s through all gates, from the first plan's start to the last result (a preloaded backlog),
   and that rate against `redis-benchmark` EVAL throughput on the same Redis, in the same run; with
   the CPU each process spends per plan, and how busy the whole machine was, to say what limits it.
4. the order's door: one order at a time over kept-alive HTTP (POST /fapi/v1/order) and over a held
   websocket (the websocket API's order.place), alternated: send -> the emulator has the order, less d.
5. the machine's floor (bench_floor.py): the gate's two Redis hops alone, through redis-py as the
   service's go, a permit-like SET -> its notification read by a process of its own -> one EVALSHA's
   answer, nothing in between; measured right after each distance's permit trials (it involves no
   exchange), so that 2. less it is the gate's own part under the same load.

Each of 1. to 4. is measured with the exchange at a distance: the service reaches the emulator through a
delay proxy (tests/delay_proxy.py, in its own process) that holds every byte `d` each way, for d = 0, 10
and 50 ms in one run. Where an order's bytes leave the service is the kernel's receive stamp on the
proxy's socket, taken at or just after the service's write on loopback, before the proxy's wake-up, its
timers and the emulator's parsing: that time less the start is what the gate adds, whatever d. Redis's
TIME and the kernel's stamps are CLOCK_REALTIME, read as CLOCK_MONOTONIC by their age.
Requests and weight per plan are the emulator's count of Binance requests on a plan's path during the
steady part of the rate runs (Binance's IP weights, from the emulator's cost table), divided by the
plans handled meanwhile; the background (the reconciliation, the listen key, the clock) is measured
apart, with no plan for BACKGROUND_WINDOW_S, as a weight per minute.

Benchmarks never fail on a time: the exit status is 1 only when something broke (a wrong count of
orders or results, a claim after the SET, a process that would not start or stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
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
from bench_floor import GET_SCRIPT, Floor, floor_latencies
from binance_signing import close_params, rest_order_body, ws_api_request
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET
from plans import grant_permits, permits, plan_fields, results
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis_server import RedisServer, free_port
from service_process import ServiceProcess
from test_faults import SYMBOLS, load_plans

from quantum_apply_layer import keys
from quantum_apply_layer.emulator_limits import ENDPOINT_COSTS
from quantum_apply_layer.websocket_hosts import WS_API_PATH

DISTANCES_MS = (0, 10, 50)  # one-way delay to the exchange
HALT_TRIALS = 5  # per distance
HALT_PLANS = 2000
HALT_AFTER_RESULTS = 300
PERMIT_TRIALS = 300  # per distance: the p99 is then the 297th, not the 2nd largest of 100
PERMIT_WARMUP_PLANS = 5
PERMIT_SETTLE_S = 0.005  # the plan is read, and waiting on its second permit before it arrives
PERMIT_TTL_S = 60
RATE_RUNS = 3  # at 0 ms, interleaved with redis-benchmark; one run at each other distance
RATE_PLANS = 5000
RATE_PLANS_AT_DISTANCE = 1000  # 5 symbols, one plan each per round trip: 50 plans/s at 50 ms
# Requests the service makes whatever the plans: the reconciliation, the listen key, the clock, and the
# connections of the user data stream and of the websocket API for orders.
BACKGROUND_MARKS = ("(every symbol)", "/listenKey", "GET /fapi/v1/time", "GET /ws/", "GET /ws-fapi/")
DOOR_TRIALS = 200  # orders per door per distance, one at a time, the doors alternated
RECONCILIATION = "GET /fapi/v3/positionRisk (every symbol)"
BACKGROUND_WINDOW_S = 30.0  # no plans: 6 reconciliations at the default 5 s
STREAM_SETTLE_S = 1.0  # after the warm-up plans: their echoes back on the stream, a reconciliation
RECONCILED_AT = "apply_user_stream_last_reconcile_timestamp_seconds"
EVAL_REQUESTS = 100_000
EVAL_CLIENTS = 50
EVAL_SCRIPT = GET_SCRIPT
UNLIMITED = ("weight_per_minute", "orders_per_10s", "orders_per_minute")
POSITION = 100_000.0  # large enough that no plan of the run finds the position closed
# Production settings (ServiceProcess's test defaults put back), 64 plans in flight instead of 32: plans of
# one symbol run one at a time, so with 5 symbols either bound leaves the same 5 running.
SERVICE_ENV = {
    "APPLY_MAX_IN_FLIGHT": "64",
    "APPLY_RECLAIM_IDLE_MS": "30000",
    "APPLY_PERMIT_TIMEOUT_MS": "2000",
    "APPLY_LOG_FORMAT": "json",
}
TARGET_GATE_MS = 2.0  # what the gate adds, p99, at every distance
TARGET_WEIGHT_PER_PLAN = 1.0
REQUESTS_PER_PLAN_EDGE = 0.005
TARGET_PLANS_PER_S = 2000.0
START_TIMEOUT_S = 15.0
STALL_TIMEOUT_S = 10.0
POLL_S = 0.01  # often enough to SET the switch near its mark, rare enough to cost the service nothing
# The plans claimed so far, read inside the MULTI that sets the switch: the dedupe marks that carry a
# claim (a plan recorded as halted gets a mark too, without `claimed_at`).
COUNT_CLAIMS = """
local claims = 0
for _, key in ipairs(redis.call('KEYS', 'quantum:apply:dedupe:*')) do
  local ok, mark = pcall(cjson.decode, redis.call('GET', key))
  if ok and type(mark) == 'table' and mark.claimed_at then
    claims = claims + 1
  end
end
return claims
"""
P = ParamSpec("P")
T = TypeVar("T")


class BenchBroken(Exception):
    """The run did not do what it measures (counts wrong, a process dead): its figures mean nothing."""


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def monotonic_of(redis_time: tuple[int, int]) -> float:
    """Redis's TIME (CLOCK_REALTIME, this host's) as CLOCK_MONOTONIC, the clock every stamp here uses."""
    seconds, microseconds = redis_time
    # Monotonic first: a pause between the two reads can only make the start earlier, never later.
    now = time.monotonic()
    return now - (time.time() - (seconds + microseconds / 1e6))


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
        # The bench measures the gate, not Binance's limits (480 closes a minute per account): lift them.
        await self._call("POST", "faults", dict.fromkeys(UNLIMITED, 1_000_000_000))
        await self._call("POST", "positions", dict.fromkeys(SYMBOLS, POSITION))

    async def request_counts(self) -> Counter[str]:
        """Binance requests received so far, by method and path."""
        counts = await self._call("GET", "requests")
        return Counter({str(name): int(count) for name, count in counts.items()})

    async def accepted_orders(self) -> dict[str, float]:
        """client order id -> arrival on CLOCK_MONOTONIC, for every order the exchange accepted."""
        orders = (await self._call("GET", "orders"))["orders"]
        accepted = [order for order in orders if order["status"] not in {"REJECTED", "DROPPED"}]
        arrivals = {str(order["clientOrderId"]): float(order["receivedMonotonic"]) for order in accepted}
        if len(arrivals) != len(accepted):
            raise BenchBroken(f"{len(accepted) - len(arrivals)} client order ids were used twice")
        return arrivals


@dataclass(frozen=True)
class Departure:
    left_at: float  # the kernel's stamp: the service's write put the bytes on the wire (loopback)
    read_at: float  # when the proxy's loop read them: later by its own wake-up, not the gate's


class DelayProxyProcess:
    """tests/delay_proxy.py in its own process, between the service and the emulator."""

    def __init__(self, target_port: int, delay_ms: int, directory: Path) -> None:
        self.delay_ms = delay_ms
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.departures_path = directory / f"departures-{delay_ms}ms-{self.port}.txt"
        self.report = ""
        script = Path(__file__).with_name("delay_proxy.py")
        command = [sys.executable, str(script), str(self.port), str(target_port), str(delay_ms)]
        self.process = subprocess.Popen(
            [*command, str(self.departures_path)], stdout=subprocess.PIPE, text=True
        )

    def departures(self) -> dict[str, Departure]:
        """client order id -> when the order's bytes left the service, and when the proxy read them."""
        if not self.departures_path.exists():
            return {}
        left: dict[str, Departure] = {}
        for line in self.departures_path.read_text().splitlines():
            client_order_id, left_at, read_at = line.split()
            left.setdefault(client_order_id, Departure(float(left_at), float(read_at)))
        return left

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise BenchBroken(f"the delay proxy did not listen on port {self.port}")

    def stop(self) -> str:
        """Stops it; what it says about the connections it carried."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return out.strip()


@dataclass
class Lab:
    directory: Path
    redis_server: RedisServer
    redis: Redis
    emulator: EmulatorProcess
    proxy: DelayProxyProcess | None = None  # where the service finds the exchange

    def departures(self) -> dict[str, Departure]:
        assert self.proxy is not None
        return self.proxy.departures()

    async def reset(self) -> None:
        """Flat Redis (no switch, streams, marks or permits) and an emulator with fresh positions."""
        await self.redis.flushall()
        await self.emulator.reset()

    @contextlib.asynccontextmanager
    async def service(self) -> AsyncIterator[ServiceProcess]:
        assert self.proxy is not None
        service = ServiceProcess(
            self.redis_server.url,
            self.proxy.url,
            self.directory / "service.log",
            **SERVICE_ENV,
            APPLY_METRICS_PORT=str(free_port()),
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
    """Until `count` results are recorded; broken when none is added for STALL_TIMEOUT_S."""
    seen, progressed_at = -1, time.monotonic()
    while (now := await redis.xlen(keys.RESULT_STREAM)) < count:
        if now > seen:
            seen, progressed_at = now, time.monotonic()
        elif time.monotonic() - progressed_at > STALL_TIMEOUT_S:
            raise BenchBroken(f"{now} results, none more for {STALL_TIMEOUT_S:g}s, expected {count}")
        await asyncio.sleep(POLL_S)


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
            pipe.time()  # the SET's own moment, read by Redis just before it runs
            pipe.set(keys.GLOBAL_SWITCH, "true")
            pipe.eval(COUNT_CLAIMS, 0)
            redis_time, _, marks_at_set = await pipe.execute()
        set_at = monotonic_of(redis_time)
        await wait_for_result_count(lab.redis, HALT_PLANS)
        found = await results(lab.redis)
    marks_after = await lab.redis.eval(COUNT_CLAIMS, 0)
    arrivals = await lab.emulator.accepted_orders()
    departures = lab.departures()
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
    # When the bytes left the service: the gate's share, whatever the distance.
    left = [departures[coid].left_at for coid in arrivals]
    after = [at - set_at for at in left if at > set_at]
    return HaltTrial(max(after, default=0.0) * 1000, len(after), int(marks_after) - int(marks_at_set))


async def door_latencies(lab: Lab) -> dict[str, list[float]]:
    """One order at a time by each door, alternated, through the same proxy: send -> the emulator has it,
    less d. Both are signed before the clock starts; what is left is the door: HTTP on a kept-alive
    connection (what the product does, less ccxt's ~0.05 ms) or `order.place` on a held websocket."""
    assert lab.proxy is not None
    await lab.reset()
    proxy = lab.proxy
    sent_at: dict[str, tuple[str, float]] = {}
    headers = {"X-MBX-APIKEY": EMULATOR_API_KEY, "Content-Type": "application/x-www-form-urlencoded"}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(proxy.url.replace("http://", "ws://") + WS_API_PATH) as socket,
    ):
        for n in range(-1, DOOR_TRIALS):  # -1: both connections opened and warm before the first trial
            body = rest_order_body(close_params(f"door-http-{n}"))
            started = time.monotonic()
            async with session.post(f"{proxy.url}/fapi/v1/order", data=body, headers=headers) as response:
                if response.status != 200:
                    raise BenchBroken(f"HTTP order: {response.status} {await response.text()}")
            sent_at[f"door-http-{n}"] = ("HTTP keep-alive, POST /fapi/v1/order", started)
            request = json.dumps(ws_api_request(str(n), close_params(f"door-ws-{n}")))
            started = time.monotonic()
            await socket.send_str(request)
            answer = json.loads(await socket.receive_str(timeout=5))
            if answer.get("status") != 200:
                raise BenchBroken(f"websocket API order: {answer}")
            sent_at[f"door-ws-{n}"] = ("websocket API, order.place", started)
    arrivals = await lab.emulator.accepted_orders()
    latencies: dict[str, list[float]] = {}
    for client_order_id, (door, started) in sent_at.items():
        if not client_order_id.endswith("--1"):
            latencies.setdefault(door, []).append(
                (arrivals[client_order_id] - started) * 1000 - proxy.delay_ms
            )
    return latencies


@dataclass(frozen=True)
class OwnMeasure:
    """The service's own apply_gate_seconds{since="permit"}, from its /metrics: in production this is
    all there is to see what the gate adds. Starts at the notification's read, so after Redis's part."""

    count: int
    mean_ms: float
    p50_ms: float  # from its buckets, interpolated as Prometheus's histogram_quantile does
    p99_ms: float


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile over cumulative (le, count) pairs, sorted by le: linear inside the bucket."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


async def scrape(service: ServiceProcess) -> str:
    port = service.env["APPLY_METRICS_PORT"]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as answer:
        return await answer.text()


async def until_stream_reconciled(service: ServiceProcess) -> None:
    """The service's user data stream is up and reconciled, so the echoes of the orders it sends come
    back: an order sent before that has none, and the next plan on its symbol would wait
    FILL_ECHO_WAIT_S (250 ms) and read its position by REST, which is not what the trials measure."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            families = text_string_to_metric_families(await scrape(service))
            now = {sample.name: sample.value for family in families for sample in family.samples}
            if now.get("apply_user_stream_up") == 1 and now.get(RECONCILED_AT, 0) > 0:
                return
        await asyncio.sleep(POLL_S)
    raise BenchBroken(f"the service's user data stream was not reconciled within {START_TIMEOUT_S:g} s")


async def own_measure(service: ServiceProcess) -> OwnMeasure:
    text = await scrape(service)
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "apply_gate_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("since") != "permit":
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    if not count:
        raise BenchBroken("the service measured no permit's gate (apply_gate_seconds{since=permit})")
    buckets.sort()
    return OwnMeasure(
        int(count),
        total / count * 1000,
        bucket_quantile(buckets, 0.5) * 1000,
        bucket_quantile(buckets, 0.99) * 1000,
    )


@dataclass(frozen=True)
class PermitTrials:
    departures_ms: list[float]  # permits SET -> the order's bytes leave the service
    proxy_wakeups_ms: list[float]  # the bytes left -> the proxy read them (counted as the gate's until now)
    arrivals_ms: list[float]  # permits SET -> the emulator has the order (with d, the proxy, the parsing)
    own: OwnMeasure


async def permit_latencies(lab: Lab) -> PermitTrials:
    await lab.reset()
    permits_at: dict[str, float] = {}
    async with lab.service() as service:
        # Warm: the service has connected to the exchange and reads the stream before the first trial.
        await until_stream_reconciled(service)
        for n in range(PERMIT_WARMUP_PLANS):
            await grant_permits(lab.redis, f"warm-{n}", safe_close_qty=1.0, position=POSITION)
            await lab.redis.xadd(keys.PLAN_STREAM, plan_fields(f"warm-{n}", symbol=SYMBOLS[n]))
        await wait_for_result_count(lab.redis, PERMIT_WARMUP_PLANS)
        await asyncio.sleep(STREAM_SETTLE_S)
        last_id = str((await lab.redis.xrevrange(keys.RESULT_STREAM, count=1))[0][0])
        for n in range(PERMIT_TRIALS):
            plan_id = f"permit-{n}"
            await lab.redis.xadd(keys.PLAN_STREAM, plan_fields(plan_id, symbol=SYMBOLS[n % len(SYMBOLS)]))
            # Two writers, as in production: the governor's permit first (the plan, woken, still lacks
            # the other), then the position brain's, the one the plan waits for.
            written = permits(plan_id, 1.0, POSITION)
            await lab.redis.set(
                keys.governor_permit(plan_id), written[keys.governor_permit(plan_id)], ex=PERMIT_TTL_S
            )
            await asyncio.sleep(PERMIT_SETTLE_S)
            async with lab.redis.pipeline(transaction=True) as pipe:
                pipe.time()  # the permit's arrival, read by Redis just before its SET runs
                pipe.set(keys.p33_permit(plan_id), written[keys.p33_permit(plan_id)], ex=PERMIT_TTL_S)
                redis_time, _ = await pipe.execute()
            permits_at[plan_id] = monotonic_of(redis_time)
            reply = await lab.redis.xread({keys.RESULT_STREAM: last_id}, count=1, block=5000)
            if not reply:
                raise BenchBroken(f"no result for {plan_id} within 5 s")
            # XREAD answers [[stream, [[id, fields]]]].
            entry_id, fields = cast(tuple[str, dict[str, str]], reply[0][1][0])
            last_id = str(entry_id)
            if fields["plan_id"] != plan_id or fields["status"] != "executed":
                raise BenchBroken(f"{plan_id}: unexpected result {fields}")
        own = await own_measure(service)
    arrivals = await lab.emulator.accepted_orders()
    if len(arrivals) != PERMIT_WARMUP_PLANS + PERMIT_TRIALS:
        raise BenchBroken(f"{len(arrivals)} orders for {PERMIT_WARMUP_PLANS + PERMIT_TRIALS} plans")
    departures = lab.departures()
    return PermitTrials(
        [(departures[f"qh-{plan_id}-0"].left_at - at) * 1000 for plan_id, at in permits_at.items()],
        [
            (departures[f"qh-{plan_id}-0"].read_at - departures[f"qh-{plan_id}-0"].left_at) * 1000
            for plan_id in permits_at
        ],
        [(arrivals[f"qh-{plan_id}-0"] - at) * 1000 for plan_id, at in permits_at.items()],
        own,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux: /proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass(frozen=True)
class RateRun:
    plans_per_s: float
    cpu_ms_per_plan: dict[str, float]  # process -> CPU ms per plan, in the steady part of the run
    machine_busy: float  # share of all CPUs busy (with anything) meanwhile
    requests_per_plan: dict[str, float]  # Binance request on a plan's path -> how many per plan
    weight_per_plan: float  # Binance's IP weight of those requests, per plan
    background: Counter[str]  # the requests the service made meanwhile whatever the plans


def on_plan_path(name: str) -> bool:
    return not any(mark in name for mark in BACKGROUND_MARKS)


def weight(requests: Counter[str]) -> int:
    """Binance's IP weight (the emulator's cost table, the one it enforces); an order weighs 0 there and
    counts against the order limits instead."""
    total = 0
    for name, count in requests.items():
        method, path = name.split(" ", 1)
        every_symbol = path.endswith(" (every symbol)")
        cost = ENDPOINT_COSTS.get((method, path.removesuffix(" (every symbol)")))
        if cost is None:  # the websocket: no weight
            continue
        per_call = cost.weight
        if every_symbol and cost.weight_without_symbol is not None:
            per_call = cost.weight_without_symbol
        total += per_call * count
    return total


def plan_path(requests: Counter[str]) -> Counter[str]:
    return Counter({name: count for name, count in requests.items() if on_plan_path(name)})


async def rate_run(lab: Lab, run: int, plans: int = RATE_PLANS) -> RateRun:
    await lab.reset()
    await load_plans(lab.redis, plans, f"rate{run}")
    async with lab.service() as service:
        assert service.process is not None
        assert lab.redis_server.process is not None
        assert lab.emulator.process is not None
        pids = {
            "service": service.process.pid,
            "emulator": lab.emulator.process.pid,
            "redis": lab.redis_server.process.pid,
            "bench (this script)": os.getpid(),
        }
        # Where the CPU goes, past the service's start-up and before its last results.
        await wait_for_result_count(lab.redis, plans // 10)
        cpu_from, ticks_from = {name: cpu_seconds(pid) for name, pid in pids.items()}, machine_ticks()
        requests_from = await lab.emulator.request_counts()
        counted_from = await lab.redis.xlen(keys.RESULT_STREAM)
        await wait_for_result_count(lab.redis, plans * 9 // 10)
        cpu_to, ticks_to = {name: cpu_seconds(pid) for name, pid in pids.items()}, machine_ticks()
        counted = await lab.redis.xlen(keys.RESULT_STREAM) - counted_from
        requests = await lab.emulator.request_counts() - requests_from
        await wait_for_result_count(lab.redis, plans)
    entries = await lab.redis.xrange(keys.RESULT_STREAM)
    arrivals = await lab.emulator.accepted_orders()
    executed = sum(fields["status"] == "executed" for _, fields in entries)
    if len(entries) != plans or executed != plans or len(arrivals) != plans:
        raise BenchBroken(
            f"rate run {run}: {len(entries)} results, {executed} executed, {len(arrivals)} orders"
        )
    # On Redis's clock: the first plan's start (its result's time less its duration) to the last result.
    started_ms = min(entry_ms(entry_id) - float(fields["duration_ms"]) for entry_id, fields in entries)
    finished_ms = max(entry_ms(entry_id) for entry_id, _ in entries)
    return RateRun(
        plans / ((finished_ms - started_ms) / 1000),
        {name: (cpu_to[name] - cpu_from[name]) * 1000 / counted for name in pids},
        (ticks_to[0] - ticks_from[0]) / (ticks_to[1] - ticks_from[1]),
        {name: count / counted for name, count in sorted(plan_path(requests).items())},
        weight(plan_path(requests)) / counted,
        requests - plan_path(requests),
    )


async def background_weight_per_minute(lab: Lab) -> tuple[float, Counter[str]]:
    """The service's own requests with no plan at all, over BACKGROUND_WINDOW_S: what it costs whatever
    the plan rate (the reconciliation, the listen key's keep-alive, the clock)."""
    await lab.reset()
    async with lab.service():
        # Started, connected and reconciled once: the start-up is not counted.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (before := await lab.emulator.request_counts())[RECONCILIATION]:
            if time.monotonic() > deadline:
                raise BenchBroken(f"no reconciliation within {START_TIMEOUT_S:g}s of the service's start")
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(BACKGROUND_WINDOW_S)
        spent = await lab.emulator.request_counts() - before
    if plan_path(spent):
        raise BenchBroken(f"requests on a plan's path with no plan: {plan_path(spent)}")
    return weight(spent) * 60 / BACKGROUND_WINDOW_S, spent


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


@dataclass
class AtDistance:
    delay_ms: int
    halts: list[HaltTrial]
    permits: PermitTrials
    floor: Floor
    runs: list[RateRun]
    doors: dict[str, list[float]]
    proxy_report: str


def latency_row(d: str, label: str, values: list[float]) -> tuple[str, ...]:
    if not values:
        return (d, label, "-", "-", f"<= {TARGET_GATE_MS:g} ms", "no order after the SET")
    met = yes_no(p99(values) <= TARGET_GATE_MS)
    return (
        d,
        label,
        f"{statistics.median(values):.2f}",
        f"{p99(values):.2f}",
        f"<= {TARGET_GATE_MS:g} ms",
        met,
    )


def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()


def print_table(
    distances: list[AtDistance], evals: list[float], background: tuple[float, Counter[str]]
) -> None:
    rows = [("one-way delay d", "metric (what the gate adds: d not included)", "p50", "p99", "target", "met")]
    for at in distances:
        d = f"{at.delay_ms} ms"
        halt_ms = [trial.latency_ms for trial in at.halts if trial.orders_after_set]
        rows.append(latency_row(d, "switch SET -> last order leaves the host (ms)", halt_ms))
        rows.append(latency_row(d, "permit arrival -> order leaves the host (ms)", at.permits.departures_ms))
        floor = at.floor.answered_ms
        floor_cells = (f"{statistics.median(floor):.2f}", f"{p99(floor):.2f}", "-", "-")
        rows.append((d, "  the machine's floor: the two Redis hops alone (ms)", *floor_cells))
        requests = statistics.median(sum(run.requests_per_plan.values()) for run in at.runs)
        # The counts are read a moment apart from the results they are divided by: +-1 at the window's edges.
        met = yes_no(abs(requests - 1) <= REQUESTS_PER_PLAN_EDGE)
        rows.append((d, "exchange requests on a close plan's path", f"{requests:.3f}", "-", "1", met))
        weight_per_plan = statistics.median(run.weight_per_plan for run in at.runs)
        met = yes_no(weight_per_plan <= TARGET_WEIGHT_PER_PLAN)
        rows.append(
            (
                d,
                "their weight per close plan",
                f"{weight_per_plan:.3f}",
                "-",
                f"<= {TARGET_WEIGHT_PER_PLAN:g}",
                met,
            )
        )
        rate = statistics.median(run.plans_per_s for run in at.runs)
        rows.append((d, "plans/s through all gates", f"{rate:.0f}", "-", "-", "-"))
    print_rows(rows)
    print("The order's door: send -> the emulator has the order, less d, one order at a time (ms)")
    doors = [("one-way delay d", "door", "p50", "p99", "max")]
    for at in distances:
        for door, values in at.doors.items():
            low, high = statistics.median(values), p99(values)
            doors.append((f"{at.delay_ms} ms", door, f"{low:.2f}", f"{high:.2f}", f"{max(values):.2f}"))
    print_rows(doors)
    per_minute, spent = background
    listed = ", ".join(f"{name} {count}" for name, count in sorted(spent.items()))
    print(
        f"background, whatever the plan rate: weight {per_minute:.0f} per minute of Binance's 2400 "
        f"(no plan for {BACKGROUND_WINDOW_S:g} s: {listed})"
    )
    print(
        "the machine's floor (bench_floor.py): a permit-like SET -> its notification read by a process of "
        "its own through redis-py -> one EVALSHA's answer read there, nothing in between, after the same "
        "idle, right after the permit trials"
    )
    print("p99 is the nearest rank: the largest value when there are fewer than 100.")
    print(
        f"plans/s target {TARGET_PLANS_PER_S:.0f}/s at 0 ms; at a distance one plan per symbol per round trip"
    )
    for at in distances:
        print(f"d = {at.delay_ms} ms:")
        print(
            f"  halt trials: {len(at.halts)} x {HALT_PLANS} plans, the switch SET after {HALT_AFTER_RESULTS} "
            f"results; orders after the SET per trial: {[trial.orders_after_set for trial in at.halts]}"
        )
        print(f"  plans claimed after the SET: {sum(t.claims_after_set for t in at.halts)} (must be 0)")
        at_exchange = [value - at.delay_ms for value in at.permits.arrivals_ms]
        print(
            f"  permit trials: {len(at_exchange)}, one plan at a time; permit -> the emulator has the order, "
            f"less d (with the proxy's timers and the emulator's parsing): p50 "
            f"{statistics.median(at_exchange):.2f}, p99 {p99(at_exchange):.2f} ms"
        )
        notified, answered = at.floor.notified_ms, at.floor.answered_ms
        gate_own = statistics.median(at.permits.departures_ms) - statistics.median(answered)
        print(
            f"  the machine's floor: SET -> notification read p50 {statistics.median(notified):.2f}, "
            f"p99 {p99(notified):.2f} ms; -> the round trip's answer p50 {statistics.median(answered):.2f}, "
            f"p99 {p99(answered):.2f} ms; the permit row less it, p50: {gate_own:.2f} ms (the gate's own)"
        )
        wakeups = at.permits.proxy_wakeups_ms
        print(
            f"  the proxy's own wake-up on those orders (its read less the kernel's stamp, not the gate's): "
            f"p50 {statistics.median(wakeups):.2f}, p99 {p99(wakeups):.2f} ms"
        )
        own = at.permits.own
        print(
            f"  the service's own apply_gate_seconds{{since=permit}} on {own.count} plans (from the "
            f"notification's read, Redis's part not in it): mean {own.mean_ms:.2f} ms against the bench's "
            f"{statistics.mean(at.permits.departures_ms):.2f}; p50 {own.p50_ms:.2f}, p99 {own.p99_ms:.2f} ms "
            "(from its buckets)"
        )
        rates = ", ".join(f"{run.plans_per_s:.0f}" for run in at.runs)
        print(f"  plans/s runs ({len(at.runs)}): {rates}")
        for run in at.runs:
            per_plan = ", ".join(f"{name} {count:.3f}" for name, count in run.requests_per_plan.items())
            behind = ", ".join(f"{name} {count}" for name, count in sorted(run.background.items()))
            print(
                f"  per plan: {per_plan}; weight {run.weight_per_plan:.3f}; "
                f"meanwhile in the background: {behind or 'none'}"
            )
        print(f"  delay proxy: {at.proxy_report} (HTTP keep-alive: a handful, not one per request)")
    base = distances[0]
    for name in base.runs[0].cpu_ms_per_plan:
        per_run = ", ".join(f"{run.cpu_ms_per_plan[name]:.2f}" for run in base.runs)
        print(f"CPU ms per plan at {base.delay_ms} ms, {name}: {per_run}")
    busy = ", ".join(f"{run.machine_busy:.0%}" for run in base.runs)
    print(f"  all CPUs busy meanwhile (with anything on the machine): {busy}")
    eval_rate = statistics.median(evals)
    rate = statistics.median(run.plans_per_s for run in base.runs)
    runs_text = ", ".join(f"{value:.0f}" for value in evals)
    print(f"EVAL runs: {runs_text} requests/s; plans/s / EVAL/s at 0 ms {rate / eval_rate:.4f}")
    options = f"-q -n {EVAL_REQUESTS} -c {EVAL_CLIENTS}"
    print(f"  redis-benchmark {options} EVAL {EVAL_SCRIPT!r} 1 {keys.GLOBAL_SWITCH}")


@contextlib.asynccontextmanager
async def exchange_at(lab: Lab, delay_ms: int) -> AsyncIterator[DelayProxyProcess]:
    """The service reaches the emulator through a delay proxy, for the block."""
    proxy = DelayProxyProcess(lab.emulator.port, delay_ms, lab.directory)
    try:
        await proxy.wait_ready()
        lab.proxy = proxy
        yield proxy
    finally:
        lab.proxy = None
        proxy.report = proxy.stop()


async def at_distance(lab: Lab, delay_ms: int, evals: list[float]) -> AtDistance:
    async with exchange_at(lab, delay_ms) as proxy:
        tag = f"d={delay_ms}ms"
        halts = [
            await timed(f"{tag} halt trial {n + 1}/{HALT_TRIALS}", halt_trial, lab, n)
            for n in range(HALT_TRIALS)
        ]
        if any(trial.claims_after_set for trial in halts):
            raise BenchBroken(f"plans claimed after the switch SET: {[t.claims_after_set for t in halts]}")
        permits = await timed(f"{tag} {PERMIT_TRIALS} permit trials", permit_latencies, lab)
        floor = await timed(
            f"{tag} the machine's floor",
            floor_latencies,
            lab.redis,
            lab.redis_server.url,
            PERMIT_TRIALS,
            PERMIT_SETTLE_S,
            monotonic_of,
        )
        runs: list[RateRun] = []
        if delay_ms == 0:
            for run in range(RATE_RUNS):  # interleaved, so both see the same load on the machine
                runs.append(await timed(f"{tag} rate run {run + 1}/{RATE_RUNS}", rate_run, lab, run))
                await lab.reset()
                evals.append(eval_per_second(lab.redis_server.port))
        else:
            runs.append(await timed(f"{tag} rate run", rate_run, lab, 0, RATE_PLANS_AT_DISTANCE))
        doors = await timed(f"{tag} {DOOR_TRIALS} orders by each door", door_latencies, lab)
    return AtDistance(delay_ms, halts, permits, floor, runs, doors, proxy.report)


async def measure(directory: Path) -> None:
    redis_server = RedisServer(directory)
    redis_server.start()
    emulator = EmulatorProcess(directory / "emulator.log")
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    emulator.start()
    try:
        await emulator.wait_ready()
        lab = Lab(directory, redis_server, redis, emulator)
        evals: list[float] = []
        distances = [await at_distance(lab, delay_ms, evals) for delay_ms in DISTANCES_MS]
        async with exchange_at(lab, 0):
            background = await timed("background requests", background_weight_per_minute, lab)
        print_table(distances, evals, background)
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
    directory = Path(tempfile.mkdtemp(prefix="apply-bench-"))
    try:
        asyncio.run(measure(directory))
    except (BenchBroken, subprocess.SubprocessError) as error:
        print(f"benchmark broke: {error}; logs kept in {directory}", file=sys.stderr)
        return 1
    shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
