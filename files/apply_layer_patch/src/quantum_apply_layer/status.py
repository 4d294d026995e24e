"""What `quantum-apply-layer status` shows: mode, switches with reasons, stream lag, last execution,
the user data stream's health (from the running service), and the latest switch changes."""

from __future__ import annotations

from redis.asyncio import Redis

from . import keys
from .config import Settings
from .stream_health import read_stream_health, render_stream_health
from .switch import audit_time, read_audit, read_global_switch, read_symbol_switches

RECENT_RESULTS = 200


async def collect_status(redis: Redis, settings: Settings, audit_count: int) -> dict[str, object]:
    global_switch = await read_global_switch(redis)
    symbols = await read_symbol_switches(redis)
    groups = await redis.xinfo_groups(keys.PLAN_STREAM) if await redis.exists(keys.PLAN_STREAM) else []
    group = next((g for g in groups if _text(g.get("name")) == settings.consumer_group), None)
    recent = await redis.xrevrange(keys.RESULT_STREAM, count=RECENT_RESULTS) or []
    results = [{_text(k): _text(v) for k, v in (fields or {}).items()} for _id, fields in recent]
    executed = next((r for r in results if r.get("status") in {"executed", "partial"}), None)
    return {
        "mode": settings.mode,
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
            "lag": _int(group.get("lag")) if group else None,
            "pending": _int(group.get("pending")) if group else None,
            "consumers": _int(group.get("consumers")) if group else None,
        },
        "dead_letters": await redis.xlen(keys.DLQ_STREAM),
        "user_data_stream": await read_stream_health(settings),
        "last_result": results[0] if results else None,
        "last_execution": executed,
        "audit": [{**entry, "time": audit_time(entry)} for entry in await read_audit(redis, audit_count)],
    }


def render_status(status: dict[str, object]) -> str:
    switch = status["switch"]
    assert isinstance(switch, dict)
    lines = [f"mode: {status['mode']} (exchange {status['exchange_url']})"]
    g = switch["global"]
    lines.append(f"kill switch (global): {g['state']}  value={g['value']!r}  reason={g['reason']!r}")
    for symbol, reading in switch["symbols"].items():
        lines.append(
            f"kill switch ({symbol}): {reading['state']}  value={reading['value']!r}  "
            f"reason={reading['reason']!r}"
        )
    stream = status["plan_stream"]
    assert isinstance(stream, dict)
    lines.append(
        f"plan stream: length={stream['length']} group={stream['group']} lag={stream['lag']} "
        f"pending={stream['pending']} consumers={stream['consumers']}"
    )
    lines.append(f"dead letters: {status['dead_letters']}")
    health = status["user_data_stream"]
    assert isinstance(health, dict)
    lines.append(render_stream_health(health))
    lines.append(f"last result: {_brief(status['last_result'])}")
    lines.append(f"last execution: {_brief(status['last_execution'])}")
    audit = status["audit"]
    assert isinstance(audit, list)
    lines.append("recent switch changes:" if audit else "recent switch changes: none")
    for entry in audit:
        change = entry.get("action") or f"{entry.get('old_state')} -> {entry.get('new_state')}"
        lines.append(
            f"  {entry['time']} {entry.get('scope')}: {change} by {entry.get('who')}: {entry.get('reason')}"
        )
    return "\n".join(lines)


def _brief(result: object) -> str:
    if not isinstance(result, dict):
        return "none"
    return (
        f"plan {result.get('plan_id')} {result.get('symbol')} {result.get('status')} "
        f"{result.get('reason') or ''} orders={result.get('order_ids') or '-'} at ts={result.get('ts')}"
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: object) -> int | None:
    return None if value is None else int(str(_text(value)))
