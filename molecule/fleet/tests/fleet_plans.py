"""Plans written as the upstream planner writes them, and what became of them, seen from an apply host.

Run with the release's python: `python -c "$(cat fleet_plans.py)" COMMAND ARGS...`. It reads REDIS_URL
from the apply layer's env file (to read) and the lab's upstream logins (to write plans and permits as the
planner, the risk governor and the position brain), so no password appears on a command line. Commands:

  send PREFIX COUNT EVERY_S  plans PREFIX-0 .. PREFIX-<COUNT-1>, one every EVERY_S seconds;
                             prints {"written": ..., "refused": write attempts Redis refused}
  send-entries JSON          each field map of the JSON list as it is (malformed plans, say)
  outcomes PREFIX            {"plans": {entry id: fields}, "results": [...], "dead_letters": [...]}
                             for the plan entries whose plan_id or fault_case starts with PREFIX-

Each entry is written with both permits for its plan_id, so a plan that should never run (a malformed
one) would be executed, and seen, if the apply layer let it through.
"""

import json
import sys
import time
from pathlib import Path

import redis
from quantum_apply_layer.config import DEFAULT_ENV_FILE, read_env_file
from quantum_apply_layer.keys import DLQ_STREAM, PLAN_STREAM, RESULT_STREAM
from quantum_apply_layer.sample_plans import minimal_plan, permits

# Permits outlive the longest outage the fault tests cause, so a plan caught in one still runs after it.
PERMIT_TTL_S = 600
GIVE_UP_AFTER_S = 300
RESULT_FIELDS = ("plan_id", "status", "reason", "consumer", "entry_id")

env = read_env_file(DEFAULT_ENV_FILE)
client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True, socket_timeout=5)
upstream = read_env_file(Path("/etc/quantum/lab-upstream.env"))
planner, governor, brain = (
    redis.Redis.from_url(upstream[f"{name}_REDIS_URL"], decode_responses=True, socket_timeout=5)
    for name in ("PLANNER", "RISK_GOVERNOR", "POSITION_BRAIN")
)


def identity(fields: dict[str, str]) -> tuple[str | None, str | None]:
    return fields.get("plan_id"), fields.get("fault_case")


def written_already(fields: dict[str, str]) -> bool:
    return any(identity(found) == identity(fields) for _id, found in client.xrevrange(PLAN_STREAM, count=100))


def write(fields: dict[str, str]) -> int:
    """Permits, then the entry, as plain commands: upstream is three services (P3.2, P3.3, the planner),
    so nothing ties their writes into one transaction. While Redis refuses, tried again as upstream would;
    an attempt whose answer was lost may have gone through, so it is looked for before writing it again.
    Returns the attempts refused."""
    refused = 0
    deadline = time.monotonic() + GIVE_UP_AFTER_S
    while True:
        try:
            if refused and written_already(fields):
                return refused
            if fields.get("plan_id"):
                # What P3.2 and P3.3 would grant. No P3.3 view of the position: each apply host has
                # its own emulator, whose position every close changes.
                governor_permit, p33_permit = permits(
                    fields["plan_id"], position=None, reason="fleet"
                ).items()
                governor.set(*governor_permit, ex=PERMIT_TTL_S)
                brain.set(*p33_permit, ex=PERMIT_TTL_S)
            planner.xadd(PLAN_STREAM, fields)
            return refused
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            refused += 1
            time.sleep(0.5)


def send(prefix: str, count: int, every_s: float) -> dict[str, int]:
    refused = 0
    for number in range(count):
        refused += write(minimal_plan(f"{prefix}-{number}"))
        time.sleep(every_s)  # spaced out so both blocked consumers get a turn
    return {"written": count, "refused": refused}


def outcomes(prefix: str) -> dict[str, object]:
    def ours(fields: dict[str, str]) -> bool:
        return any((value or "").startswith(f"{prefix}-") for value in identity(fields))

    plans = {entry_id: fields for entry_id, fields in client.xrange(PLAN_STREAM) if ours(fields)}
    results = [
        {name: fields.get(name, "") for name in RESULT_FIELDS}
        for _id, fields in client.xrange(RESULT_STREAM)
        if fields.get("entry_id") in plans
    ]
    dead_letters = [fields for _id, fields in client.xrange(DLQ_STREAM) if ours(fields)]
    return {"plans": plans, "results": results, "dead_letters": dead_letters}


command, args = sys.argv[1], sys.argv[2:]
if command == "send":
    print(json.dumps(send(args[0], int(args[1]), float(args[2]))))
elif command == "send-entries":
    print(json.dumps({"refused": sum(write(fields) for fields in json.loads(args[0]))}))
elif command == "outcomes":
    print(json.dumps(outcomes(args[0])))
else:
    sys.exit(f"unknown command {command!r}: send, send-entries or outcomes")
