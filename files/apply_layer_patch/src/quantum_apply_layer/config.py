"""Settings, parsed once and strictly from the environment into a frozen object.

A bad value stops the process with a message that names the variable and the values it accepts:
a trading gate that guesses what an operator meant is a trading gate nobody can trust.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
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
    """The parsed settings; what each means, its default and bounds are in SETTINGS below."""

    testnet: bool
    redis_url: str = field(repr=False)
    exchange_url: str
    metrics_addr: str
    metrics_port: int
    metrics_tls_cert: str
    metrics_tls_key: str
    metrics_tls_client_ca: str
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
    max_orders_per_s: int
    max_orders_per_s_per_symbol: int
    max_notional_usdt: tuple[tuple[str, float], ...]
    auto_trip_checks: int
    auto_trip_exchange_errors: int
    auto_trip_mismatch_s: int
    auto_trip_dead_letters_per_min: int
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_service: str
    redis_wait_replicas: int
    redis_wait_timeout_ms: int
    exchange_recv_window_ms: int
    position_max_age_s: float

    def notional_limit(self, symbol: str) -> float | None:
        """The symbol's own limit, else the `*` limit, else none."""
        limits = dict(self.max_notional_usdt)
        return limits.get(symbol, limits.get("*"))

    @property
    def mode(self) -> str:
        return "testnet" if self.testnet else "production"

    def describe(self) -> dict[str, str]:
        """Every setting as an operator reads it (check-config, the start-up log), the Redis password
        masked, in the table's order; `mode` follows TESTNET."""
        described: dict[str, str] = {}
        for setting in SETTINGS:
            described[setting.name] = setting.show(getattr(self, setting.field))
            if setting.name == "TESTNET":
                described["mode"] = self.mode
        return described


def load_settings(env: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {
        setting.field: setting.parse(setting.name, setting.raw(env)) for setting in SETTINGS
    }
    # The rules across settings: which exchange a mode may reach; metrics over TLS all or nothing.
    _check_exchange_url(values["exchange_url"], values["testnet"])
    _check_metrics_tls(values)
    values["exchange_url"] = values["exchange_url"].rstrip("/")
    return Settings(**values)


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


def setting_names() -> frozenset[str]:
    """Every variable the service reads."""
    return frozenset(setting.name for setting in SETTINGS)


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


def _testnet(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"true", "false"}:
        raise ConfigError(
            f"{name}={raw!r} is not accepted: accepted values are 'false' (production, the default) "
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


def _redis_url(name: str, raw: str) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    shown = f"{name}={mask_url_password(url)!r}"
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{shown}: accepted: redis://, rediss:// or unix:// URLs")
    if parts.scheme == "unix":
        return url
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{shown}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or port == 0:
        raise ConfigError(f"{shown}: accepted: redis://user:password@host:port/db")
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) <= MAX_REDIS_DB):
        raise ConfigError(f"{shown}: the database must be a number from 0 to {MAX_REDIS_DB}")
    return url


def _text(name: str, raw: str) -> str:
    return raw


def _readable_file(name: str, raw: str) -> str:
    """An absolute path to a file this process can read now, or empty: a missing certificate stops
    check-config and start-up with its name, not a traceback at the first scrape."""
    path = raw.strip()
    if not path:
        return ""
    if not Path(path).is_absolute():
        raise ConfigError(f"{name}={path!r}: accepted values: an absolute path to a readable file, or empty")
    try:
        with Path(path).open("rb"):
            pass
    except OSError as error:
        raise ConfigError(f"{name}={path!r}: cannot read it: {error.strerror}") from None
    return path


METRICS_TLS_FIELDS = ("metrics_tls_cert", "metrics_tls_key", "metrics_tls_client_ca")


def _check_metrics_tls(values: Mapping[str, Any]) -> None:
    """Metrics over TLS always ask for a client certificate: a certificate without its key or without
    the CA of the clients is refused, never served half-open."""
    names = {setting.field: setting.name for setting in SETTINGS}
    missing = [names[field] for field in METRICS_TLS_FIELDS if not values[field]]
    if 0 < len(missing) < len(METRICS_TLS_FIELDS):
        given = [names[field] for field in METRICS_TLS_FIELDS if values[field]]
        raise ConfigError(
            f"{', '.join(given)} set without {', '.join(missing)}: metrics over TLS need the server's "
            "certificate, its key and the CA that signs Prometheus's client certificate (set all three, "
            "or none for plain HTTP)"
        )


