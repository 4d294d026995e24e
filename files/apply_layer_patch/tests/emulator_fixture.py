"""Fixtures for the exchange emulator, shared by every test that needs an exchange.

conftest.py registers them with `pytest_plugins = ["emulator_fixture"]`. One emulator serves the whole
session on a free loopback port (its own thread and event loop); each test gets it reset.
"""

from collections.abc import AsyncIterator, Iterator

import pytest

from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.exchange import Exchange
from quantum_apply_layer.websocket_hosts import order_socket_url

EMULATOR_API_KEY = "emulator-test-key"
EMULATOR_API_SECRET = "emulator-test-secret"


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[ExchangeEmulator]:
    with ExchangeEmulator(EMULATOR_API_KEY, EMULATOR_API_SECRET) as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_session: ExchangeEmulator) -> ExchangeEmulator:
    """The session's emulator, flat, with default mark prices, no orders and no faults."""
    emulator_session.reset()
    return emulator_session


def emulator_exchange(emulator: ExchangeEmulator, timeout_s: float = 2.0) -> Exchange:
    """The adapter against the emulator as the service makes it: closes by the websocket API."""
    return Exchange(
        emulator.base_url,
        EMULATOR_API_KEY,
        EMULATOR_API_SECRET,
        timeout_s,
        order_socket_url=order_socket_url(emulator.base_url),
    )


@pytest.fixture
async def exchange(emulator: ExchangeEmulator) -> AsyncIterator[Exchange]:
    """The adapter, opened (markets loaded, clock measured) against the session's emulator."""
    adapter = emulator_exchange(emulator)
    await adapter.open()
    yield adapter
    await adapter.close()
