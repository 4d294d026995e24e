"""Fixtures: a real redis-server and the exchange emulator (no fakes), and a running apply layer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis
from redis_server import RedisServer

from quantum_apply_layer.config import Settings, load_settings
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.exchange import Exchange
from quantum_apply_layer.exchange_limits import SharedLimiter
from quantum_apply_layer.service import ApplyLayer
from quantum_apply_layer.websocket_hosts import order_socket_url

pytest_plugins = ["emulator_fixture"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_server: RedisServer, emulator: ExchangeEmulator) -> SettingsFactory:
    def factory(**overrides: str) -> Settings:
        env = {
            "TESTNET": "false",
            "REDIS_URL": redis_server.url,
            "APPLY_EXCHANGE_URL": emulator.base_url,
            "APPLY_PERMIT_TIMEOUT_MS": "500",
            "APPLY_CONSUMER_NAME": "test-consumer",
            "APPLY_RECLAIM_IDLE_MS": "1000",
            **overrides,
        }
        return load_settings(env)

    return factory


ServiceFactory = Callable[..., contextlib.AbstractAsyncContextManager[ApplyLayer]]


@pytest.fixture
def running_service(make_settings: SettingsFactory, redis_server: RedisServer) -> ServiceFactory:
    """`async with running_service(**env) as service:` runs an apply layer until the block ends."""
    from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET

    @contextlib.asynccontextmanager
    async def run(**overrides: str) -> AsyncIterator[ApplyLayer]:
        settings = make_settings(**overrides)
        client = Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=2)
        # The account's limits shared in Redis, as runtime.py runs it.
        limiter = SharedLimiter(client)
        exchange = Exchange(
            settings.exchange_url,
            EMULATOR_API_KEY,
            EMULATOR_API_SECRET,
            2.0,
            limiter=limiter,
            order_socket_url=order_socket_url(settings.exchange_url),
        )
        service = ApplyLayer(settings, client, exchange)
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.ready.wait(), 10)
        try:
            yield service
        finally:
            service.stop()
            await asyncio.wait_for(task, 20)
            await exchange.close()
            await client.aclose()

    return run
