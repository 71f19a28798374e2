"""ThreadedLoopExecutor edge cases between threads: the deadlock guard, references held
by map, one next() at a time on a map iterator, cancel racing a job's start, and stats
racing the loop's stop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from coroexecutor import ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


def _in_new_thread(fn: Callable[[], Any]) -> tuple[int, Optional[BaseException]]:
    """Run fn() in a new thread; return that thread's ident and what fn raised."""
    outcome: list[Any] = [None, None]

    def body() -> None:
        outcome[0] = threading.get_ident()
        try:
            fn()
        except BaseException as exc:  # reported to the caller, which asserts on it
            outcome[1] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return outcome[0], outcome[1]


#
# The deadlock guard
#


async def _ident() -> int:
    return threading.get_ident()


def test_guard_ignores_a_new_thread_with_the_ended_loop_threads_ident() -> None:
    exe = ThreadedLoopExecutor()
    loop_ident = exe.submit(_ident).result(timeout=WAIT)
    exe.submit(abs, -1).result(timeout=WAIT)  # a worker thread exists, and ends, too
    exe.shutdown(wait=True)
    refused: list[BaseException] = []
    reused = 0
    for _ in range(1000):
        ident, error = _in_new_thread(lambda: exe.shutdown(wait=True))
        reused += ident == loop_ident
        if error is not None:
            refused.append(error)
    assert refused == []
    if not reused:  # pragma: no cover - depends on the platform's thread library
        pytest.skip("no new thread was given the ended loop thread's ident")


def test_guard_ignores_a_new_thread_with_an_ended_workers_ident() -> None:
    with ThreadedLoopExecutor(max_workers=1) as exe:
        worker_ident = exe.submit(threading.get_ident).result(timeout=WAIT)
        # End the only worker while the pool still lists it, with the pool's own stop
        # signal: a stale entry, as a worker that died would leave.
        pool = exe._handoff.pool
        (worker,) = pool._threads
        pool._jobs.put(None)
        worker.join(WAIT)
        assert not worker.is_alive()
        for _ in range(1000):
            ident, error = _in_new_thread(
                lambda: threading.get_ident() == worker_ident and exe.shutdown(wait=True)
            )
            if ident == worker_ident:
                assert error is None
                break
        else:  # pragma: no cover - depends on the platform's thread library
            pytest.skip("no new thread was given the ended worker's ident")


#
# map holds no result the consumer has dropped
#


class _Payload:
    """A result that can be weakly referenced."""


@pytest.mark.parametrize("buffersize", [None, 2])
@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_map_keeps_no_reference_to_a_result_the_consumer_dropped(
    loop_kind: str, kind: str, buffersize: Optional[int]
) -> None:
    next_job_started, release = threading.Event(), threading.Event()

    def make(i: int) -> _Payload:
        if i == 1:
            # With one slot, this job starts only after the executor is done with job 0.
            next_job_started.set()
            assert release.wait(WAIT)  # blocks this thread (the loop's, for "coroutine")
        return _Payload()

    async def make_async(i: int) -> _Payload:
        return make(i)

    fn: Callable[[int], Any] = make_async if kind == "coroutine" else make
    with ThreadedLoopExecutor(max_workers=1, loop_factory=lambda: new_loop(loop_kind)) as exe:
        results = exe.map(fn, range(3), buffersize=buffersize)
        first = next(results)
        assert type(first) is _Payload
        dropped = weakref.ref(first)
        del first
        assert next_job_started.wait(WAIT)
        alive = dropped() is not None  # by reference counts alone: no gc.collect()
        release.set()
        assert [type(r) for r in results] == [_Payload, _Payload]
    assert not alive


#
# One next() at a time on a map iterator
#

ALREADY_EXECUTING = "map() iterator already executing: call next() from one thread at a time"


def _square(x: int) -> int:
    return x * x


def test_a_concurrent_next_on_a_map_iterator_is_refused_and_changes_nothing(
    loop_kind: str,
) -> None:
    inside, leave = threading.Event(), threading.Event()

    def inputs() -> Iterator[int]:
        yield 0
        inside.set()  # pulled by the consumer's first next(), in the consumer's thread
        assert leave.wait(WAIT)
        yield from range(1, 5)

    first: concurrent.futures.Future[int] = concurrent.futures.Future()
    with ThreadedLoopExecutor(max_workers=2, loop_factory=lambda: new_loop(loop_kind)) as exe:
        results = exe.map(_square, inputs(), buffersize=1)
        consumer = threading.Thread(target=lambda: first.set_result(next(results)))
        consumer.start()
        try:
            assert inside.wait(WAIT)  # the consumer's next() has not returned
            with pytest.raises(ValueError, match=re.escape(ALREADY_EXECUTING)):
                next(results)
        finally:
            leave.set()
            consumer.join(WAIT)
        assert not consumer.is_alive()
        # The refused call cancelled nothing: every result once, in order.
        assert first.result(timeout=WAIT) == 0
        assert list(results) == [1, 4, 9, 16]


