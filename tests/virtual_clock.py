"""An event loop whose clock jumps ahead to the next timer whenever nothing is ready.

Tests of backoffs, deadlines and rates then run in no real time and see exact times:
``await asyncio.sleep(30)`` returns at once, with ``loop.time()`` exactly 30 later. Time
moves only while the loop would otherwise sleep, so every callback, task step and I/O
event that is ready runs first; ordering is as on a real loop with very slow timers.

Only for tests whose jobs are coroutines: while a thread works (a blocking job on the
bridge, ``to_thread``), the loop would jump to its next timer instead of waiting for the
thread. With no timer pending at all, it waits for real I/O as usual. (So the suite's
in-loop hang watchdog, a timer, is off on this loop; pytest-timeout still applies.)
"""

from __future__ import annotations

import asyncio
import math
import selectors
from typing import Any

__all__ = ["VirtualClockLoop"]


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of sleeping until a timer is due, advances the clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer pending: wait for real I/O (a thread's wake-up)
            return self._real.select(None)
        self._loop.advance(timeout)  # the next timer is due now
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time, starting at 0."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> Any:
        # A positive delay too small to move the clock (1e-16 s after 2 s of virtual time
        # is no time at all in a float) must still move it: a caller that waits "until
        # the token arrives" would otherwise find the same time again, and again. A real
        # clock moves on its own between the calls.
        now = self._virtual_now
        if delay > 0 and now + delay <= now:
            delay = math.nextafter(now, math.inf) - now
        return super().call_later(delay, callback, *args, context=context)
