"""Settings, parsed once and strictly from the environment into a frozen object.

A bad value stops the process with a message that names the variable and the values it accepts:
a trading gate that guesses what an operator meant is a trading gate nobody can trust.
"""

from __future__ import annotations

import difflib
import errno
import functools
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PRODUCTION_EXCHANGE_URL = "https://fapi.binance.com"
TESTNET_EXCHANGE_URL = "https://testnet.binancefuture.com"
SANDBOX_HOSTS = frozenset({"testnet.binancefuture.com"})
DEFAULT_ENV_FILE = Path("/etc/quantum/apply-layer.env")
CREDENTIAL_NAMES = ("BINANCE_API_KEY", "BINANCE_API_SECRET")
MAX_REDIS_DB = 15  # Redis serves databases 0 to 15 unless `databases` says otherwise
# Variables with these prefixes are this service's: an unknown one is a typo, never ignored.
OWN_PREFIXES = ("APPLY_", "REDIS_", "TESTNET")


class ConfigError(Exception):
    """A setting is missing or out of range; the message says which and what is accepted."""


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    source: str


@dataclass(frozen=True)
class Settings:
    testnet: bool
    redis_url: str = field(repr=False)
    exchange_url: str
    metrics_addr: str
    metrics_port: int
    permit_timeout_s: float
    exchange_timeout_s: float
    consumer_group: str
    consumer_name: str
    reclaim_idle_ms: int
    dedupe_ttl_s: int
    max_plan_age_s: float
    max_in_flight: int
    result_maxlen: int
    log_format: str
    # Risk gates of the apply layer itself (0 or empty: off).
    max_orders_per_s: int = 0
    max_orders_per_s_per_symbol: int = 0
    max_notional_usdt: tuple[tuple[str, float], ...] = ()
    # Auto-trip: a condition must hold for auto_trip_checks checks in a row (one check a second).
    auto_trip_checks: int = 3
    auto_trip_exchange_errors: int = 5
    auto_trip_mismatch_s: int = 0
    auto_trip_dead_letters_per_min: int = 0
    # Redis behind Sentinel: REDIS_URL then gives only the user, password and db.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_service: str = "quantum"
    # A claim must reach this many replicas (WAIT) before its order is sent, so a failover never
    # forgets a claim whose order went out. 1 with Sentinel, 0 (no wait) otherwise.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 200
    # How far behind the exchange's clock a signed request may arrive (Binance's recvWindow, max 60 s).
    exchange_recv_window_ms: int = 5000
    # How old the last positionRisk check of the pushed positions may be before a plan reads its
    # position by REST before the claim (the check runs every half of it, weight 5 each time).
    position_max_age_s: float = 10.0

    def notional_limit(self, symbol: str) -> float | None:
        """The symbol's own limit, else the `*` limit, else none."""
        limits = dict(self.max_notional_usdt)
        return limits.get(symbol, limits.get("*"))

    @property
    def mode(self) -> str:
        return "testnet" if self.testnet else "production"

    def describe(self) -> dict[str, str]:
        """Every setting as an operator reads it, with the Redis password masked."""
        return {
            "TESTNET": str(self.testnet).lower(),
            "mode": self.mode,
            "REDIS_URL": mask_url_password(self.redis_url),
            "APPLY_EXCHANGE_URL": self.exchange_url,
            "APPLY_METRICS_ADDR": self.metrics_addr,
            "APPLY_METRICS_PORT": str(self.metrics_port),
            "APPLY_PERMIT_TIMEOUT_MS": str(round(self.permit_timeout_s * 1000)),
            "APPLY_EXCHANGE_TIMEOUT_MS": str(round(self.exchange_timeout_s * 1000)),
            "APPLY_CONSUMER_GROUP": self.consumer_group,
            "APPLY_CONSUMER_NAME": self.consumer_name,
            "APPLY_RECLAIM_IDLE_MS": str(self.reclaim_idle_ms),
            "APPLY_DEDUPE_TTL_S": str(self.dedupe_ttl_s),
            "APPLY_MAX_PLAN_AGE_S": str(self.max_plan_age_s),
            "APPLY_MAX_IN_FLIGHT": str(self.max_in_flight),
            "APPLY_RESULT_MAXLEN": str(self.result_maxlen),
            "APPLY_LOG_FORMAT": self.log_format,
            "APPLY_MAX_ORDERS_PER_SECOND": str(self.max_orders_per_s),
            "APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL": str(self.max_orders_per_s_per_symbol),
            "APPLY_MAX_NOTIONAL_USDT": ",".join(
                f"{symbol}={limit:g}" for symbol, limit in self.max_notional_usdt
            ),
            "APPLY_AUTO_TRIP_CHECKS": str(self.auto_trip_checks),
            "APPLY_AUTO_TRIP_EXCHANGE_ERRORS": str(self.auto_trip_exchange_errors),
            "APPLY_AUTO_TRIP_MISMATCH_S": str(self.auto_trip_mismatch_s),
            "APPLY_AUTO_TRIP_DEAD_LETTERS_PER_MIN": str(self.auto_trip_dead_letters_per_min),
            "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in self.redis_sentinels),
            "REDIS_SENTINEL_SERVICE": self.redis_sentinel_service,
            "APPLY_REDIS_WAIT_REPLICAS": str(self.redis_wait_replicas),
            "APPLY_REDIS_WAIT_TIMEOUT_MS": str(self.redis_wait_timeout_ms),
            "APPLY_EXCHANGE_RECV_WINDOW_MS": str(self.exchange_recv_window_ms),
            "APPLY_POSITION_MAX_AGE_S": f"{self.position_max_age_s:g}",
        }


