"""Send one plan with both permits and a 0.5 BTCUSDT position, wait for its result, count its orders.

Run inside the container with the release's python: `python - PLAN_ID < plan_probe.py`. Prints JSON.
Each write goes in as its writer's own Redis user (the lab's upstream logins), as in production.
"""

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
from quantum_apply_layer import keys
from quantum_apply_layer.config import DEFAULT_ENV_FILE, read_env_file
from quantum_apply_layer.sample_plans import minimal_plan, permits

env = read_env_file(DEFAULT_ENV_FILE)
exchange, plan_id = env["APPLY_EXCHANGE_URL"], sys.argv[1]
client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
upstream = read_env_file(Path("/etc/quantum/lab-upstream.env"))
planner, governor, brain = (
    redis.Redis.from_url(upstream[f"{name}_REDIS_URL"], decode_responses=True)
    for name in ("PLANNER", "RISK_GOVERNOR", "POSITION_BRAIN")
)


def call(method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        exchange + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the emulator on loopback
        return json.loads(response.read())


call("POST", "/_emulator/positions", {"BTCUSDT": 0.5})
governor_permit, p33_permit = permits(plan_id).items()
governor.set(*governor_permit, ex=60)
brain.set(*p33_permit, ex=60)
last = client.xrevrange(keys.RESULT_STREAM, count=1)
cursor = last[0][0] if last else "0-0"
planner.xadd(keys.PLAN_STREAM, minimal_plan(plan_id))
status = None
deadline = time.monotonic() + 30
while status is None and time.monotonic() < deadline:
    for _stream, entries in client.xread({keys.RESULT_STREAM: cursor}, block=1000) or []:
        for entry_id, fields in entries:
            cursor = entry_id
            if fields.get("plan_id") == plan_id:
                status = fields.get("status")
orders = call("GET", "/_emulator/orders")["orders"]
print(
    json.dumps(
        {"status": status, "orders": sum(1 for o in orders if o["clientOrderId"] == f"qh-{plan_id}-0")}
    )
)
