"""Run the real Redis, Redis exporter and node exporter on loopback and read the metric names they expose."""

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

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


def redis_and_node_exporter_names() -> set[str]:
    """Names exposed by the Redis exporter (over a real Redis with maxmemory set) and the node exporter."""
    redis_port, redis_exporter_port, node_exporter_port = (free_loopback_port() for _ in range(3))
    with ExitStack() as stack:
        stack.enter_context(
            _running(
                [
                    _binary("redis-server"),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxmemory",
                    "64mb",
                ]
            )
        )
        redis_exporter = stack.enter_context(
            _running(
                [
                    _binary("prometheus-redis-exporter"),
                    "-redis.addr",
                    f"redis://127.0.0.1:{redis_port}",
                    "-web.listen-address",
                    f"127.0.0.1:{redis_exporter_port}",
                ]
            )
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
        redis_text = _scrape_when_ready(
            f"http://127.0.0.1:{redis_exporter_port}/metrics", "redis_up 1", redis_exporter
        )
        node_text = _scrape_when_ready(
            f"http://127.0.0.1:{node_exporter_port}/metrics",
            'node_scrape_collector_success{collector="filesystem"} 1',
            node_exporter,
        )
    return exposed_names(redis_text) | exposed_names(node_text)
