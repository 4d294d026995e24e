"""The operator interface: `quantum-apply-layer run | check-config | status | kill | emergency-close`.

Every command reads the service's env file (/etc/quantum/apply-layer.env) when it is there, under the
process environment, so an operator's shell reaches the same Redis as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from pathlib import Path

from redis.exceptions import RedisError

from .config import DEFAULT_ENV_FILE, ConfigError, Settings, load_credentials, load_settings, process_env
from .logs import configure_logging
from .plan import SYMBOL_PATTERN
from .status import collect_status, render_status
from .switch import COMMAND_VALUES, parse_switch, set_switch

EXIT_CONFIG = 2
EXIT_REDIS = 3
EXIT_REFUSED = 4  # an emergency close the service refused (no position, wrong side, ...)
EXIT_PENDING = 5  # an emergency close with no result within --wait
EXIT_UNCONFIRMED = 6  # a switch set on the primary that no replica confirmed: a failover could lose it
SWITCH_WAIT_MS = 2000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        env = process_env(args.env_file)
        settings = load_settings(env)
        if args.command == "run":
            return _run(settings, env)
        if args.command == "check-config":
            return _check_config(settings, env)
        if args.command == "status":
            return asyncio.run(_status(settings, args.json, args.audit))
        if args.command == "emergency-close":
            return asyncio.run(
                _emergency_close(settings, args.symbol, args.side, args.reason, args.who, args.wait)
            )
        return asyncio.run(_kill(settings, args.state, args.reason, args.symbol, args.who))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except RedisError as error:
        print(f"Redis error: {error} (is REDIS_URL right, and Redis up?)", file=sys.stderr)
        return EXIT_REDIS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantum-apply-layer", description=__doc__)
    parser.add_argument(
        "--env-file",
        type=Path,
        default=DEFAULT_ENV_FILE,
        help="KEY=VALUE file read under the process environment (default: %(default)s, if present)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume plans and execute them through every gate")
    commands.add_parser("check-config", help="print the parsed configuration (secrets masked)")
    status = commands.add_parser("status", help="mode, switches, stream lag, last execution")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--audit", type=int, default=5, help="how many audit entries to show")
    kill = commands.add_parser("kill", help="set the kill switch (global, or one symbol)")
    kill.add_argument("state", choices=sorted(COMMAND_VALUES), help="on halts, off resumes")
    kill.add_argument("--reason", required=True, help="who asks and why (kept with the audit entry)")
    kill.add_argument("--symbol", help="one symbol's switch, e.g. ETHUSDT; the stricter of the two wins")
    kill.add_argument("--who", default=_default_who(), help="recorded in the audit (default: %(default)s)")
    emergency = commands.add_parser(
        "emergency-close", help="close one open position while halted (reduce-only, audited, once)"
    )
    emergency.add_argument("symbol", help="e.g. BTCUSDT")
    emergency.add_argument("--reason", required=True, help="who asks and why (kept with the audit entry)")
    emergency.add_argument(
        "--side",
        type=str.upper,
        choices=["SELL", "BUY", "ANY"],
        default="ANY",
        help="the closing side you expect: SELL closes a long, BUY a short; refused if the exchange differs",
    )
    emergency.add_argument(
        "--who", default=_default_who(), help="recorded in the audit (default: %(default)s)"
    )
    emergency.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the result")
    return parser


def _run(settings: Settings, env: dict[str, str]) -> int:
    from .runtime import serve  # imports ccxt: only the command that trades pays for it

    credentials = load_credentials(env)
    configure_logging(settings.log_format)
    asyncio.run(serve(settings, credentials))
    return 0


def _check_config(settings: Settings, env: dict[str, str]) -> int:
    for key, value in settings.describe().items():
        print(f"{key}={value}")
    try:
        credentials = load_credentials(env)
    except ConfigError as error:
        print(f"credentials: MISSING: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"credentials=present (from {credentials.source}; key ends ...{credentials.api_key[-4:]})")
    return 0


async def _status(settings: Settings, as_json: bool, audit: int) -> int:
    from .runtime import connect_redis

    redis = connect_redis(settings)
    try:
        status = await collect_status(redis, settings, audit)
    finally:
        await redis.aclose()
    print(json.dumps(status, indent=2) if as_json else render_status(status))
    return 0


async def _kill(settings: Settings, state: str, reason: str, symbol: str | None, who: str) -> int:
    from .runtime import connect_redis
    from .scripts import register_scripts

    if symbol is not None and not SYMBOL_PATTERN.match(symbol):
        raise ConfigError(f"--symbol {symbol!r}: accepted: an exchange symbol such as ETHUSDT")
    if not reason.strip():
        raise ConfigError("--reason is empty: say who asks and why")
    redis = connect_redis(settings)
    try:
        change = await set_switch(redis, register_scripts(redis), state, reason, who, symbol)
        wanted = settings.redis_wait_replicas
        confirmed = await redis.wait(wanted, SWITCH_WAIT_MS) if wanted else 0
    finally:
        await redis.aclose()
    old_state = parse_switch(change.old or None)
    print(
        f"{change.scope}: {old_state} ({change.old or 'absent'}) -> "
        f"{parse_switch(change.new)} ({change.new}); "
        f"reason: {reason.strip()}; audit {change.audit_id}"
    )
    if confirmed < wanted:
        print(
            f"the switch is set on the primary but only {confirmed} of {wanted} replicas confirmed it within "
            f"{SWITCH_WAIT_MS} ms: a failover now could lose it. Run the command again; check `status`.",
            file=sys.stderr,
        )
        return EXIT_UNCONFIRMED
    return 0


async def _emergency_close(
    settings: Settings, symbol: str, side: str, reason: str, who: str, wait_s: float
) -> int:
    from .emergency import request_emergency_close, wait_for_result
    from .runtime import connect_redis

    if not SYMBOL_PATTERN.match(symbol):
        raise ConfigError(f"symbol {symbol!r}: accepted: an exchange symbol such as BTCUSDT")
    if not reason.strip():
        raise ConfigError("--reason is empty: say who asks and why")
    redis = connect_redis(settings)
    try:
        plan_id, after = await request_emergency_close(redis, symbol, side, reason.strip(), who)
        print(f"emergency close {plan_id} queued for {symbol} (side {side}); waiting up to {wait_s:g}s")
        result = await wait_for_result(redis, plan_id, after, wait_s)
    finally:
        await redis.aclose()
    if result is None:
        print("no result yet: is the service running? check `quantum-apply-layer status`", file=sys.stderr)
        return EXIT_PENDING
    print(f"{result['status']}: {result.get('reason') or 'closed'}; orders={result.get('order_ids') or '-'}")
    return 0 if result["status"] == "executed" else EXIT_REFUSED


def _default_who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


if __name__ == "__main__":
    sys.exit(main())