def test_threads_sharing_a_map_iterator_get_each_result_once_in_order() -> None:
    # Two next() calls on the same head both returned its result and both dropped it
    # from the iterator: a result twice, the next one lost, and IndexError at the end.
    n, threads = 20000, 4
    done, all_done = [0], threading.Event()
    lock = threading.Lock()

    def count(x: int) -> int:
        with lock:
            done[0] += 1
            if done[0] == n:
                all_done.set()
        return x

    start = threading.Barrier(threads, timeout=WAIT)
    got: list[list[int]] = [[] for _ in range(threads)]

    def consume(i: int) -> None:
        start.wait()
        while True:
            try:
                got[i].append(next(results))
            except StopIteration:
                return
            except ValueError as exc:  # another thread's next() is under way: again
                if str(exc) != ALREADY_EXECUTING:
                    raise

    with ThreadedLoopExecutor(max_workers=4) as exe:
        results = exe.map(count, range(n))
        # Every result in: no next() waits, so the threads contend for it all along,
        # switched between as often as the interpreter can (as CPython's own thread
        # stress tests do).
        assert all_done.wait(WAIT * 4)  # 20000 jobs on a loaded machine
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as consumers:
                for future in [consumers.submit(consume, i) for i in range(threads)]:
                    future.result(timeout=WAIT)
        finally:
            sys.setswitchinterval(interval)
    assert sorted(r for results_of_one in got for r in results_of_one) == list(range(n))
    assert all(mine == sorted(mine) for mine in got)  # each thread's in input order


#
# A job whose cancel() returned True never starts
#


@pytest.mark.parametrize("max_per_second", [None, 1000.0])
def test_a_job_cancelled_before_its_first_step_never_starts(
    loop_kind: str, max_per_second: Optional[float]
) -> None:
    loop_blocked, release_loop = threading.Event(), threading.Event()
    first_running, second_cancelled = threading.Event(), threading.Event()
    second_ran = threading.Event()

    async def block_loop() -> None:
        loop_blocked.set()
        assert release_loop.wait(WAIT)  # blocks the loop thread: the next submits pile up

    async def first() -> None:
        first_running.set()
        assert second_cancelled.wait(WAIT)  # the loop stays here until cancel() returned

    async def second() -> None:
        second_ran.set()

    with ThreadedLoopExecutor(
        max_workers=4,
        loop_factory=lambda: new_loop(loop_kind),
        max_per_second=max_per_second,
        burst=None if max_per_second is None else 10,
    ) as exe:
        blocker = exe.submit(block_loop)
        assert loop_blocked.wait(WAIT)
        # Handed off together, so one turn of the loop creates both tasks; the first
        # task's step then runs while the second's is due next.
        futures = [blocker, exe.submit(first), exe.submit(second)]
        release_loop.set()
        assert first_running.wait(WAIT)
        assert futures[2].cancel()  # its task exists, but has not run
        second_cancelled.set()
        done, _ = concurrent.futures.wait(futures, timeout=WAIT)
        assert done == set(futures)
    assert not second_ran.is_set()


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_a_job_cancelled_during_its_last_step_counts_as_cancelled(
    loop_kind: str, ends: str
) -> None:
    # cancel() returns True while the job runs its last step on the loop thread; the
    # task.cancel() it posts arrives after the job has returned (or raised). The caller
    # was told "cancelled": the job counts as cancelled, and under fail-fast its error
    # cancels nothing else. (Seen as "succeeded" while another thread set max_workers.)
    in_last_step, cancel_returned = threading.Event(), threading.Event()
    other_started = threading.Event()

    async def last_step() -> int:
        in_last_step.set()
        assert cancel_returned.wait(WAIT)  # holds the loop thread: no await from here
        if ends == "raises":
            raise ValueError("after cancel() returned True")
        return 42

    async def other() -> str:
        other_started.set()
        return "other"

    with ThreadedLoopExecutor(loop_factory=lambda: new_loop(loop_kind)) as exe:
        future = exe.submit(last_step)
        assert in_last_step.wait(WAIT)
        assert future.cancel()
        cancel_returned.set()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
        assert exe.submit(other).result(timeout=WAIT) == "other"  # no fail-fast
    stats = exe.stats
    assert (stats.cancelled, stats.succeeded, stats.failed) == (1, 1, 0)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("exit_by", ["exception", "grace period"])
