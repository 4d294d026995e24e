"""Helpers shared by the scenario's tests: JSON over HTTP from inside the container, and journals."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from testinfra.host import Host

# Helpers shared with the other scenarios' tests, re-exported for this scenario's test files.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from scenario_helpers import RELEASE_PYTHON, kill_switch_play, wait_for

__all__ = ["RELEASE_PYTHON", "http_json", "journal", "kill_switch_play", "wait_for"]

FETCH = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def http_json(host: Host, url: str) -> Any:
    """GET a URL from inside the container (the services listen on its loopback)."""
    return json.loads(host.check_output(f"python3 -c '{FETCH}' {url}"))


def journal(host: Host, unit: str) -> str:
    output: str = host.run(f"journalctl -u {unit} --no-pager -n 40").stdout
    return output
