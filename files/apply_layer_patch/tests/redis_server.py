"""A real redis-server for the tests, on a free loopback port, that a test can stop and start again.

Started with the settings the apply layer needs in production: keyspace notifications for string
commands (permit waiting) and append-only persistence (the switch survives a restart). A Sentinel
is the same binary in sentinel mode.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, *extra_args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.binary = binary
        self.directory = directory
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--notify-keyspace-events", "K$", "--appendonly", "yes", "--appendfsync", "no",
                "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
                *self.extra_args,
            ],
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    # NOAUTH: it answers, but only to a client that logs in.
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """As a crashed host: no shutdown, no last write to disk."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class SentinelServer(RedisServer):
    """A Sentinel watching the primary under the service name `quantum`, with short timeouts."""

    def __init__(self, directory: Path, primary_port: int, quorum: int, *config_lines: str) -> None:
        super().__init__(directory)
        self.primary_port = primary_port
        self.quorum = quorum
        self.config_lines = config_lines

    def start(self) -> None:
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor quantum 127.0.0.1 {self.primary_port} {self.quorum}\n"
            "sentinel down-after-milliseconds quantum 1000\n"
            "sentinel failover-timeout quantum 5000\n"
            "sentinel parallel-syncs quantum 1\n" + "".join(f"{line}\n" for line in self.config_lines)
        )
        self.process = subprocess.Popen(
            [self.binary, str(config), "--sentinel", "--logfile", str(self.directory / "sentinel.log")]
        )
        self.wait_ready()
