"""What an ordered ``async for`` map costs by itself, before any executor.

The paired ``map`` cell compares ``async for r in exe.map(job, range(n))`` with the
Semaphore wrapper form, which starts the same jobs but yields no results. These variants,
counted by ``instructions`` (which runs every entry of ``gctime.VARIANTS``), separate what
delivering results in input order costs from what the executor adds:

* "window generator": the least ordered map, an async generator that keeps a window of
  ``workers`` tasks of the job itself (no wrapper, no Semaphore: the window is the bound)
  and awaits them in input order;
* "the same, with a runner per job": each task runs a runner coroutine around the job
  that counts its end in the job's last step, as an executor's in-line completion does
  (it gives the slot back there);
* "the same, __anext__ checks the thread": that generator behind a class whose Python
  ``__anext__`` compares the calling thread with the last one before it resumes the
  generator, as ``MapIterator.__anext__`` does (a call from another thread's loop is
  refused with the map left intact: the check cannot live inside the generator, which
  an exception raised in it would close);
* "hand-written ordered map, Semaphore and asyncio.wait": a first, heavier hand-written
  form, kept for the record: the wrapper form's Semaphore and wrapper coroutine around
  each job, and ``asyncio.wait`` on the head.

``python -m benchmarks.experiments.instructions 1000 asyncio "window generator" "the same,
with a runner per job" "the same, __anext__ checks the thread" "hand-written ordered map,
Semaphore and asyncio.wait" "coroexecutor map"``
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from .. import _contenders as C

__all__ = ["VARIANTS"]


def _window(n: int, workers: int, *, runner: bool) -> AsyncIterator[int]:
    create_task = asyncio.get_running_loop().create_task
    job = C.map_job
    ended = [0]

    async def run(i: int) -> int:
        try:
            return await job(i)
        finally:
            ended[0] += 1  # where an executor gives the job's slot back

    start = run if runner else job

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
                window.append(create_task(start(i)))
            if not window:
                return
            head = window.popleft()
            if not head.done():
                await head
            yield head.result()

    return results()


def _with_semaphore(n: int, workers: int) -> AsyncIterator[int]:
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


async def _drain(results: AsyncIterator[int]) -> int:
    async for _ in results:
        pass
    return C.completed()


async def window_generator(n: int, workers: int) -> int:
    return await _drain(_window(n, workers, runner=False))


async def window_with_runner(n: int, workers: int) -> int:
    return await _drain(_window(n, workers, runner=True))


async def window_checked(n: int, workers: int) -> int:
    return await _drain(_ThreadChecked(_window(n, workers, runner=True)))


async def semaphore_and_wait(n: int, workers: int) -> int:
    return await _drain(_with_semaphore(n, workers))


VARIANTS: dict[str, Any] = {
    "window generator": window_generator,
    "the same, with a runner per job": window_with_runner,
    "the same, __anext__ checks the thread": window_checked,
    "hand-written ordered map, Semaphore and asyncio.wait": semaphore_and_wait,
}
