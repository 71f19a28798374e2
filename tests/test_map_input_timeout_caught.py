"""An async input that holds ``asyncio.timeout()`` open across its ``yield`` and catches
its expiry is read on (docs/semantics.rst, "How a map reads an async input").

Each timeout is expired by hand (``reschedule()`` to now) at a point the test chooses:
the reader waits for room (the window full of parked jobs).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

pytestmark = [
    pytest.mark.timeout(15),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11"),
]


class Expiring:
    """An input of ``count`` items, each yielded inside its own ``asyncio.timeout(None)``
    (``scopes``, by item) that the input catches, going on with the next item. ``at[i]``
    is set as it yields item i (the reader takes it in that step), ``expired`` lists the
    items whose yield met the expiry, ``ended`` is set once it has returned. With
    ``catch=k``, it catches only the first k expiries: the next one is its error."""

    def __init__(self, count: int, *, catch: int | None = None) -> None:
        self.count, self.catch = count, catch
        self.scopes: dict[int, Any] = {}
        self.at = [asyncio.Event() for _ in range(count)]
        self.expired: list[int] = []
        self.ended = asyncio.Event()

    async def __call__(self) -> AsyncIterator[int]:
        for i in range(self.count):
            try:
                async with asyncio.timeout(None) as scope:
                    self.scopes[i] = scope
                    self.at[i].set()
                    yield i
            except TimeoutError:
                if len(self.expired) == self.catch:
                    raise
                self.expired.append(i)
        self.ended.set()

    async def expire(self, i: int) -> None:
        """Expire item i's timeout as the input waits at its yield, and wait until the
        reader has thrown that in and the input has yielded again or returned."""
        await self.at[i].wait()  # it yielded i: the reader has taken it and waits for room
        self.scopes[i].reschedule(asyncio.get_running_loop().time())  # expires now
        await (self.at[i + 1].wait() if i + 1 < self.count else self.ended.wait())


async def _collect(results: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in results]


@pytest.mark.parametrize("expiries", [1], ids=["end"])
async def test_an_input_ending_at_an_expiry_leaves_no_reference_cycle(
    loop_kind: str, expiries: int
) -> None:
    """Regression: the input returned at its last expiry. On Python 3.12 and later its
    finished frame keeps pass_on's frame (its f_back), and so the cancel thrown in, whose
    traceback holds that frame: a cycle. Nothing of the map's reading is left for the
    cycle collector once the map ends."""
    source = Expiring(expiries + 1)
    release = asyncio.Event()

    async def job(n: int) -> int:
        if n == 0:
            for i in range(1, expiries + 1):  # it returns at the last one
                await source.expire(i)
            release.set()
        await release.wait()
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        await exe.submit(job, -1)  # warm up: lazily created objects
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            assert await _collect(exe.map(job, source())) == list(range(expiries + 1))
            gc.collect()
            assert not gc.garbage
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
