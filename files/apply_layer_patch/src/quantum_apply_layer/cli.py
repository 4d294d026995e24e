"""The operator interface: `quantum-apply-layer run | check-config | status | kill | emergency-close`.

Every command reads the service's env file (/etc/quantum/apply-layer.env) when it is there, under the
process environment, so an operator's shell reaches the same Redis as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import math
import os
import socket
import sys
import textwrap
from pathlib import Path

from redis.exceptions import RedisError

from .config import (
    DEFAULT_ENV_FILE,
    ConfigError,
    Settings,
    check_listen_address,
    load_credentials,
    load_settings,
    process_env,
    setting_names,
)
from .exits import EXIT_CONFIG, EXIT_PENDING, EXIT_REDIS, EXIT_REFUSED, EXIT_UNCONFIRMED
from .logs import configure_logging
from .plan import SYMBOL_PATTERN
from .status import collect_status, render_status
from .switch import COMMAND_VALUES, parse_switch, set_switch

EPILOG = """exit codes:
  0  done
  2  configuration error: the message names the variable (or option) and what it accepts
  3  Redis cannot be used: down, login refused, or a setting missing (notify-keyspace-events)
  4  emergency-close refused by the service (the reason is printed)
  5  emergency-close: no result within --wait
  6  kill: set on the primary, but no replica confirmed it (run it again)
  7  run: the exchange account cannot be traded as set up (hedge mode: switch it to one-way)

environment (read once at start; the env file's lines under the process environment):
  {names}
  BINANCE_API_KEY, BINANCE_API_SECRET: from $CREDENTIALS_DIRECTORY (systemd LoadCredential=), else
  the environment; never from the env file.
"""

SWITCH_WAIT_MS = 2000
MAX_REASON_CHARS = 500
MAX_WAIT_S = 3600.0
log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    try:
        env = _environment(args)
        settings = load_settings(env)
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


def _environment(args: argparse.Namespace) -> dict[str, str]:
    if args.no_env_file:
        return process_env(None, required=False)
    if args.env_file is not None:
        return process_env(args.env_file, required=True)
    return process_env(DEFAULT_ENV_FILE, required=False)


def _parser() -> argparse.ArgumentParser:
    names = textwrap.fill(", ".join(sorted(setting_names())), width=96, subsequent_indent="  ")
    parser = argparse.ArgumentParser(
        prog="quantum-apply-layer",
        description=__doc__,
        epilog=EPILOG.format(names=names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    files = parser.add_mutually_exclusive_group()
    files.add_argument(
        "--env-file",
        type=Path,
        help=f"KEY=VALUE file read under the process environment; it must exist "
        f"(default: {DEFAULT_ENV_FILE}, read if present)",
    )
    files.add_argument("--no-env-file", action="store_true", help="read the process environment only")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume plans and execute them through every gate")
    commands.add_parser("check-config", help="print the parsed configuration (secrets masked)")
    status = commands.add_parser("status", help="mode, switches, stream lag, last execution")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--audit", type=int, default=5, help="how many audit entries to show")
    kill = commands.add_parser("kill", help="set the kill switch (global, or one symbol)")
    kill.add_argument("state", choices=sorted(COMMAND_VALUES), help="on halts, off resumes")
    kill.add_argument("--reason", required=True, type=_reason, help="who asks and why (kept in the audit)")
    kill.add_argument("--symbol", help="one symbol's switch, e.g. ETHUSDT; the stricter of the two wins")
    kill.add_argument(
        "--who", type=_reason, default=_default_who(), help="recorded in the audit (default: %(default)s)"
    )
    emergency = commands.add_parser(
        "emergency-close", help="close one open position while halted (reduce-only, audited, once)"
    )
    emergency.add_argument("symbol", help="e.g. BTCUSDT")
    emergency.add_argument(
        "--reason", required=True, type=_reason, help="who asks and why (kept in the audit)"
    )
    emergency.add_argument(
        "--side",
        type=str.upper,
        choices=["SELL", "BUY", "ANY"],
        default="ANY",
        help="the closing side you expect: SELL closes a long, BUY a short; refused if the exchange differs",
    )
    emergency.add_argument(
        "--who", type=_reason, default=_default_who(), help="recorded in the audit (default: %(default)s)"
    )
    emergency.add_argument(
        "--wait", type=_wait_seconds, default=15.0, help="seconds to wait for the result (up to 3600)"
    )
    return parser


def _reason(raw: str) -> str:
    """Free text that ends up in Redis, the audit and operators' terminals: short and printable."""
    reason = raw.strip()
    if not reason:
        raise argparse.ArgumentTypeError("empty: say who asks and why")
    if len(reason) > MAX_REASON_CHARS:
        raise argparse.ArgumentTypeError(f"{len(reason)} characters, at most {MAX_REASON_CHARS}")
    if not reason.isprintable():
        raise argparse.ArgumentTypeError("control characters (escape codes, new lines) are not accepted")
    return reason


def _wait_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: accepted: seconds, more than 0 and at most {MAX_WAIT_S:g}"
        )
    return value


def _run(args: argparse.Namespace) -> int:
    """The service. Every fatal start-up error is one log line (JSON unless APPLY_LOG_FORMAT=kv) naming
    the setting and the fix, and an exit code from --help; no traceback for what a user can cause."""
    from .runtime import StartupError, serve  # imports ccxt: only the command that trades pays for it

    requested = os.environ.get("APPLY_LOG_FORMAT", "json").strip().lower()
    configure_logging("kv" if requested == "kv" else "json")
    try:
        env = _environment(args)
        settings = load_settings(env)
        credentials = load_credentials(env)
        configure_logging(settings.log_format)
        asyncio.run(serve(settings, credentials))
    except ConfigError as error:
        log.error("configuration error: %s", error, extra={"exit_code": EXIT_CONFIG})
        return EXIT_CONFIG
    except StartupError as error:
        log.error("cannot start: %s", error, extra={"exit_code": error.exit_code})
        return error.exit_code
    return 0


def _check_config(settings: Settings, env: dict[str, str]) -> int:
    """Everything `run` would refuse, refused here too (the deploy validates the env file with it)."""
    for key, value in settings.describe().items():
        print(f"{key}={value}")
    busy = check_listen_address(settings.metrics_addr, settings.metrics_port)
    if busy:
        print(f"warning: {busy}", file=sys.stderr)
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
