"""Where coroexecutor's per-job time goes: a ladder from the Semaphore patterns, through
minimal executor cores with one piece added per rung, up to ``submit`` and ``map``.

``python -m benchmarks.experiments.ladder [max_workers] [rounds] [uvloop] [nogc]``
(200,000 no-op jobs, in one process, interleaved; times relative to the Semaphore
wrapper form). ``uvloop`` runs every variant on uvloop; ``nogc`` turns the cyclic
garbage collector off while a variant runs.
"""

from __future__ import annotations

import asyncio
import collections
import sys
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


async def sem_callback(n: int, w: int) -> None:
    sem = asyncio.Semaphore(w)
    create_task = asyncio.get_running_loop().create_task

    def release(_: object) -> None:
        sem.release()

    for i in range(n):
        await sem.acquire()
        create_task(job(i)).add_done_callback(release)
    for _ in range(w):
        await sem.acquire()


class Mini:
    """Slots + FIFO waiters + create_task + one done callback; optional extra pieces."""

    def __init__(self, w: int, running_set: bool, outcome: bool) -> None:
        self.free = self.w = w
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.running: set[asyncio.Future[Any]] = set()
        self.use_set, self.outcome = running_set, outcome
        self.succeeded = 0

    async def submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        if self.free > 0 and not self.waiters:
            self.free -= 1
        else:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter
        task = self.loop.create_task(fn(*args))
        if self.use_set:
            self.running.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Future[Any]) -> None:
        if self.use_set:
            self.running.discard(task)
        self.free += 1
        if self.outcome and not task.cancelled() and task.exception() is None:
            self.succeeded += 1
        waiters = self.waiters
        while self.free > 0 and waiters:
            self.free -= 1
            waiters.popleft().set_result(None)


def mini(w: int, running_set: bool = False, outcome: bool = False) -> Any:
    async def run() -> None:
        exe = Mini(w, running_set, outcome)
        for i in range(N):
            await exe.submit(job, i)
        while exe.free != w:
            await asyncio.sleep(0)

    return run


def main() -> None:
    from coroexecutor import CoroutineExecutor

    w = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    flags = set(sys.argv[3:])
    if flags - {"uvloop", "nogc"}:
        raise SystemExit(f"unknown options: {sorted(flags - {'uvloop', 'nogc'})}")
    new_loop = None
    if "uvloop" in flags:
        import uvloop

        new_loop = uvloop.new_event_loop

    async def ours_submit() -> None:
        async with CoroutineExecutor(max_workers=w) as exe:
            submit = exe.submit
            for i in range(N):
                await submit(job, i)

    async def ours_map() -> None:
        async with CoroutineExecutor(max_workers=w) as exe:
            async for _ in exe.map(job, range(N)):
                pass

    def reset_and(run: Any) -> Any:
        async def wrapped() -> None:
            global _done
            _done = 0
            await run()

        return wrapped

    variants = {
        "Semaphore, wrapper form": reset_and(lambda: sem_wrapper(N, w)),
        "Semaphore, done-callback form": reset_and(lambda: sem_callback(N, w)),
        "core: slots+waiters+task+done callback": reset_and(mini(w)),
        "core + running set": reset_and(mini(w, running_set=True)),
        "core + running set + outcome, counters": reset_and(mini(w, True, True)),
        "coroexecutor submit": reset_and(ours_submit),
        "coroexecutor map": reset_and(ours_map),
    }
    times = compare(variants, reps, lambda: _done, N, new_loop, collect="nogc" not in flags)
    extra = "".join(f", {flag}" for flag in sorted(flags))
    print(f"Python {sys.version.split()[0]}, {N:,} no-op jobs, max_workers={w:,}{extra}")
    print_table(times, "Semaphore, wrapper form", N)


if __name__ == "__main__":
    main()
