"""Run the real Redis (a primary, a replica and a Sentinel), Redis exporters and node exporter on loopback and
read the metric names they expose."""

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

_INSTALL_HINT = "apt-get install -y redis-server prometheus-redis-exporter prometheus-node-exporter"
_STARTUP_DEADLINE_SECONDS = 30.0


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: {_INSTALL_HINT}")
    return path


@contextmanager
def _running(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _scrape_when_ready(url: str, ready_line: str, process: subprocess.Popen[bytes]) -> str:
    """The exposition text of `url` once it has `ready_line`; fails if the process dies or never does."""
    deadline = time.monotonic() + _STARTUP_DEADLINE_SECONDS
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URL we built)
                text: str = response.read().decode()
            if ready_line in text.splitlines():
                return text
            last_error = f"no line {ready_line!r} yet"
        except (urllib.error.URLError, ConnectionError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready: {last_error}")


def exposed_names(exposition: str) -> set[str]:
    """Sample names in Prometheus text exposition format."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _redis_server(port: int, *options: str) -> list[str]:
    """A throw-away redis-server on loopback: no persistence."""
    return [
        _binary("redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        *options,
    ]


def _redis_exporter(redis_port: int, listen_port: int) -> list[str]:
    """The exporter finds out by itself whether it scrapes a Redis node or a Sentinel."""
    return [
        _binary("prometheus-redis-exporter"),
        "-redis.addr",
        f"redis://127.0.0.1:{redis_port}",
        "-web.listen-address",
        f"127.0.0.1:{listen_port}",
    ]


def _sentinel_config(directory: Path, port: int, primary_port: int) -> Path:
    """A Sentinel rewrites its configuration file, so it gets its own in a temporary directory."""
    path = directory / "sentinel.conf"
    path.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\nsentinel monitor quantum 127.0.0.1 {primary_port} 1\n"
    )
    return path


def redis_and_node_exporter_names() -> set[str]:
    """Names exposed by the Redis exporter over a real primary (maxmemory set) with a connected replica,
    by a second Redis exporter over a real Sentinel watching that primary, and by the node exporter."""
    redis_port, replica_port, sentinel_port = (free_loopback_port() for _ in range(3))
    redis_exporter_port, sentinel_exporter_port, node_exporter_port = (free_loopback_port() for _ in range(3))
    with ExitStack() as stack:
        sentinel_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(_running(_redis_server(redis_port, "--maxmemory", "64mb")))
        stack.enter_context(
            _running(_redis_server(replica_port, "--replicaof", "127.0.0.1", str(redis_port)))
        )
        sentinel_config = _sentinel_config(sentinel_dir, sentinel_port, redis_port)
        stack.enter_context(_running([_binary("redis-server"), str(sentinel_config), "--sentinel"]))
        redis_exporter = stack.enter_context(_running(_redis_exporter(redis_port, redis_exporter_port)))
        sentinel_exporter = stack.enter_context(
            _running(_redis_exporter(sentinel_port, sentinel_exporter_port))
        )
        # Only the collectors the rules and dashboard read; every filesystem type counts, so a container's
        # overlay root still yields node_filesystem_* series.
        node_exporter = stack.enter_context(
            _running(
                [
                    _binary("prometheus-node-exporter"),
                    f"--web.listen-address=127.0.0.1:{node_exporter_port}",
                    "--collector.disable-defaults",
                    "--collector.filesystem",
                    "--collector.meminfo",
                    "--collector.loadavg",
                    "--collector.filesystem.fs-types-exclude=^(proc|sysfs)$",
                ]
            )
        )
        # The replica line makes the per-replica series (redis_connected_slave_*) exist.
        redis_text = _scrape_when_ready(
            f"http://127.0.0.1:{redis_exporter_port}/metrics", "redis_connected_slaves 1", redis_exporter
        )
        sentinel_text = _scrape_when_ready(
            f"http://127.0.0.1:{sentinel_exporter_port}/metrics",
            "redis_sentinel_masters 1",
            sentinel_exporter,
        )
        node_text = _scrape_when_ready(
            f"http://127.0.0.1:{node_exporter_port}/metrics",
            'node_scrape_collector_success{collector="filesystem"} 1',
            node_exporter,
        )
    return exposed_names(redis_text) | exposed_names(sentinel_text) | exposed_names(node_text)
