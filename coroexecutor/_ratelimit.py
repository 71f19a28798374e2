"""RateLimiter: the token bucket behind max_per_second and burst."""

from __future__ import annotations

from typing import Callable

__all__ = ["RateLimiter"]


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

    def reconfigure(self, rate: float, burst: int) -> None:
        """Change the rate and the burst from now on. Tokens earned so far (at the old
        rate) are kept, up to the new burst."""
        self._refill()
        self._rate = rate
        self._burst = burst
        if self._tokens > burst:
            self._tokens = float(burst)

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

    def put_back(self) -> None:
        """Return a token taken for a start that did not happen (its waiter was cancelled
        as it was granted its slot): the next start may use it. Never above ``burst``."""
        self._refill()
        tokens = self._tokens + 1.0
        self._tokens = tokens if tokens < self._burst else float(self._burst)

    def delay(self) -> float:
        """Seconds until the next token arrives (0 if one is available now)."""
        self._refill()
        missing = _ONE - self._tokens
        return 0.0 if missing <= 0 else missing / self._rate
