"""`quantum-apply-layer run`: wire settings, Redis, the exchange, metrics and systemd together."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from . import __version__, metrics
from .config import Credentials, Settings
from .exchange import Exchange, PositionModeRefused
from .exchange_limits import SharedLimiter
from .exits import EXIT_CONFIG, EXIT_EXCHANGE, EXIT_REDIS
from .monitor import Monitor, Notifier
from .permits import NotificationsOff
from .service import ApplyLayer
from .websocket_hosts import order_socket_url

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start until an operator changes something; `exit_code` is from --help."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# REDIS_URL's query arguments that set up TLS: the Sentinel clients are not built from the URL, so they
# are handed over (redis-py's from_url reads them itself for a single Redis).
TLS_QUERY_ARGUMENTS = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"})


def tls_options(redis_url: str) -> dict[str, Any]:
    """TLS for the Sentinels and the primary they name, as REDIS_URL asks for the primary:
    `rediss://...?ssl_ca_certs=/path` gives TLS verified with that CA; `redis://` gives plain TCP."""
    url = urlsplit(redis_url)
    if url.scheme != "rediss":
        return {}
    query = {name: value for name, value in parse_qsl(url.query) if name in TLS_QUERY_ARGUMENTS}
    return {"ssl": True, **query}


def pool_size(settings: Settings) -> int:
    """Connections the service may hold at once. A plan in flight keeps its claim's connection until its
    orders are out and may take one more meanwhile (a later step's claim, a lookup's limiter); the
    service's own work (the stream read, the permit watcher, the monitor) needs a few. redis-py refuses
    a connection beyond its pool's size (100 by default) instead of waiting for one."""
    return max(100, 2 * settings.max_in_flight + 16)


def connect_redis(settings: Settings) -> Redis:
    """The primary: from REDIS_URL, or, with REDIS_SENTINELS, whichever one the Sentinels name now
    (redis-py asks them again after a connection error, so a failover needs no restart). The Sentinels
    are asked with REDIS_URL's user and password too: a Sentinel that lets anyone in lets anyone fail
    the primary over. With `rediss://` every one of those connections is TLS."""
    if settings.redis_sentinels:
        url = urlsplit(settings.redis_url)
        tls = tls_options(settings.redis_url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels),
            sentinel_kwargs={
                "username": url.username,
                "password": url.password,
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
                **tls,
            },
        )
        return cast(
            Redis,
            sentinel.master_for(
                settings.redis_sentinel_service,
                redis_class=Redis,
                socket_connect_timeout=1.0,
                socket_timeout=5.0,
                health_check_interval=10,
                username=url.username,
                password=url.password,
                db=int(url.path.lstrip("/") or 0),
                client_name=f"apply-layer:{settings.consumer_name}",
                max_connections=pool_size(settings),
                **tls,
            ),
        )
    # Short timeouts: a Redis that does not answer must halt execution quickly, not hang it.
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        health_check_interval=10,
        client_name=f"apply-layer:{settings.consumer_name}",
        max_connections=pool_size(settings),
    )


def publish_build_info(settings: Settings) -> None:
    metrics.apply_build_info.labels(__version__, settings.mode).set(1)
    metrics.apply_testnet.set(1 if settings.testnet else 0)
    metrics.apply_redis_up.set(0)
    metrics.apply_exchange_up.set(0)


def start_metrics_server(settings: Settings) -> WSGIServer:
    """Plain HTTP, or with the TLS settings HTTPS that refuses any client without a certificate
    signed by the client CA (Prometheus's)."""
    tls = bool(settings.metrics_tls_cert)
    server, _thread = start_http_server(
        settings.metrics_port,
        settings.metrics_addr,
        registry=metrics.REGISTRY,
        certfile=settings.metrics_tls_cert or None,
        keyfile=settings.metrics_tls_key or None,
        client_cafile=settings.metrics_tls_client_ca or None,
        client_auth_required=tls,
    )
    return server


async def serve(settings: Settings, credentials: Credentials) -> None:
    publish_build_info(settings)
    try:
        start_metrics_server(settings)
    except OSError as error:
        raise StartupError(
            EXIT_CONFIG,
            f"APPLY_METRICS_ADDR={settings.metrics_addr} APPLY_METRICS_PORT={settings.metrics_port}: cannot "
            f"listen ({error.strerror or error}): free the port or choose another, and check "
            "APPLY_METRICS_TLS_* name this endpoint's certificate and key",
        ) from None
    redis = connect_redis(settings)
    exchange = Exchange(
        settings.exchange_url,
        credentials.api_key,
        credentials.api_secret,
        settings.exchange_timeout_s,
        limiter=SharedLimiter(redis),  # the account's limits, counted for every process sharing Redis
        recv_window_ms=settings.exchange_recv_window_ms,
        order_socket_url=order_socket_url(settings.exchange_url),  # closes by the websocket API
    )
    service = ApplyLayer(settings, redis, exchange)
    notify = Notifier()
    monitor = Monitor(redis, settings, service.mismatch, notify, service.autotrip())

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopper(service, notify))
    log.info("starting", extra={"version": __version__, **settings.describe()})
    monitor_task = asyncio.create_task(monitor.run(service.stopping), name="monitor")
    run_task = asyncio.create_task(service.run(), name="apply-layer")
    freeze_task = asyncio.create_task(freeze_heap_once_started(service), name="gc-freeze")
    # Ready once serving: with Redis down the service stays up, halted (fail closed) and alerting,
    # rather than being restarted in a loop by systemd.
    notify("READY=1")
    try:
        await run_task
    except NotificationsOff as error:
        raise StartupError(EXIT_REDIS, str(error)) from None
    except PositionModeRefused as refused:
        raise StartupError(EXIT_EXCHANGE, str(refused)) from None
    finally:
        freeze_task.cancel()  # a service that never started has nothing to freeze
        service.stop()
        await monitor_task
        await exchange.close()
        await redis.aclose()
        log.info("stopped")


async def freeze_heap_once_started(service: ApplyLayer) -> None:
    """Once the modules and the exchange's markets are loaded, move them out of the garbage collector's
    sight: a full collection would walk them all (some 60 ms on the bench machine) while a plan or the
    kill switch waits behind it. The start-up's garbage is collected first, so that what is frozen (never
    collected) is what lives as long as the process anyway."""
    await service.ready.wait()
    gc.collect()
    gc.freeze()
    log.info("loaded heap frozen: no collection walks it", extra={"frozen_objects": gc.get_freeze_count()})


def _stopper(service: ApplyLayer, notify: Notifier) -> Callable[[], None]:
    def stop() -> None:
        log.warning("stop asked: finishing plans in hand, claiming no more")
        notify("STOPPING=1")
        service.stop()

    return stop
