"""Redis behind Sentinel: the primary dies while plans flow; the service follows the failover without
a restart, stays fail closed while no primary is known, and neither doubles nor loses a plan."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from plans import add_plan, results
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis_server import RedisServer, SentinelServer, free_port
from service_process import ServiceProcess
from test_faults import SYMBOLS, load_plans, order_plan_ids

from quantum_apply_layer import keys
from quantum_apply_layer.config import Settings, load_settings
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.runtime import connect_redis


@dataclass
class SentinelRedis:
    primary: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": "redis://127.0.0.1:1/0",  # the Sentinels say where the primary is
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_SERVICE": "quantum",
        }

    def client(self) -> Redis:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", s.port) for s in self.sentinels], socket_timeout=0.5
        )
        master = sentinel.master_for("quantum", redis_class=Redis, decode_responses=True, socket_timeout=5)
        return cast(Redis, master)

    async def primary_port(self) -> int:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", s.port) for s in self.sentinels], socket_timeout=0.5
        )
        _host, port = await sentinel.discover_master("quantum")
        return int(port)


@pytest.fixture
async def sentinel_redis(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    # Two replicas: a claim must reach one before its order is sent, and one must remain after a
    # failover for execution to resume (with one, it stays halted until the old primary returns).
    dirs = [tmp_path / name for name in ("primary", "replica1", "replica2", "s1", "s2", "s3")]
    for directory in dirs:
        directory.mkdir()
    no_delay = ("--repl-diskless-sync-delay", "0")  # a full sync at once, not after 5 s
    primary = RedisServer(dirs[0], *no_delay)
    primary.start()
    replicas = [RedisServer(d, *no_delay, "--replicaof", "127.0.0.1", str(primary.port)) for d in dirs[1:3]]
    for replica in replicas:
        replica.start()
    sentinels = [SentinelServer(directory, primary.port, quorum=2) for directory in dirs[3:]]
    for sentinel in sentinels:
        sentinel.start()
    setup = SentinelRedis(primary, replicas, sentinels)
    for replica in replicas:
        on_replica = Redis.from_url(replica.url)
        for _ in range(400):  # bounded: 20 s for each replica to be in sync
            if (await on_replica.info("replication")).get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        await on_replica.aclose()
    yield setup
    for server in (*sentinels, *replicas, primary):
        server.kill()


async def wait_for_failover(setup: SentinelRedis, old_port: int) -> float:
    started = time.monotonic()
    for _ in range(600):  # bounded: 30 s
        try:
            if await setup.primary_port() != old_port:
                return time.monotonic() - started
        except RedisConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("no failover within 30 s")


async def wait_results(client: Redis, count: int, timeout_s: float) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await client.xlen(keys.RESULT_STREAM) >= count:
                return await results(client)
        except RedisConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} results after {timeout_s}s")


async def test_failover_while_plans_flow_neither_doubles_nor_loses(
    sentinel_redis: SentinelRedis, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    client = sentinel_redis.client()
    plan_ids = await load_plans(client, 400, "failover")
    assert await client.wait(2, 2000) == 2  # every plan is on the replica before the primary dies
    service = ServiceProcess(
        "", emulator.base_url, tmp_path / "service.log", APPLY_MAX_IN_FLIGHT="4", **sentinel_redis.env
    )
    service.start()
    try:
        await wait_results(client, 60, 30)
        old_port = sentinel_redis.primary.port
        sentinel_redis.primary.kill()
        killed_at = time.monotonic()
        gap = await wait_for_failover(sentinel_redis, old_port)
        client = sentinel_redis.client()
        found = await wait_results(client, 400, 60)
        resumed_after = time.monotonic() - killed_at
    finally:
        service.terminate()
    assert set(found) == set(plan_ids)  # none lost
    orders = order_plan_ids(emulator)
    assert max(orders.values()) == 1  # none doubled
    assert Counter(found[p]["status"] for p in plan_ids)["executed"] == len(orders)
    print(f"failover: no primary for {gap:.1f}s; all plans recorded {resumed_after:.1f}s after the kill")


async def test_a_set_switch_survives_the_failover(
    sentinel_redis: SentinelRedis, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_positions({"BTCUSDT": 1.0})
    client = sentinel_redis.client()
    await client.set(keys.GLOBAL_SWITCH, "true")
    assert await client.wait(2, 2000) == 2
    sentinel_redis.primary.kill()
    await wait_for_failover(sentinel_redis, sentinel_redis.primary.port)
    client = sentinel_redis.client()
    assert await client.get(keys.GLOBAL_SWITCH) == "true"
    service = ServiceProcess("", emulator.base_url, tmp_path / "service.log", **sentinel_redis.env)
    service.start()
    try:
        await add_plan(client, "after-failover")
        found = await wait_results(client, 1, 30)
    finally:
        service.terminate()
    assert found["after-failover"]["status"] == "halted"
    assert emulator.orders() == []


async def assert_only_the_first_gets_an_answer(accepted: Settings, refused: Settings) -> None:
    """Through the Sentinels to the primary: PONG with the first settings, a Redis error with the second."""
    assert await connect_redis(accepted).ping()
    with pytest.raises(RedisError):
        await connect_redis(refused).ping()


async def test_sentinels_that_require_a_login_are_asked_with_the_redis_user(tmp_path: Path) -> None:
    """Deployed Sentinels disable their default user; the service logs in with REDIS_URL's user."""
    login = ("user default off", "user apply_layer on >sentinel-test-password ~* &* +@all")
    primary = RedisServer(tmp_path, "--user", "default", "off", "--user", *login[1].split()[1:])
    primary.start()
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    sentinel = SentinelServer(
        sentinel_dir, primary.port, 1, *login,
        "sentinel auth-user quantum apply_layer", "sentinel auth-pass quantum sentinel-test-password",
    )  # fmt: skip
    sentinel.start()
    sentinels = f"127.0.0.1:{sentinel.port}"
    try:
        with_login = load_settings({
            "REDIS_URL": "redis://apply_layer:sentinel-test-password@127.0.0.1:1/0",
            "REDIS_SENTINELS": sentinels,
            "APPLY_REDIS_WAIT_REPLICAS": "0",
        })  # fmt: skip
        without_login = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinels})
        await assert_only_the_first_gets_an_answer(with_login, without_login)
    finally:
        sentinel.kill()
        primary.kill()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it signed, as the redis role makes them: (ca, cert, key)."""
    ca, ca_key, cert, key = (directory / name for name in ("ca.crt", "ca.key", "redis.crt", "redis.key"))
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is not installed"
    req = [openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run([*req, "-x509", "-keyout", ca_key, "-out", ca, "-subj", "/CN=test CA", "-days", "1"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*req, "-keyout", key, "-out", directory / "redis.csr", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run([openssl, "x509", "-req", "-in", directory / "redis.csr", "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", directory / "san.ext"],
                   check=True, capture_output=True)  # fmt: skip
    return ca, cert, key


async def test_sentinels_and_the_primary_are_reached_over_tls_when_redis_url_is_rediss(
    tmp_path: Path,
) -> None:
    """A fleet's Redis and Sentinels serve TLS: `rediss://...?ssl_ca_certs=` makes the service speak TLS
    to the Sentinels and to the primary they name; the same layout with `redis://` gets no answer."""
    ca, cert, key = make_tls_files(tmp_path)
    tls = {"tls-cert-file": cert, "tls-key-file": key, "tls-ca-cert-file": ca, "tls-auth-clients": "no",
           "tls-replication": "yes"}  # fmt: skip
    tls_port, sentinel_tls_port = free_port(), free_port()
    options = [arg for name, value in tls.items() for arg in (f"--{name}", str(value))]
    primary = RedisServer(tmp_path, "--tls-port", str(tls_port), *options)
    primary.start()
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    # The Sentinel watches the primary's TLS port, which answers nothing but TLS.
    sentinel = SentinelServer(
        sentinel_dir, tls_port, 1, f"tls-port {sentinel_tls_port}",
        *(f"{name} {value}" for name, value in tls.items()),
    )  # fmt: skip
    sentinel.start()
    sentinels = f"127.0.0.1:{sentinel_tls_port}"
    try:
        over_tls = load_settings({
            "REDIS_URL": f"rediss://127.0.0.1:1/0?ssl_ca_certs={ca}",
            "REDIS_SENTINELS": sentinels,
            "APPLY_REDIS_WAIT_REPLICAS": "0",
        })  # fmt: skip
        plain = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": sentinels})
        await assert_only_the_first_gets_an_answer(over_tls, plain)
    finally:
        sentinel.kill()
        primary.kill()


async def test_no_order_goes_out_while_no_replica_can_confirm_its_claim(
    sentinel_redis: SentinelRedis, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    """Replicas frozen after a warm-up: every claim's WAIT (on the claim's own connection) fails, so no
    order goes out until they answer; then each plan runs once and gets one result (a plan read as
    pending is handled only while it is still pending, not again after it was recorded)."""
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    client = sentinel_redis.client()
    service = ServiceProcess(
        "", emulator.base_url, tmp_path / "service.log", APPLY_MAX_IN_FLIGHT="16", **sentinel_redis.env
    )
    service.start()
    try:
        await load_plans(client, 100, "warm")
        await wait_results(client, 100, 30)
        orders_before = sum(order_plan_ids(emulator).values())
        frozen = [replica.process for replica in sentinel_redis.replicas if replica.process is not None]
        for process in frozen:
            process.send_signal(signal.SIGSTOP)
        try:
            await load_plans(client, 100, "frozen")
            await asyncio.sleep(3)  # every plan claimed and refused by WAIT several times over
            orders_while_frozen = sum(order_plan_ids(emulator).values()) - orders_before
        finally:
            for process in frozen:
                process.send_signal(signal.SIGCONT)
        found = await wait_results(client, 200, 60)
    finally:
        service.terminate()
    assert orders_while_frozen == 0
    assert max(order_plan_ids(emulator).values()) == 1
    assert Counter(result["status"] for result in found.values()) == Counter({"executed": 200})
    # One result each: a plan taken up again after its WAIT failed is not recorded a second time.
    assert await sentinel_redis.client().xlen(keys.RESULT_STREAM) == 200
