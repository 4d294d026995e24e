"""One Redis user per writer: each may do its job and nothing on issue 15's list (redis_user_matrix.py).

ACL DRYRUN asks Redis itself, as the admin, whether a user may run a command with its keys, without
running it; the scripts are then run for real, since a script runs each command with its caller's
permissions (what the apply layer's claim and the operator's switch rely on).
"""

import pytest
from infra_helpers import URL_READER, inventory, redis_cli
from redis_user_matrix import MATRIX, P33, PERMIT
from testinfra.host import Host

# Like claim.lua: read both permits and consume them; and a script that would forge one.
CONSUME = "redis.call('GET', KEYS[1]); redis.call('GET', KEYS[2]); return redis.call('DEL', KEYS[1], KEYS[2])"
FORGE = "return redis.call('SET', KEYS[1], '{\"granted\": true}')"


# The redis role's default user names where they differ from the variable's prefix.
DEFAULT_USERS = {"exporter": "redis_exporter"}


def login(host: Host, name: str) -> tuple[str, str]:
    """The user and password the redis role gave redis_<name>_user."""
    variables = inventory(host)
    user = variables.get(f"redis_{name}_user", DEFAULT_USERS.get(name, name))
    return user, variables[f"redis_{name}_password"]


@pytest.mark.parametrize(
    ("name", "command", "allowed"),
    MATRIX,
    ids=[
        f"{name}-{' '.join(command[:2])}-{'allowed' if allowed else 'refused'}"
        for name, command, allowed in MATRIX
    ],
)
def test_user_may_do_its_job_and_nothing_else(
    host: Host, name: str, command: tuple[str, ...], allowed: bool
) -> None:
    user = login(host, name)[0]
    reply = redis_cli(host, *login(host, "admin"), "ACL", "DRYRUN", user, *command)
    assert (reply == "OK") is allowed, f"{user} {' '.join(command)}: {reply}"


def test_apply_layer_consumes_permits_inside_a_script_but_cannot_forge_one(host: Host) -> None:
    governor, brain, apply_layer = (
        login(host, "risk_governor"),
        login(host, "position_brain"),
        login(host, "apply_layer"),
    )
    assert redis_cli(host, *governor, "SET", PERMIT, '{"granted": true}', "EX", "60") == "OK"
    assert redis_cli(host, *brain, "SET", P33, '{"allow": true}', "EX", "60") == "OK"
    assert redis_cli(host, *apply_layer, "EVAL", CONSUME, "2", PERMIT, P33) == "2"
    forged = redis_cli(host, *apply_layer, "EVAL", FORGE, "1", PERMIT)
    # Redis 7.0 words it "The user executing the script can't access at least one of the keys".
    assert "can't access" in forged, forged
    assert redis_cli(host, *login(host, "admin"), "EXISTS", PERMIT) == "0"


def test_exporter_sends_its_password_to_no_other_target(host: Host) -> None:
    """/scrape?target= makes the exporter log in to any Redis it is pointed at: a listener on the host
    stands in for an attacker's Redis and records what the exporter sends it."""
    listener = host.run(
        "timeout 8 python3 -c %s & sleep 1; python3 -c %s %s >/dev/null; wait",
        "import socket; s = socket.create_server(('127.0.0.1', 16380)); s.settimeout(6); c, _ = s.accept(); "
        "c.settimeout(3); print(c.recv(4096).decode(errors='replace'))",
        URL_READER,
        "https://127.0.0.1:9121/scrape?target=redis://127.0.0.1:16380",
    )
    received = listener.stdout
    assert "CLIENT" in received, (
        f"the exporter never reached the listener: {listener.stdout} {listener.stderr}"
    )
    assert login(host, "exporter")[1] not in received
    assert "AUTH" not in received.upper().split("CLIENT")[0]
