"""Recording a handled plan: the result entry, the dead letter, the mark and the ack, in one atomic
script (record.lua), so a plan is either fully recorded and acknowledged or still pending for a retry,
and an entry replayed after it was recorded is never recorded twice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import keys
from .decoding import text
from .scripts import Scripts
from .statuses import PLACED, ResultStatus


@dataclass(frozen=True)
class Result:
    plan_id: str
    symbol: str
    status: ResultStatus
    reason: str
    steps: list[dict[str, object]] = field(default_factory=list)

    def fields(self, entry_id: str, consumer: str, mode: str, duration_s: float) -> dict[str, str]:
        placed = [step for step in self.steps if step.get("status") in PLACED]
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
    scripts: Scripts
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
        dead_letter: Mapping[bytes, bytes] | None = None,
    ) -> bool:
        """Record the entry once (record.lua): False when it had been recorded before (a replay).

        Every outcome leaves a mark, kept for the dedupe TTL: the plan id's mark (with the claim's time
        and permits when it was claimed), or, for a dead letter, whose plan id cannot be trusted, the
        entry's own mark."""
        mark = {**(claim_mark or {}), "state": "done", "status": result.status, "owner": entry_id}
        mark.setdefault("recorded_at", f"{time.time():.6f}")
        plan_mark = (
            keys.dedupe_mark(result.plan_id)
            if result.plan_id and dead_letter is None
            else keys.entry_mark(entry_id)
        )
        result_fields = _flat(result.fields(entry_id, self.consumer, self.mode, duration_s).items())
        dead_letter_fields = _flat(dead_letter.items()) if dead_letter is not None else []
        answer = await self.scripts.record(
            keys=[
                keys.RESULT_STREAM,
                keys.DLQ_STREAM,
                plan_mark,
                keys.entry_mark(entry_id),
                keys.PLAN_STREAM,
            ],
            args=[
                entry_id,
                self.group,
                self.result_maxlen,
                self.dedupe_ttl_s,
                json.dumps(mark),
                len(result_fields) // 2,
                len(dead_letter_fields) // 2,
                *result_fields,
                *dead_letter_fields,
            ],
        )
        return text(answer) == "recorded"


def _flat(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> list[str | bytes]:
    return [item for pair in pairs for item in pair]
