"""Both apply hosts run, reach Redis over the network only with their ACL user, and are scraped."""

from conftest import APPLY_HOSTS, CORE, RELEASE_PYTHON, http_json, wait_for
from testinfra.host import Host

# Without credentials, the same Redis the apply layer's REDIS_URL names (the default user is off). RESP2,
# so the server's answer is the plain NOAUTH (with RESP3, HELLO itself is refused first).
ANONYMOUS_PING = f"import redis; print(redis.Redis(host='{CORE}', protocol=2, socket_timeout=5).ping())"
# With the ACL user and password of the deployed env file (read there, never on a command line).
ACL_PING = (
    "import redis; from quantum_apply_layer.config import DEFAULT_ENV_FILE, read_env_file; "
    "env = read_env_file(DEFAULT_ENV_FILE); "
    "print(redis.Redis.from_url(env['REDIS_URL'], socket_timeout=5).ping())"
)


def test_apply_layer_runs_on_both_apply_hosts(apply_hosts: dict[str, Host]) -> None:
    for host in apply_hosts.values():
        assert host.service("quantum-apply-layer").is_running
        assert host.service("quantum-exchange-emulator").is_running


def test_the_core_runs_no_apply_layer(core: Host) -> None:
    assert not core.file("/etc/systemd/system/quantum-apply-layer.service").exists
    assert core.service("redis-server").is_running


def test_redis_needs_the_acl_user_from_the_apply_hosts(apply_hosts: dict[str, Host]) -> None:
    for name, host in apply_hosts.items():
        assert not host.package("redis-server").is_installed
        # The deployed REDIS_URL names the core host (counted, so the password is never printed).
        assert host.check_output("grep -c '@%s:6379/' /etc/quantum/apply-layer.env", CORE) == "1"
        anonymous = host.run("%s -c %s", RELEASE_PYTHON, ANONYMOUS_PING)
        assert anonymous.rc != 0, f"{name}: Redis answered without a password: {anonymous.stdout}"
        assert "AuthenticationError: Authentication required." in anonymous.stderr, anonymous.stderr
        assert host.check_output("%s -c %s", RELEASE_PYTHON, ACL_PING) == "True"


def test_prometheus_scrapes_every_target_up(core: Host) -> None:
    expected = {("apply_layer", f"{name}:8000") for name in APPLY_HOSTS} | {
        ("node", f"{CORE}:9100"),
        ("redis", f"{CORE}:9121"),
        ("prometheus", "127.0.0.1:9090"),
        ("alertmanager", "127.0.0.1:9093"),
    }
    seen: dict[tuple[str, str], str] = {}

    def all_up() -> bool:
        targets = http_json(core, "http://127.0.0.1:9090/api/v1/targets")["data"]["activeTargets"]
        seen.clear()
        seen.update({(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets})
        return set(seen) == expected and set(seen.values()) == {"up"}

    assert wait_for(all_up), seen
