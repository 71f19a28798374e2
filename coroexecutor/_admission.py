"""Admission helpers: the start-rate limiter and the backlog entry for queued jobs."""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any, Callable

__all__ = ["Queued", "RateLimiter", "check_max_workers", "check_rate", "check_seconds"]


class Queued:
    """A job accepted by submit_nowait() while every slot was taken, waiting in the backlog."""

    __slots__ = ("args", "ctx", "fn", "future", "kwargs")

    def __init__(
        self,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The job runs in a copy of the submitter's context, as asyncio.create_task()
        # would have given it had it started at once.
        self.ctx = contextvars.copy_context()


# A token counts as arrived a hair early: clocks are floats, and a timer set for the exact
# arrival time must not wake up to find 0.9999999 of a token and sleep again.
_ONE = 1.0 - 1e-9


class RateLimiter:
    """A token bucket that caps how many jobs *start* per second.

    The bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second;
    starting a job takes one. So after an idle period, up to ``burst`` jobs may start at
    once, and over any window of ``t`` seconds at most ``burst + rate * t`` jobs start.
    With the default ``burst=1`` starts are spaced at least ``1 / rate`` apart.
    """

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)  # a fresh limiter starts full: the first burst goes at once
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        tokens = self._tokens + (now - self._stamp) * self._rate
        self._tokens = tokens if tokens < self._burst else float(self._burst)
        self._stamp = now
        return now

    def try_take(self) -> bool:
        """Take a token if one is available now."""
        self._refill()
        if self._tokens >= _ONE:
            self._tokens -= 1.0
            return True
        return False

    def delay(self) -> float:
        """Seconds until the next token arrives (0 if one is available now)."""
        self._refill()
        missing = _ONE - self._tokens
        return 0.0 if missing <= 0 else missing / self._rate


def check_rate(max_per_second: object, burst: object) -> tuple[float | None, int]:
    """Validate max_per_second and burst; return them normalised."""
    if burst is not None and (type(burst) is not int or burst < 1):
        raise ValueError(f"burst must be an int greater than 0 (got {burst!r})")
    if max_per_second is None:
        if burst is not None:
            raise ValueError("burst requires max_per_second")
        return None, 1
    if isinstance(max_per_second, bool) or not isinstance(max_per_second, (int, float)):
        raise TypeError(f"max_per_second must be a number or None (got {max_per_second!r})")
    if not (max_per_second > 0 and math.isfinite(max_per_second)):
        raise ValueError(f"max_per_second must be greater than 0 (got {max_per_second!r})")
    return float(max_per_second), 1 if burst is None else burst


def check_seconds(name: str, value: object) -> float | None:
    """Validate an optional, positive, finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None (got {value!r})")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be greater than 0 (got {value!r})")
    return float(value)


def check_max_workers(value: object) -> int:
    """Validate max_workers as the stdlib does, plus a type check."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_workers must be an int (got {value!r})")
    if value <= 0:
        raise ValueError("max_workers must be greater than 0")
    return value