def _address(name: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(
            f"{name}={value!r}: accepted values: an IP address of this host, e.g. 10.0.0.5 or 127.0.0.1"
        ) from None
    return value


@dataclass(frozen=True)
class Whole:
    """A whole number from low to high, kept as `keep` makes it (a float, seconds from milliseconds)."""

    low: int
    high: int
    keep: Callable[[int], Any] = int

    @property
    def accepted(self) -> str:
        return f"{self.low} to {self.high}"

    def __call__(self, name: str, raw: str) -> Any:
        try:
            value = int(raw)
        except ValueError:
            value = self.low - 1
        if not self.low <= value <= self.high:
            raise ConfigError(
                f"{name}={raw!r}: accepted values: a whole number from {self.low} to {self.high}"
            )
        return self.keep(value)


def _seconds_from_ms(value: int) -> float:
    return value / 1000


def _log_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"json", "kv"}:
        raise ConfigError(f"{name}={value!r}: accepted values: json, kv")
    return value


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """`10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379`: where to ask who the primary is."""
    sentinels = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {item!r}: accepted: host:port pairs separated by commas")
        sentinels.append((host.strip("[]"), int(port)))
    return tuple(sentinels)


def _notional_limits(name: str, raw: str) -> tuple[tuple[str, float], ...]:
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
            raise ConfigError(f"{name}: {item!r}: {accepted}")
        if symbol.upper() in {seen for seen, _limit in limits}:
            raise ConfigError(f"{name}: {symbol.upper()} is given twice; give each symbol once")
        limits.append((symbol.upper(), value))
    return tuple(limits)


def _name(name: str, value: str) -> str:
    if not value or any(ch.isspace() for ch in value) or len(value) > 128:
        raise ConfigError(f"{name}={value!r}: accepted values: 1 to 128 characters without spaces")
    return value


def _pairs(pairs: tuple[tuple[object, object], ...], separator: str, number: str = "") -> str:
    return ",".join(f"{key}{separator}{value:{number}}" for key, value in pairs)


def process_env(env_file: Path | None, required: bool) -> dict[str, str]:
    """The process environment over the env file's values: what the CLI runs with. A file named on the
    command line must exist (`required`); the default one is read when it is there."""
    merged: dict[str, str] = {}
    if env_file is not None and (required or env_file.exists()):
        merged = read_env_file(env_file)
    check_environment(os.environ)
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class Setting:
    """One variable: the one place its name, default, accepted values and meaning are written."""

    name: str
    field: str  # Settings' attribute
    parse: Callable[[str, str], Any]  # (name, text) -> value; raises ConfigError naming the variable
    default: str | Callable[[Mapping[str, str]], str]  # text, or worked out from the other variables
    help: str  # the README's meaning column
    show: Callable[[Any], str] = str  # how check-config prints the parsed value
    default_help: str = ""  # the README's default column, where the default is worked out
    # False: an empty value is a value (and refused), not "use the default"
    empty_is_default: bool = True
    accepts: str = ""  # what a value may be, for the README; a Whole parser says it itself

    @property
    def accepted(self) -> str:
        return self.accepts or str(getattr(self.parse, "accepted", ""))

    def raw(self, env: Mapping[str, str]) -> str:
        default = self.default(env) if callable(self.default) else self.default
        if not self.empty_is_default:
            return env.get(self.name, default)
        return env.get(self.name, "").strip() or default

    def documented_default(self) -> str:
        if self.default_help:
            return self.default_help
        assert isinstance(self.default, str)
        return f"`{self.default}`" if self.default else "empty"


def _exchange_url_by_mode(env: Mapping[str, str]) -> str:
    testnet = env.get("TESTNET", "false").strip().lower() == "true"
    return TESTNET_EXCHANGE_URL if testnet else PRODUCTION_EXCHANGE_URL


def _wait_replicas_by_sentinels(env: Mapping[str, str]) -> str:
    return "1" if _sentinels("REDIS_SENTINELS", env.get("REDIS_SENTINELS", "")) else "0"


