"""Done callback vs in-line completion for a minimal executor core (stdlib only).

``python -m benchmarks.experiments.completion [max_workers] [rounds]``; run it under
each Python of interest (``eager_start`` needs 3.12+). 200,000 no-op jobs; times are
relative to the Semaphore wrapper form on the same Python.

In-line completion runs the slot hand-back in a wrapper coroutine, in the job's last
step, instead of in a done callback (one fewer loop iteration per job). The wrapper
must already be inside its ``try`` when the task exists, or a task cancelled before its
first step would leak its slot (as the Semaphore wrapper form does): it is either
advanced by hand to a first ``yield`` (any Python) or started eagerly (3.12+).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import types
from typing import Any

from ._harness import compare, print_table

N = 200_000
_done = 0


async def job(i: int) -> None:
    global _done
    await asyncio.sleep(0)
    _done += 1


async def sem_wrapper(n: int, w: int) -> None:
    sem = asyncio.Semaphore(w)
    create_task = asyncio.get_running_loop().create_task
    acquire, release = sem.acquire, sem.release

    async def guarded(i: int) -> None:
        try:
            await job(i)
        finally:
            release()

    for i in range(n):
        await acquire()
        create_task(guarded(i))
    for _ in range(w):
        await acquire()


@types.coroutine
def _first_yield() -> Any:
    yield


class Core:
    """Slots, FIFO waiters and a running set: the part every executor design shares."""

    def __init__(self, w: int, mode: str) -> None:
        self.free = self.w = w
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.running: set[asyncio.Future[Any]] = set()
        self.loop = asyncio.get_running_loop()
        self.mode = mode

    async def submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        if self.free > 0 and not self.waiters:
            self.free -= 1
        else:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter
        coro = fn(*args)
        cell: list[Any] = [None]
        if self.mode == "callback":
            task = self.loop.create_task(coro)
            task.add_done_callback(self._on_done)
        elif self.mode == "advanced":
            runner = self._run(coro, cell, advanced=True)
            runner.send(None)  # now inside the try: a cancel before the first step is seen
            task = cell[0] = self.loop.create_task(runner)
        else:
            task = asyncio.Task(self._run(coro, cell, advanced=False), loop=self.loop,
                                eager_start=True)  # type: ignore[call-arg]
            cell[0] = task
        if not task.done():
            self.running.add(task)
        return task

    def _release(self, task: Any) -> None:
        self.running.discard(task)
        self.free += 1
        waiters = self.waiters
        while self.free > 0 and waiters:
            self.free -= 1
            waiters.popleft().set_result(None)

    def _on_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            task.exception()  # what a policy reads
        self._release(task)

    async def _run(self, coro: Any, cell: list[Any], advanced: bool) -> Any:
        try:
            if advanced:
                await _first_yield()
            result = await coro
        except BaseException:
            coro.close()  # cancelled before it started: no "never awaited" warning
            self._release(cell[0] or asyncio.current_task())
            raise
        self._release(cell[0] or asyncio.current_task())
        return result

    async def drain(self) -> None:
        while self.free != self.w:
            await asyncio.sleep(0)


def core(mode: str, w: int) -> Any:
    async def run() -> None:
        exe = Core(w, mode)
        for i in range(N):
            await exe.submit(job, i)
        await exe.drain()

    return run


def main() -> None:
    w = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7

    def reset_and(run: Any) -> Any:
        async def wrapped() -> None:
            global _done
            _done = 0
            await run()

        return wrapped

    variants = {
        "Semaphore, wrapper form": reset_and(lambda: sem_wrapper(N, w)),
        "core + done callback": reset_and(core("callback", w)),
        "core + in-line, wrapper advanced by hand": reset_and(core("advanced", w)),
    }
    if sys.version_info >= (3, 12):
        variants["core + in-line, eager_start"] = reset_and(core("eager", w))
    times = compare(variants, reps, lambda: _done, N)
    print(f"Python {sys.version.split()[0]}, {N:,} no-op jobs, max_workers={w:,}")
    print_table(times, "Semaphore, wrapper form", N)


if __name__ == "__main__":
    main()
