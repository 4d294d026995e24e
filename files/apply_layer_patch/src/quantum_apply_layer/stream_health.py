"""The user data stream's health, and the closes' door, as `quantum-apply-layer status` shows them, read
from the running service's own metrics endpoint: both live in the service's memory, and its metrics
already say all of it."""

from __future__ import annotations

import ssl
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .config import Settings

READ_TIMEOUT_S = 2.0
_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - where the service listens, not where we bind


def metrics_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.metrics_addr in _ANY_ADDRESS else settings.metrics_addr
    scheme = "https" if settings.metrics_tls_cert else "http"
    return f"{scheme}://{host}:{settings.metrics_port}/metrics"


def metrics_client_tls(settings: Settings) -> ssl.SSLContext | bool:
    """Over mutual TLS the CLI (root, beside the service) shows the endpoint its own certificate: one
    private CA signs both the servers' and the clients' certificates (README, "Metrics over mutual TLS")."""
    if not settings.metrics_tls_cert:
        return True
    context = ssl.create_default_context(cafile=settings.metrics_tls_client_ca)
    context.load_cert_chain(settings.metrics_tls_cert, settings.metrics_tls_key)
    return context


async def read_stream_health(settings: Settings) -> dict[str, object]:
    url = metrics_url(settings)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=READ_TIMEOUT_S)) as session,
            session.get(url, ssl=metrics_client_tls(settings)) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return {"reachable": False, "detail": f"the service's metrics at {url} did not answer: {error}"}
    return stream_health(text)


def stream_health(exposition: str) -> dict[str, object]:
    """From Prometheus's text format: connected or not, how old the last reconciliation is, and the
    lookups and mismatches counted since the service started."""
    up: bool | None = None
    order_socket: bool | None = None
    reconciled_at: float | None = None
    lookups: dict[str, int] = {}
    mismatches: dict[str, int] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "apply_user_stream_up":
                up = sample.value == 1
            elif sample.name == "apply_exchange_order_socket_up":
                order_socket = sample.value == 1
            elif sample.name == "apply_user_stream_last_reconcile_timestamp_seconds" and sample.value > 0:
                reconciled_at = sample.value
            elif sample.name == "apply_position_lookups_total":
                lookups[sample.labels["reason"]] = int(sample.value)
            elif sample.name == "apply_stream_position_mismatch_total":
                mismatches[sample.labels["symbol"]] = int(sample.value)
    return {
        "reachable": True,
        "connected": up,
        "last_reconcile_age_s": None if reconciled_at is None else round(time.time() - reconciled_at, 1),
        "position_lookups": lookups,
        "position_mismatches": mismatches,
        "order_socket": order_socket,
    }


def render_stream_health(health: dict[str, object]) -> str:
    if not health.get("reachable"):
        return f"user data stream: unknown ({health.get('detail')})"
    connected = health.get("connected")
    state = "connected" if connected is True else "DOWN" if connected is False else "not reported"
    age = health.get("last_reconcile_age_s")
    checked = "never" if age is None else f"{age}s ago"
    socket = health.get("order_socket")
    door = (
        "the websocket API (order.place)"
        if socket is True
        else "REST: the websocket API is not open"
        if socket is False
        else "not reported"
    )
    return (
        f"user data stream: {state}, positions last confirmed by positionRisk {checked}; "
        f"REST lookups before a claim {health.get('position_lookups') or {}}; "
        f"mismatches {health.get('position_mismatches') or {}}\n"
        f"closes go by: {door}"
    )
