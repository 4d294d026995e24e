"""Prove the kill switch gates real orders, against the lab's exchange emulator only.

Run by the smoke role with the apply layer release's own python (redis-py is there). It reads the
apply layer's env file and the lab's upstream logins (one Redis user per writer: the planner, the risk
governor, the position brain, an operator), so no password appears on a command line.

1. Refuse unless APPLY_EXCHANGE_URL is a loopback address whose /_emulator/info names the emulator.
2. Switch on  -> a plan with both permits gives a `halted` result and no order at the emulator.
3. Switch off -> the same kind of plan gives an `executed` result and exactly one order.
4. Always put the switch and its reason back exactly as found (value, reason, or their absence).
Switch changes go through `quantum-apply-layer kill` as the operator's Redis user, so each one has an
audit entry and proves the operator may run it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from quantum_apply_layer.config import read_env_file
from quantum_apply_layer.keys import (
    GLOBAL_SWITCH,
    GLOBAL_SWITCH_REASON,
    PLAN_STREAM,
    RESULT_STREAM,
    symbol_switch,
)
from quantum_apply_layer.sample_plans import permits, plan_fields
from quantum_apply_layer.switch import parse_switch

SYMBOL = "BTCUSDT"
EMULATOR_NAME = "quantum-exchange-emulator"
# What `kill <command>` writes for each state, to put an equivalent state back with an audit entry.
RESTORE_COMMAND = {"running": "off", "halted": "on", "reduce_only": "reduce-only"}


class SmokeFailed(Exception):
    """The gate did not behave as the contract says, or the target is not the lab's emulator."""


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only, checked first
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only, checked first
        return json.loads(response.read())


def require_emulator(exchange_url: str) -> None:
    host = urlsplit(exchange_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SmokeFailed(
            f"APPLY_EXCHANGE_URL {exchange_url} is not a loopback address: the smoke test sends "
            "real orders and runs only against the lab's exchange emulator"
        )
    info = http_json("GET", f"{exchange_url}/_emulator/info")
    if not isinstance(info, dict) or info.get("emulator") != EMULATOR_NAME:
        raise SmokeFailed(f"{exchange_url}/_emulator/info does not name {EMULATOR_NAME}: {info!r}")


class Smoke:
    def __init__(
        self,
        upstream: dict[str, str],
        client: redis.Redis[str],
        exchange_url: str,
        cli: Path,
        timeout_s: float,
    ) -> None:
        self.operator_url = upstream["OPERATOR_REDIS_URL"]
        self.writers = {
            name: redis.Redis.from_url(upstream[f"{name}_REDIS_URL"], decode_responses=True)
            for name in ("PLANNER", "RISK_GOVERNOR", "POSITION_BRAIN", "OPERATOR")
        }
        self.client = client
        self.exchange_url = exchange_url
        self.cli = cli
        self.timeout_s = timeout_s
        self.run_id = uuid.uuid4().hex[:8]

    def kill(self, command: str, reason: str) -> None:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(self.cli), "kill", command, "--reason", reason, "--who", "ansible-smoke"],
            env={**os.environ, "REDIS_URL": self.operator_url},
            check=True,
            capture_output=True,
            text=True,
        )

    def send_plan(self, plan_id: str) -> str:
        """Position, both permits, then the plan: what the planner, P3.2 and P3.3 would do."""
        http_json("POST", f"{self.exchange_url}/_emulator/positions", {SYMBOL: 0.5})
        governor_permit, p33_permit = permits(plan_id, reason="smoke").items()
        self.writers["RISK_GOVERNOR"].set(*governor_permit, ex=60)
        self.writers["POSITION_BRAIN"].set(*p33_permit, ex=60)
        last = self.client.xrevrange(RESULT_STREAM, count=1)
        cursor = last[0][0] if last else "0-0"
        plan = plan_fields(plan_id, SYMBOL, reason_codes="smoke", timestamp=str(int(time.time())))
        self.writers["PLANNER"].xadd(PLAN_STREAM, plan)  # type: ignore[arg-type]
        return cursor

    def wait_result(self, plan_id: str, cursor: str) -> dict[str, str]:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for _stream, entries in self.client.xread({RESULT_STREAM: cursor}, block=1000) or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    if fields.get("plan_id") == plan_id:
                        return dict(fields)
        raise SmokeFailed(f"no result for plan {plan_id} on {RESULT_STREAM} within {self.timeout_s:.0f} s")

    def orders_for(self, plan_id: str) -> int:
        orders = http_json("GET", f"{self.exchange_url}/_emulator/orders")
        if isinstance(orders, dict):
            orders = orders.get("orders", [])
        return sum(1 for order in orders if order.get("clientOrderId") == f"qh-{plan_id}-0")

    def check(self, phase: str, expected_status: str, expected_orders: int) -> dict[str, Any]:
        plan_id = f"smoke-{self.run_id}-{phase}"
        result = self.wait_result(plan_id, self.send_plan(plan_id))
        orders = self.orders_for(plan_id)
        outcome = {"plan_id": plan_id, "status": result.get("status"), "orders": orders}
        if result.get("status") != expected_status or orders != expected_orders:
            raise SmokeFailed(
                f"switch {phase}: expected status {expected_status} and {expected_orders} order(s), "
                f"got {outcome} (result entry: {result})"
            )
        return outcome

    def restore(self, value: str | None, reason: str | None) -> None:
        """An audited change to the same state, then the exact original bytes (or their absence)."""
        command = RESTORE_COMMAND.get(parse_switch(value))
        if command is not None:
            self.kill(command, reason or f"smoke {self.run_id}: restore the switch as found")
        pipe = self.writers["OPERATOR"].pipeline(transaction=True)
        for key, original in ((GLOBAL_SWITCH, value), (GLOBAL_SWITCH_REASON, reason)):
            if original is None:
                pipe.delete(key)
            else:
                pipe.set(key, original)
        pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path("/etc/quantum/apply-layer.env"))
    parser.add_argument("--upstream-env-file", type=Path, default=Path("/etc/quantum/lab-upstream.env"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each result")
    args = parser.parse_args()
    env = read_env_file(args.env_file)
    exchange_url = env["APPLY_EXCHANGE_URL"].rstrip("/")
    cli = Path(sys.executable).parent / "quantum-apply-layer"
    try:
        require_emulator(exchange_url)
        client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        symbol_state = client.get(symbol_switch(SYMBOL))
        if parse_switch(symbol_state) != "running":
            raise SmokeFailed(f"the {SYMBOL} switch is {symbol_state!r}; the smoke test needs it running")
        smoke = Smoke(read_env_file(args.upstream_env_file), client, exchange_url, cli, args.timeout)
        value, reason = client.get(GLOBAL_SWITCH), client.get(GLOBAL_SWITCH_REASON)
        try:
            smoke.kill("on", f"smoke {smoke.run_id}: prove a halt stops orders")
            halted = smoke.check("halted", "halted", 0)
            smoke.kill("off", f"smoke {smoke.run_id}: prove orders resume")
            resumed = smoke.check("running", "executed", 1)
        finally:
            smoke.restore(value, reason)
    except (SmokeFailed, subprocess.CalledProcessError, OSError, KeyError, redis.RedisError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"smoke failed: {error} {detail}".strip(), file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"halted": halted, "running": resumed, "switch_restored": value, "reason_restored": reason}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
