"""What the service reports while it runs: the switch as it reads it, stream lag, Redis health, and
the systemd watchdog, which is fed only while this loop (and so the event loop) is alive."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import sdnotify
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from . import __version__, keys, metrics
from .autotrip import AutoTrip
from .config import Settings
from .execution import MismatchClock
from .switch import SwitchState, read_global_switch, read_symbol_switches

log = logging.getLogger(__name__)
STATES = [*(state.value for state in SwitchState), "unknown"]
SLOW_EVERY = 5  # lag and per-symbol switches: every 5th tick is enough
HEARTBEAT_TTL_S = 10  # an instance not seen for this long is gone (dead, or cut off from Redis)


class Monitor:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        mismatch: MismatchClock,
        notify: Notifier,
        autotrip: AutoTrip,
    ) -> None:
        self._redis = redis
        self._autotrip = autotrip
        self._group = settings.consumer_group
        self._mismatch = mismatch
        self._notify = notify
        self._last_state: str | None = None
        self._instance_key = keys.instance(settings.consumer_name)
        # What `status` shows of this process: its own mode and endpoints, not the CLI's environment.
        self._instance: dict[FieldT, EncodableT] = {
            "consumer": settings.consumer_name,
            "group": settings.consumer_group,
            "mode": settings.mode,
            "version": __version__,
            "exchange_url": settings.exchange_url,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": f"{time.time():.3f}",
        }

    async def run(self, stopping: asyncio.Event, interval_s: float = 1.0) -> None:
        tick = 0
        while not stopping.is_set():
            self._notify("WATCHDOG=1")
            await self.sample(slow=tick % SLOW_EVERY == 0)
            self._mismatch.refresh()
            tick += 1
            try:
                await asyncio.wait_for(stopping.wait(), interval_s)
            except TimeoutError:
                continue

    async def sample(self, slow: bool) -> None:
        try:
            reading = await read_global_switch(self._redis)
            self._set_state(reading.state.value)
            metrics.apply_redis_up.set(1)
            if slow:
                await self._sample_streams()
                engaged = [
                    r for r in await read_symbol_switches(self._redis) if r.state is not SwitchState.RUNNING
                ]
                metrics.apply_symbol_switches_engaged.set(len(engaged))
            await self._autotrip.check()
            await self._heartbeat()
        except (RedisError, OSError) as error:
            metrics.apply_redis_up.set(0)
            metrics.apply_redis_errors_total.inc()
            log.warning("Redis unreadable: execution is halted until it answers (%s)", error)
            self._set_state("unknown")

    def _set_state(self, state: str) -> None:
        for name in STATES:
            metrics.apply_kill_switch_state.labels(name).set(1 if name == state else 0)
        if state != self._last_state:
            if self._last_state is not None:
                log.warning("kill switch state %s -> %s", self._last_state, state)
            metrics.apply_kill_switch_last_change_timestamp_seconds.set(time.time())
            self._last_state = state
            self._notify(f"STATUS=kill switch {state}")

    async def _heartbeat(self) -> None:
        """Refreshed every check; it expires when the process dies or cannot reach Redis."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._instance_key,
                mapping={
                    **self._instance,
                    "seen_at": f"{time.time():.3f}",
                    "exchange_up": str(int(metrics.REGISTRY.get_sample_value("apply_exchange_up") or 0)),
                },
            )
            pipe.expire(self._instance_key, HEARTBEAT_TTL_S)
            await pipe.execute()

    async def _sample_streams(self) -> None:
        if not await self._redis.exists(keys.PLAN_STREAM):
            return  # nothing was ever written: no group yet, nothing waiting
        for group in await self._redis.xinfo_groups(keys.PLAN_STREAM):
            name = group.get("name")
            if isinstance(name, bytes):
                name = name.decode()
            if name == self._group:
                metrics.apply_plan_stream_lag.set(float(group.get("lag") or 0))
                metrics.apply_plan_stream_pending.set(float(group.get("pending") or 0))


class Notifier:
    """sd_notify when systemd gave us a socket; nothing otherwise (tests, a shell)."""

    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None

    def __call__(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)