# Every setting, in the order check-config prints them. README's "Environment" table, the role's
# env-file template and argument_specs are checked against it (tests/test_settings_table.py).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "TESTNET",
        "testnet",
        _testnet,
        "false",
        "`false` = production: both permits required. `true` = testnet: permits skipped, exchange must be "
        "`https://testnet.binancefuture.com` or loopback. Anything else refuses to start.",
        show=lambda value: str(value).lower(),
        empty_is_default=False,
        accepts="`false`, `true`",
    ),
    Setting(
        "REDIS_URL",
        "redis_url",
        _redis_url,
        "redis://127.0.0.1:6379/0",
        "with the ACL user and password of the redis role (`redis://apply_layer:<pw>@host:6379/0`)",
        show=lambda value: mask_url_password(value),
        empty_is_default=False,
        accepts="a `redis://`, `rediss://` or `unix://` URL",
    ),
    Setting(
        "APPLY_EXCHANGE_URL",
        "exchange_url",
        _text,
        _exchange_url_by_mode,
        "plain http only for a loopback emulator; production never accepts the testnet host",
        default_help=f"by mode: `{PRODUCTION_EXCHANGE_URL}` / `{TESTNET_EXCHANGE_URL}`",
        accepts="an http(s) base URL",
    ),
    Setting(
        "APPLY_METRICS_ADDR",
        "metrics_addr",
        _address,
        "0.0.0.0",  # noqa: S104 - Prometheus scrapes it
        "address of the Prometheus endpoint (firewall it to the private network)",
        accepts="an IP address of this host",
    ),
    Setting("APPLY_METRICS_PORT", "metrics_port", Whole(0, 65535), "8000", "port of the Prometheus endpoint"),
    Setting(
        "APPLY_METRICS_TLS_CERT",
        "metrics_tls_cert",
        _readable_file,
        "",
        "the endpoint's certificate: with the two below it serves HTTPS only, to clients with a "
        "certificate signed by the client CA (mutual TLS); all three empty: plain HTTP",
        accepts="an absolute path to a readable file, or empty",
    ),
    Setting(
        "APPLY_METRICS_TLS_KEY",
        "metrics_tls_key",
        _readable_file,
        "",
        "the private key of APPLY_METRICS_TLS_CERT",
        accepts="an absolute path to a readable file, or empty",
    ),
    Setting(
        "APPLY_METRICS_TLS_CLIENT_CA",
        "metrics_tls_client_ca",
        _readable_file,
        "",
        "the CA whose client certificates may scrape (Prometheus's); others are refused in the handshake",
        accepts="an absolute path to a readable file, or empty",
    ),
    Setting(
        "APPLY_PERMIT_TIMEOUT_MS",
        "permit_timeout_s",
        Whole(1, 600_000, keep=_seconds_from_ms),
        "2000",
        "how long a plan waits for its permits, then `blocked`",
        show=lambda value: str(round(value * 1000)),
    ),
    Setting(
        "APPLY_EXCHANGE_TIMEOUT_MS",
        "exchange_timeout_s",
        Whole(100, 60_000, keep=_seconds_from_ms),
        "5000",
        "one exchange request",
        show=lambda value: str(round(value * 1000)),
    ),
    Setting(
        "APPLY_CONSUMER_GROUP",
        "consumer_group",
        _name,
        "apply-layer",
        "the consumer group every apply host shares",
        accepts="1 to 128 characters, no spaces",
    ),
    Setting(
        "APPLY_CONSUMER_NAME",
        "consumer_name",
        _name,
        lambda _env: socket.gethostname(),
        "keep the name stable per host: a restart takes up its own pending plans",
        default_help="host name",
        accepts="1 to 128 characters, no spaces",
    ),
    Setting(
        "APPLY_RECLAIM_IDLE_MS",
        "reclaim_idle_ms",
        Whole(1_000, 3_600_000),
        "30000",
        "a plan idle this long at a dead consumer is taken over",
    ),
    Setting(
        "APPLY_DEDUPE_TTL_S",
        "dedupe_ttl_s",
        Whole(60, 90 * 86_400),
        "604800",
        "how long a plan id is remembered as executed",
    ),
    Setting(
        "APPLY_MAX_PLAN_AGE_S",
        "max_plan_age_s",
        Whole(1, 86_400, keep=float),
        "300",
        "older plans are blocked as stale (after an outage, the market has moved); more than 5 s in the "
        "future: blocked as `from_future`",
    ),
    Setting(
        "APPLY_MAX_IN_FLIGHT",
        "max_in_flight",
        Whole(1, 1024),
        "32",
        "plans handled at once (one at a time per symbol)",
    ),
    Setting(
        "APPLY_RESULT_MAXLEN",
        "result_maxlen",
        Whole(1_000, 100_000_000),
        "1000000",
        "approximate cap of the result stream",
    ),
    Setting(
        "APPLY_LOG_FORMAT",
        "log_format",
        _log_format,
        "json",
        "`json` or `kv`, one line per event on stdout",
        empty_is_default=False,
        accepts="`json`, `kv`",
    ),
    Setting(
        "APPLY_MAX_ORDERS_PER_SECOND",
        "max_orders_per_s",
        Whole(0, 100_000),
        "0",
        "order-rate limit of all symbols, shared by every process on the Redis (0 = none)",
    ),
    Setting(
        "APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL",
        "max_orders_per_s_per_symbol",
        Whole(0, 100_000),
        "0",
        "order-rate limit of each symbol, shared by every process on the Redis (0 = none)",
    ),
    Setting(
        "APPLY_MAX_NOTIONAL_USDT",
        "max_notional_usdt",
        _notional_limits,
        "",
        "`BTCUSDT=250000,ETHUSDT=100000,*=25000`: USDT per order; an order over it is blocked, never trimmed",
        show=lambda value: _pairs(value, "=", "g"),
        accepts="`SYMBOL=USDT` pairs, `*` for the others",
    ),
    Setting(
        "APPLY_AUTO_TRIP_CHECKS",
        "auto_trip_checks",
        Whole(1, 600),
        "3",
        "one-second checks a condition must hold before the service halts itself",
    ),
    Setting(
        "APPLY_AUTO_TRIP_EXCHANGE_ERRORS",
        "auto_trip_exchange_errors",
        Whole(0, 10_000),
        "5",
        "exchange failures in a row that trip (0 = off)",
    ),
    Setting(
        "APPLY_AUTO_TRIP_MISMATCH_S",
        "auto_trip_mismatch_s",
        Whole(0, 86_400),
        "0",
        "seconds P3.3 and the exchange may disagree on a position (0 = off)",
    ),
    Setting(
        "APPLY_AUTO_TRIP_DEAD_LETTERS_PER_MIN",
        "auto_trip_dead_letters_per_min",
        Whole(0, 1_000_000),
        "0",
        "dead letters a minute above which it trips (0 = off)",
    ),
    Setting(
        "REDIS_SENTINELS",
        "redis_sentinels",
        _sentinels,
        "",
        "`host:26379,host:26379,host:26379`: ask the Sentinels for the primary (REDIS_URL then gives only "
        "user, password, db)",
        show=lambda value: _pairs(value, ":"),
        accepts="`host:port` pairs",
    ),
    Setting(
        "REDIS_SENTINEL_SERVICE",
        "redis_sentinel_service",
        _name,
        "quantum",
        "the name the Sentinels monitor the primary under",
        accepts="1 to 128 characters, no spaces",
    ),
    Setting(
        "APPLY_REDIS_WAIT_REPLICAS",
        "redis_wait_replicas",
        Whole(0, 10),
        _wait_replicas_by_sentinels,
        "a claim must reach this many replicas (`WAIT`) before its order is sent",
        default_help="`1` with Sentinels, else `0`",
    ),
    Setting(
        "APPLY_REDIS_WAIT_TIMEOUT_MS",
        "redis_wait_timeout_ms",
        Whole(1, 10_000),
        "200",
        "how long a claim waits for its replicas",
    ),
    Setting(
        "APPLY_EXCHANGE_RECV_WINDOW_MS",
        "exchange_recv_window_ms",
        Whole(1, 60_000),
        "5000",
        "Binance's `recvWindow` on every signed request: how late a request may arrive",
    ),
    Setting(
        "APPLY_POSITION_MAX_AGE_S",
        "position_max_age_s",
        Whole(2, 300, keep=float),
        "10",
        "how old the last positionRisk check of the pushed positions may be before a plan reads its "
        "position by REST, before its claim (the check runs every half of it)",
        show=lambda value: f"{value:g}",
    ),
)
