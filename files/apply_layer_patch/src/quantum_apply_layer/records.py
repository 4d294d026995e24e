"""Recording a handled plan: the result entry, the dead letter, the dedupe mark and the ack, in one
MULTI/EXEC, so a plan is either fully recorded and acknowledged or still pending for a retry."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from . import keys


@dataclass(frozen=True)
class Result:
    plan_id: str
    symbol: str
    status: str
    reason: str
    steps: list[dict[str, object]] = field(default_factory=list)

    def fields(self, entry_id: str, consumer: str, mode: str, duration_s: float) -> dict[str, str]:
        placed = [step for step in self.steps if step.get("status") in {"sent", "found"}]
        return {
            "plan_id": self.plan_id,
            "symbol": self.symbol,
            "status": self.status,
            "reason": self.reason,
            "order_ids": ",".join(str(step.get("exchange_order_id", "")) for step in placed),
            "client_order_ids": ",".join(str(step.get("client_order_id", "")) for step in placed),
            "steps": json.dumps(self.steps, separators=(",", ":")),
            "entry_id": entry_id,
            "consumer": consumer,
            "mode": mode,
            "duration_ms": f"{duration_s * 1000:.3f}",
            "ts": f"{time.time():.3f}",
        }


@dataclass(frozen=True)
class Recorder:
    redis: Redis
    group: str
    consumer: str
    mode: str
    result_maxlen: int
    dedupe_ttl_s: int

    async def record(
        self,
        entry_id: str,
        result: Result,
        duration_s: float,
        claim_mark: Mapping[str, object] | None = None,
        dead_letter: Mapping[str, str] | None = None,
    ) -> None:
        """`claim_mark` is the dedupe mark of a claimed plan; it is kept, marked done, for its TTL."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if dead_letter is not None:
                pipe.xadd(keys.DLQ_STREAM, _stream_fields(dead_letter))
            pipe.xadd(
                keys.RESULT_STREAM,
                _stream_fields(result.fields(entry_id, self.consumer, self.mode, duration_s)),
                maxlen=self.result_maxlen,
                approximate=True,
            )
            if claim_mark is not None:
                # A plan id seen again while the mark lives is a duplicate; the claim's time and
                # permits stay in it for whoever investigates.
                done = json.dumps({**claim_mark, "state": "done", "status": result.status})
                pipe.set(keys.dedupe_mark(result.plan_id), done, ex=self.dedupe_ttl_s)
            pipe.xack(keys.PLAN_STREAM, self.group, entry_id)
            await pipe.execute()


def _stream_fields(fields: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return dict(fields.items())