def test_an_awaitable_returned_after_the_running_jobs_were_cancelled_is_cancelled(
    loop_kind: str, exit_by: str
) -> None:
    # A blocking call returned an awaitable after the exit had cancelled the running jobs:
    # the loop awaited it with nobody left to cancel it, and the exit hung (the cancel
    # reached only awaitables that had arrived before it). Found in a session's test.
    other_started, late_started, other_cancelled = (threading.Event() for _ in range(3))
    awaited: list[str] = []

    async def other() -> None:
        other_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            other_cancelled.set()  # the running jobs have been cancelled
            raise

    async def park() -> None:
        awaited.append("park")  # under an eager task factory its first step may run
        await asyncio.Event().wait()

    def late() -> Any:
        late_started.set()
        assert other_cancelled.wait(WAIT)
        return park()  # reaches the loop after the cancel

    def body(exe: ThreadedLoopExecutor) -> tuple[Any, Any]:
        running = exe.submit(other)
        returning = exe.submit(late)
        assert other_started.wait(WAIT) and late_started.wait(WAIT)  # both running
        if exit_by == "grace period":
            exe.shutdown(timeout=0.001)  # the grace period ends with both running
        return running, returning

    make = functools.partial(
        ThreadedLoopExecutor, max_workers=2, loop_factory=functools.partial(new_loop, loop_kind)
    )
    if exit_by == "exception":
        with pytest.raises(KeyError), make() as exe:
            running, returning = body(exe)
            raise KeyError
    else:
        exe = make()
        running, returning = body(exe)
    assert running.cancelled() and returning.cancelled()
    assert exe.stats.cancelled == 2
    assert awaited in ([], ["park"])  # never awaited past its first step, and closed


def test_a_rate_queued_job_cancelled_while_being_queued_never_starts() -> None:
    ran = threading.Event()
    cancelled: list[bool] = []

    async def noop() -> None:
        pass

    async def mark() -> None:
        ran.set()

    # burst=1: the first job takes the only token, so the next waits a second for one.
    with ThreadedLoopExecutor(max_per_second=1, burst=1) as exe:
        scheduler = exe._handoff.scheduler
        scheduler.core = _CancelWhileQueuing(scheduler.core, mark, cancelled)  # type: ignore[assignment]
        exe.submit(noop).result(timeout=WAIT)
        future = exe.submit(mark)
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
    assert cancelled == [True]
    assert not ran.is_set()


class _CancelWhileQueuing:
    """The bridge's core, but submit_nowait(job) is followed by cancel() from another
    thread: after the loop checked the job's future, before it recorded the job."""

    def __init__(self, core: Any, job: Any, cancelled: list[bool]) -> None:
        self._core, self._job, self._cancelled = core, job, cancelled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def submit_nowait(self, wrapper: Any, *args: Any) -> Any:
        queued = self._core.submit_nowait(wrapper, *args)
        future, fn = args[0], args[1]  # the wrapper's arguments: (future, fn, args, kwargs)
        if fn is self._job:
            thread = threading.Thread(target=lambda: self._cancelled.append(future.cancel()))
            thread.start()
            thread.join(WAIT)
            assert not thread.is_alive()
        return queued


#
# stats never waits on a stopped loop
#


class _PausingLock:
    """The bridge's lock; the first time ``thread`` releases it, ``pause()`` runs."""

    def __init__(self, lock: Any, pause: Callable[[], None]) -> None:
        self._lock, self._pause = lock, pause
        self.thread: Optional[threading.Thread] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()
        if self.thread is not None and threading.current_thread() is self.thread:
            self.thread = None
            self._pause()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def test_stats_returns_when_the_loop_stops_while_it_is_being_read() -> None:
    stats_paused, loop_stopping, stats_resumed = (threading.Event() for _ in range(3))
    got: list[Any] = []

    def pause_stats() -> None:  # in the stats thread, after its first locked section
        stats_paused.set()
        assert loop_stopping.wait(WAIT)
        stats_resumed.set()

    exe = ThreadedLoopExecutor()
    bridge = exe._handoff
    assert exe.submit(abs, -1).result(timeout=WAIT) == 1
    stop_pool = bridge.pool.stop

    def stop_pool_later() -> None:  # on the loop thread: it drains no more from here on
        loop_stopping.set()
        assert stats_resumed.wait(WAIT)
        stop_pool()

    bridge.pool.stop = stop_pool_later  # type: ignore[method-assign]
    lock = bridge._lock = _PausingLock(bridge._lock, pause_stats)  # type: ignore[assignment]
    reader = threading.Thread(target=lambda: got.append(exe.stats), daemon=True)
    lock.thread = reader
    reader.start()
    assert stats_paused.wait(WAIT)
    exe.shutdown(wait=False)
    reader.join(WAIT)
    assert not reader.is_alive()
    exe.shutdown(wait=True)
    (stats,) = got
    assert (stats.submitted, stats.succeeded, stats.running) == (1, 1, 0)