def load_settings(env: Mapping[str, str]) -> Settings:
    testnet = _parse_testnet(env.get("TESTNET", "false"))
    exchange_url = env.get("APPLY_EXCHANGE_URL", "").strip() or (
        TESTNET_EXCHANGE_URL if testnet else PRODUCTION_EXCHANGE_URL
    )
    _check_exchange_url(exchange_url, testnet)
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0").strip()
    _check_redis_url(redis_url)
    sentinels = _sentinels(env.get("REDIS_SENTINELS", ""))
    log_format = env.get("APPLY_LOG_FORMAT", "json").strip().lower()
    if log_format not in {"json", "kv"}:
        raise ConfigError(f"APPLY_LOG_FORMAT={log_format!r}: accepted values: json, kv")
    return Settings(
        testnet=testnet,
        redis_url=redis_url,
        exchange_url=exchange_url.rstrip("/"),
        metrics_addr=_address(env, "APPLY_METRICS_ADDR", "0.0.0.0"),  # noqa: S104 - Prometheus scrapes it
        metrics_port=_int(env, "APPLY_METRICS_PORT", 8000, 0, 65535),
        permit_timeout_s=_int(env, "APPLY_PERMIT_TIMEOUT_MS", 2000, 1, 600_000) / 1000,
        exchange_timeout_s=_int(env, "APPLY_EXCHANGE_TIMEOUT_MS", 5000, 100, 60_000) / 1000,
        consumer_group=_name(env, "APPLY_CONSUMER_GROUP", "apply-layer"),
        consumer_name=_name(env, "APPLY_CONSUMER_NAME", socket.gethostname()),
        reclaim_idle_ms=_int(env, "APPLY_RECLAIM_IDLE_MS", 30_000, 1_000, 3_600_000),
        dedupe_ttl_s=_int(env, "APPLY_DEDUPE_TTL_S", 7 * 86_400, 60, 90 * 86_400),
        max_plan_age_s=float(_int(env, "APPLY_MAX_PLAN_AGE_S", 300, 1, 86_400)),
        max_in_flight=_int(env, "APPLY_MAX_IN_FLIGHT", 32, 1, 1024),
        result_maxlen=_int(env, "APPLY_RESULT_MAXLEN", 1_000_000, 1_000, 100_000_000),
        log_format=log_format,
        max_orders_per_s=_int(env, "APPLY_MAX_ORDERS_PER_SECOND", 0, 0, 100_000),
        max_orders_per_s_per_symbol=_int(env, "APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL", 0, 0, 100_000),
        max_notional_usdt=_notional_limits(env.get("APPLY_MAX_NOTIONAL_USDT", "")),
        auto_trip_checks=_int(env, "APPLY_AUTO_TRIP_CHECKS", 3, 1, 600),
        auto_trip_exchange_errors=_int(env, "APPLY_AUTO_TRIP_EXCHANGE_ERRORS", 5, 0, 10_000),
        auto_trip_mismatch_s=_int(env, "APPLY_AUTO_TRIP_MISMATCH_S", 0, 0, 86_400),
        auto_trip_dead_letters_per_min=_int(env, "APPLY_AUTO_TRIP_DEAD_LETTERS_PER_MIN", 0, 0, 1_000_000),
        redis_sentinels=sentinels,
        redis_sentinel_service=_name(env, "REDIS_SENTINEL_SERVICE", "quantum"),
        redis_wait_replicas=_int(env, "APPLY_REDIS_WAIT_REPLICAS", 1 if sentinels else 0, 0, 10),
        redis_wait_timeout_ms=_int(env, "APPLY_REDIS_WAIT_TIMEOUT_MS", 200, 1, 10_000),
        exchange_recv_window_ms=_int(env, "APPLY_EXCHANGE_RECV_WINDOW_MS", 5000, 1, 60_000),
        position_max_age_s=float(_int(env, "APPLY_POSITION_MAX_AGE_S", 10, 2, 300)),
    )


