"""Write plans through Sentinel while a test fails the primary over, then report what became of each.

Run on the apply host with the release's python: `python - PREFIX COUNT INTERVAL_S < sentinel_probe.py`.
Reads REDIS_URL (user, password, TLS) and REDIS_SENTINELS from the apply layer's env file, and the lab's
upstream logins (the planner, the risk governor, the position brain write as themselves), so no password
appears on a command line. A write that fails (no primary yet) is retried, bounded, so the probe loses
no plan itself. Prints JSON: per plan when it was written and every result entry it got (with the
entry's time in ms), whether its claim (dedupe mark) is on the primary afterwards, and every write error.
"""

import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from quantum_apply_layer.config import DEFAULT_ENV_FILE, read_env_file
from quantum_apply_layer.keys import PLAN_STREAM, RESULT_STREAM, dedupe_mark
from quantum_apply_layer.runtime import tls_options
from quantum_apply_layer.sample_plans import minimal_plan, permits
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

env = read_env_file(DEFAULT_ENV_FILE)
url = urlsplit(env["REDIS_URL"])
# TLS to the Sentinels and the primary, as the apply layer derives it from REDIS_URL.
tls = tls_options(env["REDIS_URL"])
sentinel = Sentinel(
    [(host, int(port)) for host, port in (item.rsplit(":", 1) for item in env["REDIS_SENTINELS"].split(","))],
    sentinel_kwargs={"username": url.username, "password": url.password, "socket_timeout": 0.5, **tls},
)


def primary_as(login: str):  # type: ignore[no-untyped-def]
    """The primary, as the Sentinels name it now, logged in with a URL's user and password."""
    parts = urlsplit(login)
    return sentinel.master_for(
        env["REDIS_SENTINEL_SERVICE"],
        username=parts.username,
        password=parts.password,
        decode_responses=True,
        socket_timeout=2,
        **tls,
    )


upstream = read_env_file(Path("/etc/quantum/lab-upstream.env"))
client = primary_as(env["REDIS_URL"])
planner, governor, brain = (
    primary_as(upstream[f"{name}_REDIS_URL"]) for name in ("PLANNER", "RISK_GOVERNOR", "POSITION_BRAIN")
)
prefix, count, interval_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
plan_ids = [f"{prefix}-{number}" for number in range(count)]
write_errors: list[str] = []


def until_written(write) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while True:
        try:
            write()
            return time.time()
        except RedisError as error:
            write_errors.append(f"{time.time():.3f} {type(error).__name__}: {error}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def write_plan(plan_id: str) -> None:
    """Both permits, then the plan, each by its own writer as upstream does (three services, so no
    transaction ties them). Retried after an error, so a plan whose XADD answer was lost in a failover is
    looked for before it is written again."""
    governor_permit, p33_permit = permits(plan_id, position=100, reason="sentinel").items()
    governor.set(*governor_permit, ex=120)
    brain.set(*p33_permit, ex=120)
    if any(fields.get("plan_id") == plan_id for _id, fields in planner.xrevrange(PLAN_STREAM, count=50)):
        return
    planner.xadd(PLAN_STREAM, minimal_plan(plan_id))


def results() -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {plan_id: [] for plan_id in plan_ids}
    for entry_id, fields in client.xrange(RESULT_STREAM, min="-"):
        if fields.get("plan_id") in found:
            found[fields["plan_id"]].append(
                {
                    "status": fields["status"],
                    "reason": fields.get("reason", ""),
                    "at_ms": int(entry_id.split("-")[0]),
                }
            )
    return found


written = {}
for plan_id in plan_ids:
    written[plan_id] = until_written(lambda plan_id=plan_id: write_plan(plan_id))
    time.sleep(interval_s)

deadline = time.monotonic() + 120
found = {}
while time.monotonic() < deadline:
    try:
        found = results()
        if all(found.values()):
            break
    except RedisError:
        pass
    time.sleep(1)
time.sleep(3)  # a second result for a plan would show up now
found = results()
marks = {plan_id: bool(client.exists(dedupe_mark(plan_id))) for plan_id in plan_ids}
print(
    json.dumps(
        {
            "plans": {
                p: {"written": written[p], "results": found[p], "claim_kept": marks[p]} for p in plan_ids
            },
            "write_errors": write_errors,
        }
    )
)
