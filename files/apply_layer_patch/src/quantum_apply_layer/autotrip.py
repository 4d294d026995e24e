"""Auto-trip: the service halts itself when something is persistently wrong: exchange failures or refused
stops in a row, an IP ban by the exchange (HTTP 418), positions that disagree, dead letters.

A condition must hold for `auto_trip_checks` checks in a row (one check a second), so one blip never
halts trading. Tripping sets the global switch through the same audited script as an operator; it
latches: nothing here ever turns the switch off, only an operator's `kill off --reason` does.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from . import metrics
from .config import Settings
from .scripts import Scripts
from .switch import SwitchState, read_global_switch, set_switch

log = logging.getLogger(__name__)
DEAD_LETTER_WINDOW_S = 60.0


class AutoTrip:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        settings: Settings,
        error_streak: Callable[[], int],
        oldest_mismatch_s: Callable[[], float],
        reset: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._settings = settings
        self._error_streak = error_streak
        self._oldest_mismatch_s = oldest_mismatch_s
        self._reset = reset
        self._held: collections.Counter[str] = collections.Counter()
        self._dead_letters: collections.deque[tuple[float, float]] = collections.deque()

    def conditions(self, now: float) -> dict[str, str]:
        """Each enabled condition that holds now, with what an operator should read in the reason."""
        held = {}
        settings = self._settings
        if settings.auto_trip_exchange_errors and self._error_streak() >= settings.auto_trip_exchange_errors:
            held["exchange_errors"] = f"{self._error_streak()} exchange failures in a row"
        oldest = self._oldest_mismatch_s()
        if settings.auto_trip_mismatch_s and oldest >= settings.auto_trip_mismatch_s:
            held["position_mismatch"] = f"P3.3 and the exchange disagree for {oldest:.0f}s"
        banned = metrics.REGISTRY.get_sample_value("apply_exchange_ban_remaining_seconds") or 0.0
        if banned > 0:
            # Even an emergency close cannot go out: an operator must know, and plans must stop piling up.
            held["exchange_ban"] = f"the exchange banned this IP (HTTP 418) for {banned:.0f}s more"
        recent = self._dead_letters_in_window(now)
        if settings.auto_trip_dead_letters_per_min and recent > settings.auto_trip_dead_letters_per_min:
            held["dead_letters"] = f"{recent:.0f} dead letters in the last minute"
        return held

    async def check(self) -> None:
        held = self.conditions(time.time())
        for condition in list(self._held):
            if condition not in held:
                del self._held[condition]
        for condition in held:
            self._held[condition] += 1
        tripping = [c for c, count in self._held.items() if count >= self._settings.auto_trip_checks]
        if not tripping:
            return
        condition = tripping[0]
        self._held.clear()
        self._reset()
        if (await read_global_switch(self._redis)).state is SwitchState.HALTED:
            return  # already halted: nothing to add, and no audit noise
        reason = (
            f"auto-trip: {condition}: {held[condition]} ({self._settings.auto_trip_checks} checks in a row)"
        )
        await set_switch(
            self._redis, self._scripts, "on", reason, f"auto-trip@{self._settings.consumer_name}"
        )
        metrics.apply_auto_trip_total.labels(condition).inc()
        log.error("halted the global switch itself", extra={"condition": condition, "reason": reason})

    def _dead_letters_in_window(self, now: float) -> float:
        total = sum(
            sample.value
            for family in metrics.apply_dead_letters_total.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        self._dead_letters.append((now, total))
        while self._dead_letters and self._dead_letters[0][0] < now - DEAD_LETTER_WINDOW_S:
            self._dead_letters.popleft()
        return total - self._dead_letters[0][1]
