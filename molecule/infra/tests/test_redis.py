"""Redis: ACL users, persistence and the keyspace notifications the apply layer waits on."""

import pytest
from infra_helpers import inventory, redis_cli
from testinfra.host import Host


@pytest.fixture(name="apply_layer")
def fixture_apply_layer(host: Host) -> tuple[str, str]:
    variables = inventory(host)
    return variables.get("redis_apply_layer_user", "apply_layer"), variables["redis_apply_layer_password"]


@pytest.fixture(name="exporter")
def fixture_exporter(host: Host) -> tuple[str, str]:
    variables = inventory(host)
    return variables.get("redis_exporter_user", "redis_exporter"), variables["redis_exporter_password"]


def test_anonymous_client_is_refused(host: Host) -> None:
    assert redis_cli(host, None, None, "PING").startswith("NOAUTH")


def test_default_user_is_disabled(host: Host) -> None:
    assert "WRONGPASS" in redis_cli(host, "default", "anything-at-all", "PING")


def test_apply_layer_reads_and_writes_its_keys(host: Host, apply_layer: tuple[str, str]) -> None:
    assert redis_cli(host, *apply_layer, "PING") == "PONG"
    assert redis_cli(host, *apply_layer, "SET", "quantum:apply:molecule:probe", "1", "EX", "60") == "OK"
    assert redis_cli(host, *apply_layer, "GET", "quantum:apply:molecule:probe") == "1"


def test_transactions_and_scripts_survive_a_restart(host: Host, apply_layer: tuple[str, str]) -> None:
    """Redis replays its append-only file as the default user: the apply layer's MULTI/EXEC records and
    multi-write scripts (claims, switch changes) must come back after a restart, not only single SETs."""
    keys = (
        "quantum:apply:molecule:multi:a",
        "quantum:apply:molecule:multi:b",
        "quantum:apply:molecule:eval:a",
        "quantum:apply:molecule:eval:b",
    )
    script = "redis.call('SET', KEYS[1], 'eval'); redis.call('SET', KEYS[2], 'eval')"
    redis_cli(host, *apply_layer, "DEL", *keys)
    transaction = f"MULTI\nSET {keys[0]} multi\nSET {keys[1]} multi\nEXEC\n"
    host.check_output(
        "printf %s | env REDISCLI_AUTH=%s redis-cli --user %s --no-auth-warning",
        transaction,
        apply_layer[1],
        apply_layer[0],
    )
    redis_cli(host, *apply_layer, "EVAL", script, "2", keys[2], keys[3])
    host.check_output("systemctl restart redis-server")
    assert redis_cli(host, *apply_layer, "MGET", *keys).splitlines() == ["multi", "multi", "eval", "eval"]
    assert "NOPERM" not in host.check_output("journalctl -u redis-server --no-pager -n 20")


@pytest.mark.parametrize(
    ("setting", "expected_flags"),
    [("notify-keyspace-events", {"K", "$"}), ("appendonly", {"yes"})],
)
def test_settings_the_apply_layer_depends_on(host: Host, setting: str, expected_flags: set[str]) -> None:
    variables = inventory(host)
    admin = variables.get("redis_admin_user", "admin"), variables["redis_admin_password"]
    name, value = redis_cli(host, *admin, "CONFIG", "GET", setting).splitlines()
    assert name == setting
    assert expected_flags <= ({value} | set(value))


def test_exporter_user_reads_no_keys(host: Host, exporter: tuple[str, str]) -> None:
    assert redis_cli(host, *exporter, "INFO", "server").startswith("# Server")
    assert redis_cli(host, *exporter, "GET", "quantum:apply:molecule:probe").startswith("NOPERM")


def test_exporter_password_is_not_on_a_command_line(host: Host, exporter: tuple[str, str]) -> None:
    assert exporter[1] not in host.check_output("ps -eo args")
