"""Both apply hosts run, reach Redis over the network only over TLS with their ACL user, and are scraped."""

import pytest
from conftest import (
    APPLY_HOSTS,
    CORE,
    RELEASE_PYTHON,
    http_json,
    prometheus_api,
    wait_for,
    web_logins,
)
from scenario_helpers import (
    HTTP,
    SECRETS,
    UNIT_USERS,
    assert_answers_prometheus_only,
    assert_each_secret_is_its_owners_only,
    assert_runs_as_its_own_user,
)
from testinfra.host import Host

# The deployed env file's REDIS_URL (read there, so the password is never on a command line).
DEPLOYED_URL = (
    "import redis; from quantum_apply_layer.config import DEFAULT_ENV_FILE, read_env_file; "
    "url = read_env_file(DEFAULT_ENV_FILE)['REDIS_URL']; "
)
# With the ACL user over TLS, as the apply layer logs in.
TLS_LOGIN = DEPLOYED_URL + "print(redis.Redis.from_url(url, socket_timeout=5).ping())"
# The same user and password over plain TCP: Redis serves TLS only, so the login never gets an answer.
PLAIN_LOGIN = (
    DEPLOYED_URL + "print(redis.Redis.from_url(url.replace('rediss://', 'redis://').split('?')[0], "
    "protocol=2, socket_timeout=5).ping())"
)
# Over TLS without credentials (the default user is off). RESP2, so the answer is the plain NOAUTH.
ANONYMOUS_PING = (
    f"import redis; print(redis.Redis(host='{CORE}', protocol=2, socket_timeout=5, ssl=True, "
    "ssl_ca_certs='/etc/quantum/tls/ca.crt').ping())"
)


def test_apply_layer_runs_on_both_apply_hosts(apply_hosts: dict[str, Host]) -> None:
    for host in apply_hosts.values():
        assert host.service("quantum-apply-layer").is_running
        assert host.service("quantum-exchange-emulator").is_running


def test_the_core_runs_no_apply_layer(core: Host) -> None:
    assert not core.file("/etc/systemd/system/quantum-apply-layer.service").exists
    assert core.service("redis-server").is_running


def test_redis_takes_only_tls_and_the_acl_user_from_the_apply_hosts(apply_hosts: dict[str, Host]) -> None:
    for name, host in apply_hosts.items():
        assert not host.package("redis-server").is_installed
        # The deployed REDIS_URL names the core host over TLS (counted, so the password is never printed).
        tls_url = f"^REDIS_URL=rediss://.*@{CORE}:6379/"
        assert host.check_output("grep -c %s /etc/quantum/apply-layer.env", tls_url) == "1"
        plain = host.run("%s -c %s", RELEASE_PYTHON, PLAIN_LOGIN)
        assert plain.rc != 0, f"{name}: Redis answered a plain TCP login: {plain.stdout}"
        assert "redis.exceptions.ConnectionError" in plain.stderr, plain.stderr
        anonymous = host.run("%s -c %s", RELEASE_PYTHON, ANONYMOUS_PING)
        assert anonymous.rc != 0, f"{name}: Redis answered without a password: {anonymous.stdout}"
        assert "AuthenticationError: Authentication required." in anonymous.stderr, anonymous.stderr
        assert host.check_output("%s -c %s", RELEASE_PYTHON, TLS_LOGIN) == "True"


def test_prometheus_scrapes_every_target_up(core: Host) -> None:
    expected = {("apply_layer", f"{name}:8000") for name in APPLY_HOSTS} | {
        ("node", f"{CORE}:9100"),
        ("redis", f"{CORE}:9121"),
        ("prometheus", "127.0.0.1:9090"),
        ("alertmanager", "127.0.0.1:9093"),
    }
    seen: dict[tuple[str, str], str] = {}

    def all_up() -> bool:
        targets = prometheus_api(core, "targets")["data"]["activeTargets"]
        seen.clear()
        seen.update({(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets})
        return set(seen) == expected and set(seen.values()) == {"up"}

    assert wait_for(all_up), seen


# Every metrics endpoint Prometheus scrapes across hosts, over mutual TLS.
METRICS_URLS = [f"{CORE}:9100", f"{CORE}:9121", *(f"{name}:8000" for name in APPLY_HOSTS)]


@pytest.mark.parametrize("target", METRICS_URLS)
def test_metrics_answer_prometheus_certificate_only(core: Host, target: str) -> None:
    """From the core host, which the firewall lets through (the apply hosts are dropped before TLS,
    test_firewall.py)."""
    assert_answers_prometheus_only(core, target)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9090/api/v1/targets", "http://127.0.0.1:9093/api/v2/status"]
)
def test_web_api_answers_only_a_web_user(core: Host, url: str) -> None:
    """Prometheus and Alertmanager behind --web.config.file on Debian 13 (the infra scenario: Debian 12)."""
    for login in ("", "operator:not-the-password-0123456789"):
        refused = core.run("python3 -c %s %s %s %s", HTTP, url, "", login)
        assert refused.rc != 0, refused.stdout
        assert "HTTP Error 401" in refused.stderr, refused.stderr
    assert http_json(core, url, login=web_logins()["operator"])


@pytest.mark.parametrize("unit", [unit for unit in UNIT_USERS if not unit.endswith("-sentinel")])
def test_each_monitoring_service_runs_as_its_own_user(core: Host, unit: str) -> None:
    """On Debian 13's packages, the core host running all four (the infra scenario: Debian 12)."""
    assert_runs_as_its_own_user(core, unit)


def test_each_secret_on_the_core_is_readable_by_its_own_service_only(core: Host) -> None:
    assert_each_secret_is_its_owners_only(core, set(SECRETS))
