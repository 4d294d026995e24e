"""The words a result and a step outcome are recorded with. Other systems read them from the result
stream (CONTRACT.md): the values never change, only where they are spelt."""

from __future__ import annotations

from enum import StrEnum


class ResultStatus(StrEnum):
    """A handled plan's outcome, the `status` field of `quantum:stream:apply.result`."""

    EXECUTED = "executed"
    PARTIAL = "partial"  # some orders went out, or the exchange filled less than asked
    HALTED = "halted"
    REDUCE_ONLY_BLOCKED = "reduce_only_blocked"
    BLOCKED = "blocked"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    ERROR = "error"
    DEAD_LETTER = "dead_letter"


class StepStatus(StrEnum):
    """One step's outcome, inside the result's `steps`."""

    SENT = "sent"
    FOUND = "found"  # sent before a crash or a timeout, found at the exchange by its client id
    NOTHING_TO_DO = "nothing_to_do"
    BLOCKED = "blocked"
    HELD_BACK = "held_back"  # kept home by the exchange's limits: nothing was sent
    HALTED = "halted"  # not sent: a switch was set while the earlier steps went out
    REJECTED = "rejected"
    ERROR = "error"


PLACED = frozenset({StepStatus.SENT, StepStatus.FOUND})
# A step after which the later ones are not tried: they assumed this one worked (fail closed).
STOPS_THE_PLAN = frozenset({StepStatus.REJECTED, StepStatus.ERROR, StepStatus.BLOCKED, StepStatus.HELD_BACK})
