"""What `quantum-apply-layer status` shows: the running services as they report themselves (mode,
version, health), switches with reasons, stream lag, the user data stream's health, last execution, and
the latest switch changes.

The mode and health come from the services themselves (their heartbeats in Redis, their metrics), not
from the environment of the shell that runs `status`: an operator must see what trades, not what the CLI
would do.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from . import keys
from .config import Settings
from .decoding import text, text_fields
from .stream_health import read_stream_health, render_stream_health
from .switch import audit_time, read_audit, read_global_switch, read_symbol_switches

RECENT_RESULTS = 200


async def collect_status(redis: Redis, settings: Settings, audit_count: int) -> dict[str, object]:
    global_switch = await read_global_switch(redis)
    symbols = await read_symbol_switches(redis)
    groups = await redis.xinfo_groups(keys.PLAN_STREAM) if await redis.exists(keys.PLAN_STREAM) else []
    group = next((g for g in groups if text(g.get("name")) == settings.consumer_group), None)
    recent = await redis.xrevrange(keys.RESULT_STREAM, count=RECENT_RESULTS) or []
    results = [text_fields(fields or {}) for _id, fields in recent]
    executed = next((r for r in results if r.get("status") in {"executed", "partial"}), None)
    instances = await _instances(redis, settings.consumer_group)
    return {
        "instances": instances,
        "mode": _service_mode(instances, settings.mode),
        "cli_mode": settings.mode,
        "exchange_url": settings.exchange_url,
        "switch": {
            "global": {
                "state": global_switch.state.value,
                "value": global_switch.raw,
                "reason": global_switch.reason,
            },
            "symbols": {
                reading.scope.removeprefix("symbol:"): {
                    "state": reading.state.value,
                    "value": reading.raw,
                    "reason": reading.reason,
                }
                for reading in symbols
            },
        },
        "plan_stream": {
            "length": await redis.xlen(keys.PLAN_STREAM),
            "group": settings.consumer_group,
            "group_exists": group is not None,
            "lag": _int(group.get("lag")) if group else None,
            "pending": _int(group.get("pending")) if group else None,
            "consumers": _int(group.get("consumers")) if group else None,
            "live_consumers": len(instances),
        },
        "dead_letters": await redis.xlen(keys.DLQ_STREAM),
        "user_data_stream": await read_stream_health(settings),
        "last_result": results[0] if results else None,
        "last_execution": executed,
        "audit": [{**entry, "time": audit_time(entry)} for entry in await read_audit(redis, audit_count)],
    }


async def _instances(redis: Redis, group: str) -> list[dict[str, str]]:
    """The services whose heartbeat has not expired, i.e. alive and reaching Redis, for this group."""
    found = []
    async for key in redis.scan_iter(match=f"{keys.INSTANCE_PREFIX}*", count=100):
        fields = text_fields(await redis.hgetall(key))
        if fields and fields.get("group") == group:
            found.append(fields)
    return sorted(found, key=lambda fields: fields.get("consumer", ""))


def _service_mode(instances: list[dict[str, str]], cli_mode: str) -> str:
    """The mode the services report; `mixed` when they disagree; the CLI's only when none runs."""
    modes = {instance.get("mode", "") for instance in instances}
    if not modes:
        return f"{cli_mode} (no service running; this is the CLI's own setting)"
    return modes.pop() if len(modes) == 1 else "mixed: " + ", ".join(sorted(modes))


def render_status(status: dict[str, object], now: float | None = None) -> str:
    now = time.time() if now is None else now
    switch = status["switch"]
    instances = status["instances"]
    stream = status["plan_stream"]
    assert isinstance(switch, dict)
    assert isinstance(instances, list)
    assert isinstance(stream, dict)
    lines = [f"mode: {status['mode']} (exchange {_safe(status['exchange_url'])})"]
    if not instances:
        lines.append("services: NONE LIVE: no apply layer is reading the plan stream (no heartbeat in 10 s)")
    for instance in instances:
        lines.append(
            f"service {_safe(instance.get('consumer'))} on {_safe(instance.get('host'))}: "
            f"{instance.get('mode')}, version {_safe(instance.get('version'))}, "
            f"exchange {'up' if instance.get('exchange_up') == '1' else 'DOWN'}, "
            f"seen {_ago(instance.get('seen_at'), now)}, started {_when(instance.get('started_at'), now)}"
        )
    g = switch["global"]
    lines.append(
        f"kill switch (global): {g['state']}  value={_safe(g['value'])!r}  reason={_safe(g['reason'])!r}"
    )
    for symbol, reading in switch["symbols"].items():
        lines.append(
            f"kill switch ({symbol}): {reading['state']}  value={_safe(reading['value'])!r}  "
            f"reason={_safe(reading['reason'])!r}"
        )
    if not stream["group_exists"]:
        lines.append(
            f"plan stream: length={stream['length']}; consumer group {stream['group']} does NOT exist "
            "(a running service makes it again at once)"
        )
    else:
        lines.append(
            f"plan stream: length={stream['length']} group={stream['group']} lag={stream['lag']} "
            f"pending={stream['pending']} consumers={stream['consumers']} (live: {stream['live_consumers']})"
        )
    lines.append(f"dead letters: {status['dead_letters']}")
    health = status["user_data_stream"]
    assert isinstance(health, dict)
    lines.append(render_stream_health(health))
    lines.append(f"last result: {_brief(status['last_result'], now)}")
    lines.append(f"last execution: {_brief(status['last_execution'], now)}")
    audit = status["audit"]
    assert isinstance(audit, list)
    lines.append("recent switch changes:" if audit else "recent switch changes: none")
    for entry in audit:
        change = entry.get("action") or f"{entry.get('old_state')} -> {entry.get('new_state')}"
        lines.append(
            f"  {entry['time']} {_safe(entry.get('scope'))}: {_safe(change)} by {_safe(entry.get('who'))}: "
            f"{_safe(entry.get('reason'))}"
        )
    return "\n".join(lines)


def _brief(result: object, now: float) -> str:
    if not isinstance(result, dict):
        return "none"
    return (
        f"plan {_safe(result.get('plan_id'))} {_safe(result.get('symbol'))} {result.get('status')} "
        f"{_safe(result.get('reason') or '')} orders={_safe(result.get('order_ids') or '-')} "
        f"at {_when(result.get('ts'), now)}"
    )


def _when(epoch: object, now: float) -> str:
    """`2026-11-27T12:00:00Z (3m ago)`: a time an operator reads without converting it."""
    try:
        at = float(str(epoch))
    except ValueError:
        return "unknown"
    return f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))} ({_ago(at, now)})"


def _ago(epoch: object, now: float) -> str:
    try:
        seconds = now - float(str(epoch))
    except ValueError:
        return "unknown"
    if seconds < 120:
        return f"{max(seconds, 0):.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _safe(value: object, limit: int = 200) -> str:
    """Text written by others (reasons, ids) shown without its control characters, and cut short."""
    shown = "" if value is None else str(value)
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in shown)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown)} chars)"


def _int(value: object) -> int | None:
    return None if value is None else int(str(text(value)))
