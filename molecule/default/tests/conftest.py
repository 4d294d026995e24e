"""Helpers shared by the scenario's tests: JSON over HTTP from inside the container, and journals."""

from __future__ import annotations

import json
from typing import Any

from scenario_helpers import RELEASE_PYTHON, kill_switch_play, wait_for
from testinfra.host import Host

# scenario_helpers: shared with the other scenarios (molecule/shared, on PYTHONPATH from
# .config/molecule/config.yml), re-exported for this scenario's test files.
__all__ = ["RELEASE_PYTHON", "http_json", "journal", "kill_switch_play", "wait_for"]

FETCH = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def http_json(host: Host, url: str) -> Any:
    """GET a URL from inside the container (the services listen on its loopback)."""
    return json.loads(host.check_output(f"python3 -c '{FETCH}' {url}"))


def journal(host: Host, unit: str) -> str:
    output: str = host.run(f"journalctl -u {unit} --no-pager -n 40").stdout
    return output
