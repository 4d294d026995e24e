"""A Redis failure while a plan is in hand: counted, shown on apply_redis_up, and turned into
RedisUnavailable, which leaves the plan pending (nothing more is sent for it) until Redis answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import RedisError

from . import metrics


class RedisUnavailable(Exception):
    """Redis failed while a plan was in hand: the plan stays pending and nothing more is sent for it."""


def redis_failed(error: BaseException) -> None:
    """Count a Redis failure (an OSError is one too: the connection broke)."""
    if isinstance(error, RedisError | OSError):
        metrics.apply_redis_up.set(0)
        metrics.apply_redis_errors_total.inc()


@contextlib.contextmanager
def redis_guard(what: str) -> Iterator[None]:
    """Inside it, a Redis error becomes RedisUnavailable("<what> failed: ...")."""
    try:
        yield
    except (RedisError, OSError) as error:
        redis_failed(error)
        raise RedisUnavailable(f"{what} failed: {error}") from error
