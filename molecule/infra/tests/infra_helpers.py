"""Helpers shared by the infra scenario's tests: credentials, commands run inside the container."""

import json
import time
from typing import Any

from testinfra.host import Host

REDIS = "127.0.0.1:6379"
PROMETHEUS = "http://127.0.0.1:9090"
# Run inside the container (the services listen on its loopback only): GET argv[1], with basic auth when
# argv[2] is "user:password" (test-only secrets), and print the body, or the status with --status. An
# https:// URL (the exporters, over mutual TLS) is verified with the private CA and shown Prometheus's
# client certificate.
URL_READER = """
import base64, ssl, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2]:
    request.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
context = None
if sys.argv[1].startswith("https:"):
    context = ssl.create_default_context(cafile="/etc/quantum/tls/ca.crt")
    client = "/etc/prometheus/tls/prometheus-client"
    context.load_cert_chain(client + ".crt", client + ".key")
try:
    with urllib.request.urlopen(request, timeout=5, context=context) as answer:
        print(answer.status if "--status" in sys.argv else answer.read().decode())
except urllib.error.HTTPError as error:
    if "--status" not in sys.argv:
        raise
    print(error.code)
"""


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


def web_login(host: Host) -> str:
    """The operator's login to Prometheus and Alertmanager (--web.config.file), as "user:password"."""
    return f"operator:{inventory(host)['prometheus_web_users']['operator']}"


def http_text(host: Host, url: str) -> str:
    """GET a document from inside the container, logged in as the operator (the exporters ignore it)."""
    return str(host.check_output("python3 -c %s %s %s", URL_READER, url, web_login(host)))


def http_status(host: Host, url: str, login: str) -> int:
    """The HTTP status of a GET with that login ("" for none)."""
    return int(host.check_output("python3 -c %s %s %s --status", URL_READER, url, login))


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
