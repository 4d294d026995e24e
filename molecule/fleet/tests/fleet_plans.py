"""Send plans with both permits, one every 0.1 s, and print every result entry each plan got.

Run on an apply host with the release's python: `python - PREFIX COUNT < fleet_plans.py`. It reads
REDIS_URL from the apply layer's env file, so the password never appears on a command line. Prints JSON
{plan_id: [{"status": ..., "consumer": ...}, ...]} read from the whole result stream once every plan has
a result, a little later, so a second result for a plan would be seen too.
"""

import json
import sys
import time
from pathlib import Path

import redis

RESULT_STREAM = "quantum:stream:apply.result"
env = dict(
    line.split("=", 1)
    for line in Path("/etc/quantum/apply-layer.env").read_text().splitlines()
    if line and not line.startswith("#") and "=" in line
)
client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
prefix, count = sys.argv[1], int(sys.argv[2])
plan_ids = [f"{prefix}-{number}" for number in range(count)]

last = client.xrevrange(RESULT_STREAM, count=1)
start = last[0][0] if last else "0-0"
for plan_id in plan_ids:
    # What P3.2 and P3.3 would grant; spaced out so both blocked consumers get a turn.
    client.set(f"quantum:permit:{plan_id}", json.dumps({"granted": True}), ex=60)
    client.set(
        f"quantum:permit:p33:{plan_id}",
        json.dumps({"allow": True, "safe_close_qty": 0.01, "exchange_position_amt": 0.5, "reason": "fleet"}),
        ex=60,
    )
    client.xadd(
        "quantum:stream:apply.plan",
        {
            "plan_id": plan_id,
            "symbol": "BTCUSDT",
            "action": "FULL_CLOSE_PROPOSED",
            "decision": "EXECUTE",
            "steps": json.dumps([{"step": "CLOSE_FULL", "type": "market_reduce_only", "pct": 100}]),
        },
    )
    time.sleep(0.1)


def results() -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {plan_id: [] for plan_id in plan_ids}
    for _entry_id, fields in client.xrange(RESULT_STREAM, min=f"({start}"):
        if fields.get("plan_id") in found:
            found[fields["plan_id"]].append({"status": fields["status"], "consumer": fields["consumer"]})
    return found


deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(results().values()):
    time.sleep(1)
time.sleep(3)
print(json.dumps(results()))
