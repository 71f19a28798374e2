"""Every contender of every workload, each a function that runs one batch of jobs.

A contender takes ``(n, workers)``, runs ``n`` jobs with at most ``workers`` of them at
once, and returns how many jobs it saw complete; the caller fails loudly when that is
not ``n``. Third-party and coroexecutor imports happen inside the contenders, so a
child process imports only what it measures and a missing library skips one row.

Every async contender runs the same job, :func:`job`: one ``await asyncio.sleep(0)``
(a no-op that still yields to the loop once) and a counter increment. Ordered-map
contenders run :func:`map_job`, which returns its input so the consumer can check the
order. Blocking contenders run :func:`blocking_job` or :func:`blocking_sleep_job`.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
import types
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "BASELINES",
    "BLOCKING",
    "BLOCKING_SLEEP",
    "MAP",
    "STRETCH",
    "THROUGHPUT",
    "Contender",
    "blocking_job",
    "job",
    "map_job",
]

_done = 0  # jobs completed in this process since the last reset()


def reset() -> None:
    global _done
    _done = 0


def completed() -> int:
    return _done


async def job(i: int) -> None:
    global _done
    await asyncio.sleep(0)
    _done += 1


async def map_job(i: int) -> int:
    global _done
    await asyncio.sleep(0)
    _done += 1
    return i


def blocking_job(i: int) -> int:
    return i


def blocking_sleep_job(i: int) -> int:
    time.sleep(0.001)
    return i


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[..., Any]  # async (n, workers) -> int, or sync for blocking workloads
    needs: tuple[str, ...] = ()  # modules it imports: probed before the runs
    note: str = ""  # one line for the report (what is special about this contender)


#
# Async throughput and memory: n no-op jobs, at most `workers` at once
#


async def unbounded_gather(n: int, workers: int) -> int:
    create_task = asyncio.get_running_loop().create_task
    await asyncio.gather(*[create_task(job(i)) for i in range(n)])
    return _done


async def semaphore_callback(n: int, workers: int) -> int:
    # The producer takes a slot, starts the job and keeps no handle; a done callback
    # gives the slot back. Taking every slot at the end waits for the last jobs.
    sem = asyncio.Semaphore(workers)
    create_task = asyncio.get_running_loop().create_task
    acquire = sem.acquire

    def release(_: object) -> None:
        sem.release()

    for i in range(n):
        await acquire()
        create_task(job(i)).add_done_callback(release)
    for _ in range(workers):
        await acquire()
    return _done


async def semaphore_wrapper(n: int, workers: int) -> int:
    # Same back-pressure, but the job's own wrapper coroutine gives the slot back.
    sem = asyncio.Semaphore(workers)
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
    for _ in range(workers):
        await acquire()
    return _done


async def semaphore_in_task(n: int, workers: int) -> int:
    # The textbook form: every task created up front, each waits inside `async with sem`.
    # Concurrency of the jobs is bounded, the number of tasks (and memory) is not.
    sem = asyncio.Semaphore(workers)
    create_task = asyncio.get_running_loop().create_task

    async def guarded(i: int) -> None:
        async with sem:
            await job(i)

    await asyncio.gather(*[create_task(guarded(i)) for i in range(n)])
    return _done


async def queue_worker_pool(n: int, workers: int) -> int:
    # `workers` long-lived tasks pull job arguments from a bounded queue: no Task per job.
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=workers)

    async def worker() -> None:
        get = queue.get
        while True:
            i = await get()
            if i is None:
                return
            await job(i)

    create_task = asyncio.get_running_loop().create_task
    pool = [create_task(worker()) for _ in range(workers)]
    put = queue.put
    for i in range(n):
        await put(i)
    for _ in range(workers):
        await put(None)
    await asyncio.gather(*pool)
    return _done


async def aiometer_run_on_each(n: int, workers: int) -> int:
    import aiometer

    await aiometer.run_on_each(job, range(n), max_at_once=workers)
    return _done


async def asyncio_pool_spawn(n: int, workers: int) -> int:
    from asyncio_pool import AioPool  # type: ignore[import-untyped]

    async with AioPool(size=workers) as pool:
        spawn = pool.spawn
        for i in range(n):
            await spawn(job(i))
    return _done


async def aiojobs_spawn(n: int, workers: int) -> int:
    import aiojobs

    scheduler = aiojobs.Scheduler(limit=workers)  # default pending_limit=10000
    spawn = scheduler.spawn
    for i in range(n):
        await spawn(job(i))
    await scheduler.wait_and_close(timeout=3600)
    return _done


async def anyio_limiter(n: int, workers: int) -> int:
    import anyio

    # acquire_on_behalf_of lets the producer wait for a slot (back-pressure, bounded
    # memory) and the job give it back; `async with limiter` inside the task would
    # create every task up front instead.
    limiter = anyio.CapacityLimiter(workers)
    acquire, release = limiter.acquire_on_behalf_of, limiter.release_on_behalf_of

    async def guarded(i: int, token: object) -> None:
        try:
            await job(i)
        finally:
            release(token)

    async with anyio.create_task_group() as tg:
        start_soon = tg.start_soon
        for i in range(n):
            token = object()
            await acquire(token)
            start_soon(guarded, i, token)
    return _done


async def ours_submit(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    async with CoroutineExecutor(max_workers=workers) as exe:
        submit = exe.submit
        for i in range(n):
            await submit(job, i)
    return _done


async def ours_map(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    async with CoroutineExecutor(max_workers=workers) as exe:
        async for _ in exe.map(job, range(n)):
            pass
    return _done


async def ours_map_unordered(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    async with CoroutineExecutor(max_workers=workers) as exe:
        async for _ in exe.map_unordered(job, range(n)):
            pass
    return _done


async def ours_submit_retry(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor, Retry

    async with CoroutineExecutor(max_workers=workers, retry=Retry()) as exe:
        submit = exe.submit
        for i in range(n):
            await submit(job, i)
    return _done


async def ours_map_retry(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor, Retry

    async with CoroutineExecutor(max_workers=workers, retry=Retry()) as exe:
        async for _ in exe.map(job, range(n)):
            pass
    return _done


KEYS = 1_000  # the key= variants spread their jobs over this many keys, round robin


def _key_of(i: int) -> int:
    return i % KEYS


async def ours_submit_keyed(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    # max_per_key=8: the cost of the keyed start path; with W jobs in flight over 1,000
    # keys round robin, a key's room is rarely what a job waits for.
    async with CoroutineExecutor(max_workers=workers, key=_key_of, max_per_key=8) as exe:
        submit = exe.submit
        for i in range(n):
            await submit(job, i)
    return _done


async def ours_map_keyed(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    async with CoroutineExecutor(max_workers=workers, key=_key_of, max_per_key=8) as exe:
        async for _ in exe.map(job, range(n)):
            pass
    return _done


THROUGHPUT = [
    Contender("gather", "create_task + gather, unbounded (floor)", unbounded_gather,
              note="no limit at all: every task exists at once"),
    Contender("sem_callback", "Semaphore + create_task, done callback", semaphore_callback),
    Contender("sem_wrapper", "Semaphore + create_task, try/finally wrapper", semaphore_wrapper),
    Contender("sem_in_task", "Semaphore inside each task + gather", semaphore_in_task,
              note="bounds running jobs, not tasks: every task exists at once"),
    Contender("queue_pool", "worker tasks on an asyncio.Queue", queue_worker_pool,
              note="no Task per job"),
    Contender("aiometer", "aiometer.run_on_each", aiometer_run_on_each, ("aiometer",)),
    Contender("asyncio_pool", "asyncio-pool AioPool.spawn", asyncio_pool_spawn, ("asyncio_pool",)),
    Contender("aiojobs", "aiojobs Scheduler.spawn", aiojobs_spawn, ("aiojobs",)),
    Contender("anyio", "anyio TaskGroup + CapacityLimiter", anyio_limiter, ("anyio",)),
    Contender("ours_submit", "coroexecutor submit", ours_submit, ("coroexecutor",)),
    Contender("ours_map", "coroexecutor map", ours_map, ("coroexecutor",)),
    Contender("ours_map_unordered", "coroexecutor map_unordered", ours_map_unordered,
              ("coroexecutor",)),
]

# Our executor with an option set, each paired with the plain form it must stay close to
# (the issues' budgets: per-job time at most this ratio to the plain form, nothing failing).
OPTIONS = [
    Contender("ours_submit_retry", "coroexecutor submit, retry=Retry()", ours_submit_retry,
              ("coroexecutor",)),
    Contender("ours_map_retry", "coroexecutor map, retry=Retry()", ours_map_retry,
              ("coroexecutor",)),
    Contender("ours_submit_keyed", "coroexecutor submit, key= (1,000 keys)", ours_submit_keyed,
              ("coroexecutor",)),
    Contender("ours_map_keyed", "coroexecutor map, key= (1,000 keys)", ours_map_keyed,
              ("coroexecutor",)),
]
OPTION_BASES = {
    "ours_submit_retry": ("ours_submit", 1.03),  # issue 19
    "ours_map_retry": ("ours_map", 1.03),
    "ours_submit_keyed": ("ours_submit", 1.30),  # issue 20
    "ours_map_keyed": ("ours_map", 1.30),
}

# Forms of the stdlib pattern: the baseline of each configuration is the fastest of them.
SEMAPHORE_FORMS = ("sem_callback", "sem_wrapper", "sem_in_task")
OURS = ("ours_submit", "ours_map", "ours_map_unordered")
PEERS = ("aiometer", "asyncio_pool", "aiojobs", "anyio")

#
# Ordered map over a lazy generator: results consumed in input order
#


def _inputs(n: int) -> Any:
    return (i for i in range(n))  # a generator: nothing may call len() on it


def _check(expected: int, got: int) -> int:
    if got != expected:
        raise AssertionError(f"result out of order: got {got}, expected {expected}")
    return expected + 1


async def map_stdlib_window(n: int, workers: int) -> int:
    # The hand-written stdlib form: a deque of at most `workers` tasks, awaited in order.
    create_task = asyncio.get_running_loop().create_task
    window: collections.deque[asyncio.Task[int]] = collections.deque()
    expected = 0
    for i in _inputs(n):
        if len(window) >= workers:
            expected = _check(expected, await window.popleft())
        window.append(create_task(map_job(i)))
    while window:
        expected = _check(expected, await window.popleft())
    return expected


async def map_ours(n: int, workers: int) -> int:
    from coroexecutor import CoroutineExecutor

    expected = 0
    async with CoroutineExecutor(max_workers=workers) as exe:
        async for r in exe.map(map_job, _inputs(n)):
            expected = _check(expected, r)
    return expected


async def map_asyncio_pool(n: int, workers: int) -> int:
    from asyncio_pool import AioPool

    expected = 0
    async with AioPool(size=workers) as pool:
        for r in await pool.map(map_job, _inputs(n)):
            expected = _check(expected, r)
    return expected


async def map_aiometer(n: int, workers: int) -> int:
    import functools

    import aiometer

    calls = [functools.partial(map_job, i) for i in _inputs(n)]  # run_all needs a list
    expected = 0
    for r in await aiometer.run_all(calls, max_at_once=workers):
        expected = _check(expected, r)
    return expected


MAP = [
    Contender("window", "stdlib deque of tasks, awaited in order", map_stdlib_window),
    Contender("ours_map", "coroexecutor map", map_ours, ("coroexecutor",)),
    Contender("asyncio_pool", "asyncio-pool AioPool.map", map_asyncio_pool, ("asyncio_pool",),
              note="returns a list: every future is kept until the end"),
    Contender("aiometer", "aiometer.run_all", map_aiometer, ("aiometer",),
              note="needs a list of callables: the input is materialised"),
]

#
# Stretch goal of issue 7: worker-task pools (no Task per job) for an ordered map
#


async def _pool_map(n: int, workers: int, run_one: Callable[..., Any]) -> int:
    """Ordered map on `workers` long-lived tasks: results land in a reorder buffer."""
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=workers)
    results: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    expected = 0

    async def worker() -> None:
        nonlocal expected, ready
        get = queue.get
        while True:
            i = await get()
            if i is None:
                return
            results[i] = await run_one(i)
            if i == expected and not ready.done():
                ready.set_result(None)

    pool = [loop.create_task(worker()) for _ in range(workers)]
    put = queue.put
    for i in _inputs(n):
        await put(i)
        while expected in results:
            expected = _check(expected, results.pop(expected))
    for _ in range(workers):
        await put(None)
    while expected < n:
        if expected in results:
            expected = _check(expected, results.pop(expected))
        else:
            ready = loop.create_future()
            await ready
    await asyncio.gather(*pool)
    return expected


async def stretch_shared_context(n: int, workers: int) -> int:
    # Every job runs in its worker's context and task: what "no Task per job" costs
    # when the per-job guarantees are dropped.
    return await _pool_map(n, workers, map_job)


@types.coroutine
def _wait_done(fut: asyncio.Future[Any]) -> Any:
    # Suspend the worker task on the job's future without reading its result, as
    # Task.__step does for the coroutine it drives.
    fut._asyncio_future_blocking = True
    yield fut


@types.coroutine
def _bare_yield() -> Any:
    yield


async def _trampoline(coro: Any, ctx: contextvars.Context) -> Any:
    """Drive `coro` inside the current (worker) task with every step run in `ctx`: a
    Python re-implementation of what asyncio.Task.__step does in C."""
    send, throw, run = coro.send, coro.throw, ctx.run
    error: BaseException | None = None
    while True:
        try:
            yielded = run(send, None) if error is None else run(throw, error)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            if yielded is None:
                await _bare_yield()
            else:
                yielded._asyncio_future_blocking = False
                await _wait_done(yielded)
        except BaseException as exc:  # the job was cancelled: deliver it to the job
            error = exc


async def stretch_context_per_job(n: int, workers: int) -> int:
    # Keeps the per-job contextvars copy of a Task by running each step of the job in
    # its own context copy (made where the producer reads the input, as create_task does).
    copy_context = contextvars.copy_context

    def run_one(i: int) -> Any:
        return _trampoline(map_job(i), copy_context())

    return await _pool_map(n, workers, run_one)


STRETCH = [
    Contender("sem_wrapper", "Semaphore + create_task, try/finally wrapper", semaphore_wrapper),
    Contender("ours_map", "coroexecutor map", map_ours, ("coroexecutor",)),
    Contender("pool_shared", "worker pool, jobs share the worker's task and context",
              stretch_shared_context,
              note="breaks per-job contextvars, current_task() and per-job cancellation"),
    Contender("pool_trampoline", "worker pool, each step run in a per-job context copy",
              stretch_context_per_job,
              note="per-job context kept by a Python trampoline; current_task() still shared"),
]


#
# Blocking callables: n sync calls on 32 worker threads
#


def _submit_all(exe: Any, fn: Callable[[int], int], n: int) -> int:
    futures = [exe.submit(fn, i) for i in range(n)]
    expected = 0
    for future in futures:
        expected = _check(expected, future.result())
    return expected


def _threadpool(fn: Callable[[int], int]) -> Callable[[int, int], int]:
    def run(n: int, workers: int) -> int:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as exe:
            return _submit_all(exe, fn, n)

    return run


def _loop_executor(fn: Callable[[int], int]) -> Callable[[int, int], int]:
    def run(n: int, workers: int) -> int:
        from coroexecutor import LoopExecutor

        with LoopExecutor(max_workers=workers) as exe:
            return _submit_all(exe, fn, n)

    return run


BLOCKING = [
    Contender("threadpool", "ThreadPoolExecutor", _threadpool(blocking_job)),
    Contender("ours", "coroexecutor LoopExecutor", _loop_executor(blocking_job),
              ("coroexecutor",)),
]
BLOCKING_SLEEP = [
    Contender("threadpool", "ThreadPoolExecutor", _threadpool(blocking_sleep_job)),
    Contender("ours", "coroexecutor LoopExecutor", _loop_executor(blocking_sleep_job),
              ("coroexecutor",)),
]

WORKLOADS: dict[str, list[Contender]] = {
    "throughput": THROUGHPUT,
    "memory": THROUGHPUT,
    "map": MAP,
    "blocking": BLOCKING,
    "blocking_sleep": BLOCKING_SLEEP,
    "stretch": STRETCH,
    "options": OPTIONS,  # measured by the paired workload only
}

# The row every other row of a workload is compared with. For throughput and memory it is
# chosen per configuration: the fastest of SEMAPHORE_FORMS.
BASELINES = {
    "map": "window",
    "stretch": "sem_wrapper",
    "blocking": "threadpool",
    "blocking_sleep": "threadpool",
}


def find(workload: str, key: str) -> Contender:
    for contender in WORKLOADS[workload]:
        if contender.key == key:
            return contender
    raise KeyError(f"no contender {key!r} in workload {workload!r}")