def load_credentials(env: Mapping[str, str]) -> Credentials:
    """Exchange keys: systemd's LoadCredential= directory first, the environment outside systemd."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory:
        values = {}
        for name in CREDENTIAL_NAMES:
            path = Path(directory) / name
            try:
                values[name] = path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ConfigError(f"{name}: cannot read credential {path}: {error.strerror}") from error
        source = f"credentials directory {directory}"
    else:
        values = {name: env.get(name, "").strip() for name in CREDENTIAL_NAMES}
        source = "environment"
    for name, value in values.items():
        if not value:
            raise ConfigError(
                f"{name} is empty: under systemd pass it with LoadCredential={name}:<root-only file>; "
                f"outside systemd set the environment variable {name}"
            )
    return Credentials(values["BINANCE_API_KEY"], values["BINANCE_API_SECRET"], source)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments and blanks skipped), refusing
    what systemd and this parser could read differently, and every key this service does not know."""
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the env file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        bad_line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{bad_line}: not UTF-8 text (byte {error.object[error.start]:#04x})"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(content.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        where = f"{path}:{number}"
        if line.startswith("export "):
            raise ConfigError(
                f"{where}: write KEY=VALUE without `export` (systemd's EnvironmentFile= format)"
            )
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where}: expected KEY=VALUE, got {line[:80]!r}")
        if key in values:
            raise ConfigError(f"{where}: {key} is set twice; keep one line")
        _check_known_key(key, where)
        values[key] = value.strip().strip('"').strip("'")
    return values


@functools.cache
def setting_names() -> frozenset[str]:
    """Every variable the service reads, from the one place that reads them (Settings.describe)."""
    return frozenset(load_settings({}).describe()) - {"mode"}


def _check_known_key(key: str, where: str) -> None:
    if key in CREDENTIAL_NAMES:
        raise ConfigError(
            f"{where}: {key} does not belong in the env file: pass exchange credentials with systemd's "
            f"LoadCredential={key}:<root-only file>"
        )
    if key.startswith(OWN_PREFIXES) and key not in setting_names():
        close = difflib.get_close_matches(key, sorted(setting_names()), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown setting {key}{hint}")


def check_environment(env: Mapping[str, str]) -> None:
    """The process environment's own variables (APPLY_*, TESTNET*) must be known ones too: a misspelt
    APPLY_MAX_NOTIONAL_USD would otherwise leave trading without its cap, silently."""
    for key in env:
        if key.startswith(("APPLY_", "TESTNET")):
            _check_known_key(key, "environment")


def check_listen_address(addr: str, port: int) -> str | None:
    """Bind the metrics address as `run` will: an error for an address this host does not have, a
    warning (returned) for a port already in use, which is normal while the service itself runs."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((addr, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"APPLY_METRICS_PORT={port}: in use on {addr} (by the running service?)"
            raise ConfigError(
                f"APPLY_METRICS_ADDR={addr} APPLY_METRICS_PORT={port}: cannot listen: {error.strerror}"
            ) from None
    return None


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_testnet(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"true", "false"}:
        raise ConfigError(
            f"TESTNET={raw!r} is not accepted: accepted values are 'false' (production, the default) "
            "and 'true' (testnet: permits skipped, sandbox exchange only)"
        )
    return value == "true"


def _check_exchange_url(url: str, testnet: bool) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in {"http", "https"} or not host:
        raise ConfigError(
            f"APPLY_EXCHANGE_URL={url!r}: accepted: an http(s) base URL such as {TESTNET_EXCHANGE_URL}"
        )
    loopback = is_loopback_host(host)
    if parts.scheme == "http" and not loopback:
        raise ConfigError(f"APPLY_EXCHANGE_URL={url!r}: plain http is accepted only for a loopback emulator")
    if testnet and not (host in SANDBOX_HOSTS or loopback):
        raise ConfigError(
            f"TESTNET=true with APPLY_EXCHANGE_URL={url!r}: testnet may only reach a sandbox: "
            f"{TESTNET_EXCHANGE_URL} or a loopback address"
        )
    if not testnet and host in SANDBOX_HOSTS:
        raise ConfigError(
            f"TESTNET=false with APPLY_EXCHANGE_URL={url!r}: production mode never trades on the testnet; "
            "set TESTNET=true for a testnet run"
        )


def _check_redis_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"REDIS_URL={mask_url_password(url)!r}: accepted: redis://, rediss:// or unix:// URLs"
        )
    if parts.scheme == "unix":
        return
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"REDIS_URL={mask_url_password(url)!r}: the port must be a number from 1 to 65535"
        ) from None
    if not parts.hostname or port == 0:
        raise ConfigError(
            f"REDIS_URL={mask_url_password(url)!r}: accepted: redis://user:password@host:port/db"
        )
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) <= MAX_REDIS_DB):
        raise ConfigError(
            f"REDIS_URL={mask_url_password(url)!r}: the database must be a number from 0 to {MAX_REDIS_DB}"
        )


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(
            f"{name}={value!r}: accepted values: an IP address of this host, e.g. 10.0.0.5 or 127.0.0.1"
        ) from None
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: accepted values: a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: accepted values: a whole number from {low} to {high}")
    return value


def _sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """`10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379`: where to ask who the primary is."""
    sentinels = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS: {item!r}: accepted: host:port pairs separated by commas")
        sentinels.append((host.strip("[]"), int(port)))
    return tuple(sentinels)


def _notional_limits(raw: str) -> tuple[tuple[str, float], ...]:
    """`BTCUSDT=50000,ETHUSDT=20000,*=10000`: USDT per order, per symbol, `*` for the others."""
    accepted = "accepted: SYMBOL=USDT pairs separated by commas, e.g. BTCUSDT=50000,*=10000"
    limits: list[tuple[str, float]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        symbol, sep, amount = item.partition("=")
        symbol = symbol.strip()
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not (symbol == "*" or symbol.isalnum()) or not 0 < value < 1e12:
            raise ConfigError(f"APPLY_MAX_NOTIONAL_USDT: {item!r}: {accepted}")
        if symbol.upper() in {seen for seen, _limit in limits}:
            raise ConfigError(
                f"APPLY_MAX_NOTIONAL_USDT: {symbol.upper()} is given twice; give each symbol once"
            )
        limits.append((symbol.upper(), value))
    return tuple(limits)


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not value or any(ch.isspace() for ch in value) or len(value) > 128:
        raise ConfigError(f"{name}={value!r}: accepted values: 1 to 128 characters without spaces")
    return value


def process_env(env_file: Path | None, required: bool) -> dict[str, str]:
    """The process environment over the env file's values: what the CLI runs with. A file named on the
    command line must exist (`required`); the default one is read when it is there."""
    merged: dict[str, str] = {}
    if env_file is not None and (required or env_file.exists()):
        merged = read_env_file(env_file)
    check_environment(os.environ)
    merged.update(os.environ)
    return merged
