"""What an ordered ``async for`` map costs by itself, before any executor: the floor.

The paired ``map`` cell compares ``async for r in exe.map(job, range(n))`` with the
Semaphore wrapper form, which starts the same jobs but yields no results, so the ratio
holds what delivering results in input order through an async iterator costs as well as
what the executor adds. These two variants, counted by ``instructions`` (which runs every
entry of ``gctime.VARIANTS``), separate the two:

* "hand-written ordered map": the least a user would write for the same promise, an
  async generator over the Semaphore wrapper form with a window of ``workers`` tasks,
  awaited in input order;
* "the same, __anext__ checks the thread": that generator behind a class whose Python
  ``__anext__`` compares the calling thread with the last one before it resumes the
  generator, as ``MapIterator.__anext__`` does (a call from another thread's loop is
  refused with the map left intact: the check cannot live inside the generator, which
  an exception raised in it would close).

``python -m benchmarks.experiments.instructions 1000 asyncio "Semaphore, wrapper form"
"hand-written ordered map" "the same, __anext__ checks the thread" "coroexecutor map"``
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from .. import _contenders as C

__all__ = ["hand_written_map", "hand_written_map_checked"]


def _ordered(n: int, workers: int) -> AsyncIterator[int]:
    sem = asyncio.Semaphore(workers)
    create_task = asyncio.get_running_loop().create_task
    acquire, release = sem.acquire, sem.release

    async def guarded(i: int) -> int:
        try:
            return await C.map_job(i)
        finally:
            release()

    async def results() -> AsyncIterator[int]:
        window: collections.deque[asyncio.Task[int]] = collections.deque()
        inputs = iter(range(n))
        more = True
        while True:
            while more and len(window) < workers:
                i = next(inputs, None)
                if i is None:
                    more = False
                    break
                await acquire()
                window.append(create_task(guarded(i)))
            if not window:
                return
            head = window.popleft()
            if not head.done():
                await asyncio.wait((head,))
            yield head.result()

    return results()


class _ThreadChecked:
    __slots__ = ("_anext", "_thread")

    def __init__(self, results: AsyncIterator[int]) -> None:
        self._anext = results.__anext__
        self._thread = 0

    def __aiter__(self) -> _ThreadChecked:
        return self

    def __anext__(self) -> Awaitable[int]:
        if threading.get_ident() != self._thread:
            self._thread = threading.get_ident()  # (the real one checks the loop here)
        return self._anext()


async def hand_written_map(n: int, workers: int) -> int:
    async for _ in _ordered(n, workers):
        pass
    return C.completed()


async def hand_written_map_checked(n: int, workers: int) -> int:
    async for _ in _ThreadChecked(_ordered(n, workers)):
        pass
    return C.completed()


VARIANTS: dict[str, Any] = {
    "hand-written ordered map": hand_written_map,
    "the same, __anext__ checks the thread": hand_written_map_checked,
}
