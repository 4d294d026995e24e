"""Helpers shared by the infra scenario's tests: credentials, commands run inside the container."""

import json
import time
from typing import Any

from testinfra.host import Host

REDIS = "127.0.0.1:6379"
PROMETHEUS = "http://127.0.0.1:9090"
# Run inside the container: the services listen on its loopback only.
URL_READER = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"


def inventory(host: Host) -> dict[str, Any]:
    """The scenario's inventory variables (passwords, users) as the roles received them."""
    return dict(host.ansible.get_variables())


def redis_cli(host: Host, user: str | None, password: str | None, *command: str) -> str:
    """Run one Redis command as `user` (None: no AUTH) and return its reply, errors included."""
    redis_host, port = REDIS.split(":")
    auth = ["--user", user, "--no-auth-warning"] if user else []
    # The password travels in the environment, as an operator's would, not on the command line.
    env = ["env", f"REDISCLI_AUTH={password or ''}"]
    argv = [*env, "redis-cli", "-h", redis_host, "-p", port, *auth, *command]
    result = host.run(" ".join(["%s"] * len(argv)), *argv)
    return str(result.stdout + result.stderr).strip()


def http_text(host: Host, url: str) -> str:
    """GET a document from inside the container."""
    return str(host.check_output("python3 -c %s %s", URL_READER, url))


def http_json(host: Host, url: str) -> Any:
    return json.loads(http_text(host, url))


def prometheus_targets(host: Host, wanted_up: set[str], attempts: int = 30) -> list[dict[str, Any]]:
    """Active targets, once every job in `wanted_up` has been scraped successfully (or attempts run out)."""
    targets: list[dict[str, Any]] = []
    for _ in range(attempts):
        targets = http_json(host, f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
        up = {target["labels"]["job"] for target in targets if target["health"] == "up"}
        if wanted_up <= up:
            break
        time.sleep(2)
    return targets
