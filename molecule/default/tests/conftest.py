"""Helpers shared by the scenario's tests: JSON over HTTP from inside the container, and journals."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from testinfra.host import Host

RELEASE_PYTHON = "/opt/quantum/apply-layer/current/venv/bin/python"
FETCH = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def http_json(host: Host, url: str) -> Any:
    """GET a URL from inside the container (the services listen on its loopback)."""
    return json.loads(host.check_output(f"python3 -c '{FETCH}' {url}"))


def journal(host: Host, unit: str) -> str:
    output: str = host.run(f"journalctl -u {unit} --no-pager -n 40").stdout
    return output


def wait_for(check: Callable[[], bool], timeout_s: float = 90, every_s: float = 3) -> bool:
    """Poll until `check` holds or the bounded time runs out (never asserts on time itself)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
