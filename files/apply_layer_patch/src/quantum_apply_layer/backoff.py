"""The wait between tries of something Redis or the exchange refused: doubling from 50 ms to 1 s, and
back to 50 ms after a success.

Loops own it, not calls: the consumer goes on reading after a failure and must wake at once on stop,
which tenacity's retry-a-call model does not fit (tenacity retries the exchange's lookups instead)."""

from __future__ import annotations

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


class Backoff:
    def __init__(self) -> None:
        self._next = FIRST_DELAY_S

    def next_delay(self) -> float:
        """The wait after one more failure in a row."""
        delay = self._next
        self._next = min(delay * 2, MAX_DELAY_S)
        return delay

    def reset(self) -> None:
        self._next = FIRST_DELAY_S
