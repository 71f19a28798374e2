"""ThreadedLoopExecutor beyond the stdlib contract: coroutine jobs, cancellation, limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from coroexecutor import JobTimeoutError, LoopExecutor, Retry, ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture
def exe(loop_kind: str) -> Iterator[ThreadedLoopExecutor]:
    """An executor on each loop kind: default, eager task factory (3.12+), uvloop."""
    executor = ThreadedLoopExecutor(max_workers=4, loop_factory=lambda: new_loop(loop_kind))
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def park_until_cancelled(started: threading.Event, saw_cancel: threading.Event) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        saw_cancel.set()
        raise


def test_alias_is_the_same_class() -> None:
    assert LoopExecutor is ThreadedLoopExecutor
    assert issubclass(ThreadedLoopExecutor, concurrent.futures.Executor)


def test_coroutine_job_runs_on_the_loop_thread(exe: ThreadedLoopExecutor) -> None:
    async def where() -> str:
        asyncio.get_running_loop()  # raises unless on a running loop
        return threading.current_thread().name

    assert exe.submit(where).result(timeout=WAIT).endswith("_loop")
    assert exe.submit(double, 21).result(timeout=WAIT) == 42


def test_blocking_job_runs_in_a_worker_thread(exe: ThreadedLoopExecutor) -> None:
    name = exe.submit(lambda: threading.current_thread().name).result(timeout=WAIT)
    assert re.fullmatch(r"ThreadedLoopExecutor-\d+_worker_\d+", name)


def test_thread_name_prefix_names_loop_and_workers() -> None:
    with ThreadedLoopExecutor(thread_name_prefix="fetcher") as exe:
        assert (
            exe.submit(lambda: threading.current_thread().name).result(WAIT) == "fetcher_worker_0"
        )

        async def loop_name() -> str:
            return threading.current_thread().name

        assert exe.submit(loop_name).result(WAIT) == "fetcher_loop"


def test_lowering_max_workers_keeps_the_idle_threads_and_bounds_the_running_jobs() -> None:
    # docs/bridge.rst: lowering the limit bounds the jobs running at once; the threads
    # already started stay, idle, and no more are ever started than the highest limit.
    def workers() -> int:
        return sum(t.name.startswith("lowered_worker") for t in threading.enumerate())

    with ThreadedLoopExecutor(max_workers=4, thread_name_prefix="lowered") as exe:
        four = threading.Barrier(4, timeout=WAIT)
        assert [f.result(WAIT) for f in [exe.submit(four.wait) for _ in range(4)]]
        assert workers() == 4
        exe.max_workers = 2
        lock = threading.Lock()
        running, most = 0, 0
        two = threading.Barrier(2, timeout=WAIT)

        def job() -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            two.wait()  # two run at once, or this breaks
            with lock:
                running -= 1

        for future in [exe.submit(job) for _ in range(8)]:
            future.result(WAIT)
        assert most == 2
        assert workers() == 4


def test_callables_returning_awaitables_run_on_the_loop(exe: ThreadedLoopExecutor) -> None:
    assert exe.submit(lambda: double(5)).result(timeout=WAIT) == 10
    assert exe.submit(functools.partial(double, 6)).result(timeout=WAIT) == 12

    class Fetcher:
        async def __call__(self, x: int) -> int:
            return x + 1

    assert exe.submit(Fetcher(), 1).result(timeout=WAIT) == 2


def test_coroutine_object_gets_a_type_error_with_the_fix(exe: ThreadedLoopExecutor) -> None:
    with pytest.raises(TypeError, match=re.escape("submit(fetch, url)")):
        exe.submit(double(1))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="must be a callable"):
        exe.submit(42)  # type: ignore[call-overload]


def test_map_with_a_coroutine_object_names_map_and_starts_nothing(
    exe: ThreadedLoopExecutor,
) -> None:
    coro = double(1)
    message = (
        "map() expects an async function and its arguments, not a coroutine object"
        f" (got {coro!r})\n"
        "  wrong: map(fetch(url), urls)\n"
        "  right: map(fetch, urls)"
    )
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        exe.map(coro, [1, 2])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=re.escape("map() fn must be a callable (got 42)")):
        exe.map(42, [1, 2])  # type: ignore[call-overload]
    assert exe.stats.submitted == 0


async def numbers(n: int) -> AsyncIterator[int]:
    yield n


class Numbers:
    async def __call__(self, n: int) -> AsyncIterator[int]:
        yield n

    async def method(self, n: int) -> AsyncIterator[int]:
        yield n


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (numbers, "numbers"),
        (functools.partial(numbers), "functools.partial(numbers, ...)"),
        (Numbers().method, "Numbers.method"),
        (Numbers(), "Numbers"),
    ],
    ids=["function", "partial", "method", "async-call"],
)
def test_async_generator_function_is_refused_before_anything_runs(
    exe: ThreadedLoopExecutor, fn: Any, name: str
) -> None:
    # A worker thread would have returned the generator object as the job's result.
    # The message names fn without a __repr__ (a partial's arguments may be secrets).
    for where, call in (("submit", lambda: exe.submit(fn, 1)), ("map", lambda: exe.map(fn, [1]))):
        message = (
            f"{where}() expects an async function, not an async generator function (got {name})"
        )
        with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
            call()
    assert exe.stats.submitted == 0
    assert exe.submit(double, 2).result(timeout=WAIT) == 4  # the executor still works


def test_jobs_run_in_a_copy_of_the_submitters_context(exe: ThreadedLoopExecutor) -> None:
    async def read_and_set() -> str:
        value = request_id.get()
        request_id.set("changed by the job")
        return value

    def read_blocking() -> str:
        return request_id.get()

    def submit_from_thread(value: str) -> tuple[str, str]:
        request_id.set(value)
        return (exe.submit(read_and_set).result(WAIT), exe.submit(read_blocking).result(WAIT))

    with concurrent.futures.ThreadPoolExecutor(2) as callers:
        results = list(callers.map(submit_from_thread, ["a", "b"]))
    assert results == [("a", "a"), ("b", "b")]
    assert request_id.get() == "unset"  # the job's change stayed in its copy


def test_cancel_reaches_a_running_coroutine_job(exe: ThreadedLoopExecutor) -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    future = exe.submit(park_until_cancelled, started, saw_cancel)
    assert started.wait(WAIT)
    assert future.running()
    assert future.cancel()
    assert future.cancelled()
    assert not future.running()
    assert saw_cancel.wait(WAIT)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=WAIT)


def test_cancel_of_a_queued_coroutine_job_means_it_never_runs() -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    ran = threading.Event()

    async def mark() -> None:
        ran.set()

    with ThreadedLoopExecutor(max_workers=1) as exe:
        blocker = exe.submit(park_until_cancelled, started, saw_cancel)
        assert started.wait(WAIT)
        queued = exe.submit(mark)
        assert not queued.running()
        assert queued.cancel()
        blocker.cancel()
        done, _ = concurrent.futures.wait([blocker, queued], timeout=WAIT)
        assert done == {blocker, queued}
    assert not ran.is_set()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine_job_fails_only_its_future(
    exe: ThreadedLoopExecutor, exc_type: type[BaseException]
) -> None:
    async def raiser() -> None:
        raise exc_type("from the job")

    future = exe.submit(raiser)
    with pytest.raises(exc_type, match="from the job"):
        future.result(timeout=WAIT)
    assert exe.submit(double, 4).result(timeout=WAIT) == 8  # the loop thread survived


def test_max_workers_bounds_both_kinds_together() -> None:
    limit = 3
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()
    full = threading.Event()

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == limit:
                full.set()

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    async def coroutine_job() -> None:
        enter()
        try:
            while not release.is_set():
                await asyncio.sleep(0.001)
        finally:
            leave()

    def blocking_job() -> None:
        enter()
        try:
            assert release.wait(WAIT)
        finally:
            leave()

    with ThreadedLoopExecutor(max_workers=limit) as exe:
        futures = [exe.submit(coroutine_job if i % 2 else blocking_job) for i in range(12)]
        assert full.wait(WAIT)
        assert exe.stats.running == limit
        assert exe.stats.queued == 12 - limit
        release.set()
        for future in futures:
            future.result(timeout=WAIT)
    assert peak == limit


def test_blocking_threads_default_to_the_stdlib_cap() -> None:
    cap = min(32, (os.cpu_count() or 1) + 4)
    barrier = threading.Barrier(cap, timeout=WAIT)
    with ThreadedLoopExecutor() as exe:
        assert exe.max_workers == 1000
        futures = [exe.submit(barrier.wait) for _ in range(cap)]
        assert sorted(f.result(timeout=WAIT) for f in futures) == list(range(cap))
        names = {
            exe.submit(lambda: threading.current_thread().name).result(WAIT) for _ in range(50)
        }
    assert len(names) <= cap


def _every_default_thread_busy(
    exe: ThreadedLoopExecutor,
) -> tuple[int, Callable[[], None], threading.Event, list[concurrent.futures.Future[None]]]:
    """In the default mode (max_workers=None: 1000 slots, ThreadPoolExecutor's default
    number of threads), one job holding each thread until ``release`` is set: the number
    of threads, the holding job (to submit more of it), ``release`` and the holders."""
    threads = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    running, release = threading.Semaphore(0), threading.Event()

    def hold() -> None:
        running.release()
        assert release.wait(WAIT)

    holders = [exe.submit(hold) for _ in range(threads)]
    for _ in range(threads):
        assert running.acquire(timeout=WAIT)
    return threads, hold, release, holders


@pytest.mark.parametrize("steps", [(), (3,)], ids=["default", "via 3"])
def test_raising_max_workers_after_jobs_waited_for_a_thread_starts_threads(
    steps: tuple[int, ...],
) -> None:
    # Found by a docs-only tester: in the default mode (1000 slots, fewer threads) each
    # job that waited for a busy worker left an idle token behind when that worker took
    # it; after exe.max_workers = 12, new jobs took those tokens for idle workers and
    # started no thread (the default thread count, 6 there, stayed the most running).
    with ThreadedLoopExecutor() as exe:
        threads, _, release, holders = _every_default_thread_busy(exe)
        waited = [exe.submit(int) for _ in range(2 * threads)]  # every thread is busy
        release.set()
        for future in holders + waited:
            future.result(timeout=WAIT)
        for limit in steps:
            exe.max_workers = limit
        grown = 2 * threads
        exe.max_workers = grown
        barrier = threading.Barrier(grown, timeout=WAIT)  # all must run at once
        futures = [exe.submit(barrier.wait) for _ in range(grown)]
        assert sorted(f.result(timeout=2 * WAIT) for f in futures) == list(range(grown))


def test_raising_max_workers_starts_threads_for_jobs_waiting_for_one() -> None:
    # Jobs holding a slot but waiting for a thread (the default mode's slots outnumber
    # its threads) get one as max_workers grows, with no later submit to start it.
    threads = min(32, (os.cpu_count() or 1) + 4)
    grown = threads + 3
    entered = threading.Semaphore(0)
    barrier = threading.Barrier(grown, timeout=WAIT)  # all must run at once

    def meet() -> int:
        entered.release()
        return barrier.wait()

    with ThreadedLoopExecutor() as exe:
        futures = [exe.submit(meet) for _ in range(grown)]
        for _ in range(threads):  # every thread busy; 3 jobs queued for one
            assert entered.acquire(timeout=WAIT)
        stats = exe.stats  # they hold their slots, but their calls have not begun
        assert (stats.running, stats.queued) == (threads, 3)
        exe.max_workers = grown
        assert sorted(f.result(timeout=2 * WAIT) for f in futures) == list(range(grown))


def test_max_workers_can_grow_from_another_thread() -> None:
    started = threading.Semaphore(0)
    release = threading.Event()

    async def job() -> None:
        started.release()
        while not release.is_set():
            await asyncio.sleep(0.001)

    with ThreadedLoopExecutor(max_workers=1) as exe:
        futures = [exe.submit(job) for _ in range(3)]
        assert started.acquire(timeout=WAIT)
        assert not started.acquire(timeout=0.05)  # only one runs
        exe.max_workers = 3
        assert exe.max_workers == 3
        assert started.acquire(timeout=WAIT)
        assert started.acquire(timeout=WAIT)
        release.set()
        concurrent.futures.wait(futures, timeout=WAIT)
        with pytest.raises(ValueError, match=re.escape("max_workers must be greater than 0")):
            exe.max_workers = 0


def test_stats_count_every_outcome() -> None:
    async def fail() -> None:
        raise ValueError("no")

    with ThreadedLoopExecutor(max_workers=2) as exe:
        exe.submit(double, 1).result(WAIT)
        exe.submit(fail).exception(WAIT)
        exe.submit(time.sleep, 0).result(WAIT)
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed, stats.running, stats.queued) == (
        3,
        2,
        1,
        0,
        0,
    )


def _blocking_job(n: int) -> int:
    if n % 3 == 2:
        raise ValueError(f"no {n}")
    return n


async def _coroutine_job(n: int) -> int:
    await asyncio.sleep(0)
    return _blocking_job(n)


@pytest.mark.parametrize("kind", ["blocking", "coroutine"])
@pytest.mark.parametrize(
    "options",
    [{}, {"key": lambda n: n % 3, "max_per_key": 1}, {"job_timeout": 60.0},
     {"max_per_second": 1e6}, {"retry": Retry(2, on=KeyError)}],
    ids=["plain", "key=", "job_timeout", "max_per_second", "retry"],
)
def test_stats_count_a_job_as_soon_as_its_future_is_done(
    kind: str, options: dict[str, Any]
) -> None:
    # A caller woken by a job's future reads stats at once: the job is counted. (A job
    # the loop runs had its future set by the worker before the core counted it, and a
    # coroutine job's slot and key's room came back in a later callback than the stats
    # read: stats said running=1, or active_keys=1, one time in two.)
    fn = _blocking_job if kind == "blocking" else _coroutine_job
    with ThreadedLoopExecutor(max_workers=4, **options) as exe:
        for n in range(60):
            exe.submit(fn, n).exception(WAIT)  # its outcome, success or not
            stats = exe.stats
            done = n + 1
            assert (stats.running, stats.queued) == (0, 0), (n, stats)
            assert (stats.succeeded, stats.failed) == (done - done // 3, done // 3), (n, stats)
            assert stats.active_keys == (0 if "key" in options else None), (n, stats)


async def _stubborn(started: threading.Event, release: threading.Event, n: int) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        while not release.is_set():  # a clean-up that outlasts the cancel
            await asyncio.sleep(0.001)
        raise


@pytest.mark.parametrize(
    "options",
    [{}, {"key": lambda *a: a[-1], "max_per_key": 1}, {"job_timeout": 60.0},
     {"max_per_second": 1e6}, {"retry": Retry(2, on=KeyError)}],
    ids=["plain", "key=", "job_timeout", "max_per_second", "retry"],
)
def test_stats_count_a_running_coroutine_job_cancelled_as_soon_as_cancel_returns(
    options: dict[str, Any]
) -> None:
    # The future is cancelled at once; the job's task ends when its clean-up does. stats
    # said running=1, cancelled=0 until then (found by a docs-only tester).
    with ThreadedLoopExecutor(max_workers=4, **options) as exe:
        for n in range(3):
            started, release = threading.Event(), threading.Event()
            future = exe.submit(_stubborn, started, release, n)
            try:
                assert started.wait(WAIT)
                assert future.cancel()
                for _ in range(3):
                    stats = exe.stats
                    assert (stats.running, stats.queued, stats.cancelled) == (0, 0, n + 1)
            finally:
                release.set()
    stats = exe.stats
    assert (stats.submitted, stats.running, stats.cancelled) == (3, 0, 3)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
def test_a_blocking_jobs_done_callback_finds_it_counted(keyed: bool) -> None:
    # The callback runs in the worker thread as it sets the future, before the job's slot
    # (and its key's room) is given back: the counts already say the job is over.
    per_key: dict[str, Any] = {"key": lambda gate: "k", "max_per_key": 1} if keyed else {}
    seen: list[Any] = []
    with ThreadedLoopExecutor(max_workers=2, **per_key) as exe:
        gate = threading.Event()
        future = exe.submit(gate.wait, WAIT)
        future.add_done_callback(lambda _: seen.append(exe.stats))
        gate.set()
        assert future.result(WAIT) is True
    [stats] = seen
    assert (stats.running, stats.succeeded) == (0, 1)
    assert stats.active_keys == (0 if keyed else None)


ONCE_MORE = Retry(2, on=ValueError, backoff=0.0)


def refuse(n: int) -> int:
    raise ValueError(f"no {n}")


@pytest.mark.parametrize(
    "options",
    [{}, {"job_timeout": 60.0}, {"max_per_second": 1000.0}, {"retry": ONCE_MORE},
     {"job_timeout": 60.0, "retry": ONCE_MORE}],
    ids=["direct", "job_timeout", "max_per_second", "retry", "job_timeout+retry"],
)
def test_a_failed_blocking_job_counts_as_failed_on_every_path(options: dict[str, Any]) -> None:
    # A blocking job the loop governs (job_timeout, max_per_second, a retry policy's last
    # attempt) has its error set by the worker thread: it counted as succeeded.
    with ThreadedLoopExecutor(max_workers=2, **options) as exe:
        with pytest.raises(ValueError, match="no 1"):
            exe.submit(refuse, 1).result(WAIT)
        assert exe.submit(double, 2).result(WAIT) == 4
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed) == (2, 1, 1)
    assert stats.retried == (1 if "retry" in options else 0)


def overrun(outcome: str) -> str:
    time.sleep(0.2)  # past job_timeout=0.01: the timeout fires while the call runs
    if outcome == "raises":
        raise ConnectionError("the call's own error")
    return "done"


@pytest.mark.parametrize("outcome", ["returns", "raises"])
@pytest.mark.parametrize("retry", [None, Retry(3, on=ConnectionError, backoff=0.0)])
def test_a_started_blocking_call_past_job_timeout_keeps_its_own_outcome(
    outcome: str, retry: Any
) -> None:
    # job_timeout cannot interrupt a call a worker has started: the call's outcome is the
    # job's, in the future, in stats and for the retry policy (the timeout used to count
    # as the failure, and a retry policy was asked about JobTimeoutError instead).
    with ThreadedLoopExecutor(max_workers=2, job_timeout=0.01, retry=retry) as exe:
        future = exe.submit(overrun, outcome)
        if outcome == "returns":
            assert future.result(WAIT) == "done"
        else:
            error = future.exception(WAIT)
            assert isinstance(error, ConnectionError)
            attempts = " after 3 attempts" if retry is not None else ""
            assert error.__notes__ == [f"coroexecutor: job overrun('raises') failed{attempts}"]
    stats = exe.stats
    assert (stats.succeeded, stats.failed) == ((1, 0) if outcome == "returns" else (0, 1))
    assert stats.retried == (2 if retry is not None and outcome == "raises" else 0)


@pytest.mark.parametrize("max_per_second", [None, 1000.0])
def test_a_cancelled_queued_job_counts_as_cancelled_at_once(
    loop_kind: str, max_per_second: Any
) -> None:
    # Issue 16 (attack round, item 3): a job cancelled while it waits for a slot used to
    # count as queued until the slot freed; the core counts it as cancelled at once.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        assert release.wait(WAIT)

    with ThreadedLoopExecutor(
        max_workers=1, max_per_second=max_per_second, loop_factory=lambda: new_loop(loop_kind)
    ) as exe:
        holder = exe.submit(hold)
        assert holding.wait(WAIT)
        queued = [exe.submit(double, i) for i in range(5)]
        assert all(future.cancel() for future in queued)
        stats = exe.stats
        release.set()
        holder.result(timeout=WAIT)
    assert (stats.submitted, stats.queued, stats.running, stats.cancelled) == (6, 0, 1, 5)
    final = exe.stats
    assert (final.queued, final.running, final.succeeded, final.cancelled) == (0, 0, 1, 5)


def test_a_cancelled_job_waiting_for_a_worker_thread_counts_as_cancelled_at_once() -> None:
    # With max_workers=None there are more slots (1000) than threads: a blocking job may
    # hold a slot and wait for a thread. Cancelled, it is no longer counted as running.
    with ThreadedLoopExecutor() as exe:
        threads, hold, release, holders = _every_default_thread_busy(exe)
        waiting = [exe.submit(hold) for _ in range(3)]
        assert all(future.cancel() for future in waiting)
        stats = exe.stats
        release.set()
        concurrent.futures.wait(holders, timeout=WAIT)
    assert (stats.queued, stats.running, stats.cancelled) == (0, threads, 3)
    final = exe.stats
    assert (final.running, final.succeeded, final.cancelled) == (0, threads, 3)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"job_timeout": 60},
        {"max_per_second": 1000, "burst": 1000},
        {"key": str, "max_per_key": 99},
    ],
    ids=["direct", "job_timeout", "max_per_second", "key"],
)
def test_a_job_waiting_for_a_worker_thread_counts_as_queued(options: dict[str, Any]) -> None:
    # brk35 F2: with max_workers=None (more slots than threads), the blocking jobs that
    # held a slot and waited for a thread were counted as running (20 jobs on 6 threads:
    # running=20, queued=0), while future.running() was False for them, cancel() returned
    # True, and shutdown(cancel_futures=True) cancelled them: they had not begun.
    def check(stats: Any, running: int, queued: int, cancelled: int) -> None:
        assert (stats.running, stats.queued, stats.cancelled) == (running, queued, cancelled)
        assert stats.submitted == stats.queued + stats.running + stats.done, stats

    with ThreadedLoopExecutor(**options) as exe:
        threads, hold, release, holders = _every_default_thread_busy(exe)
        waiting = [exe.submit(hold) for _ in range(4)]
        check(exe.stats, threads, 4, 0)
        assert sum(f.running() for f in holders + waiting) == threads
        assert waiting[-1].cancel()
        check(exe.stats, threads, 3, 1)
        exe.shutdown(wait=False, cancel_futures=True)
        # Cancelled before a thread is freed (the loop thread cancels those it holds).
        assert not concurrent.futures.wait(waiting, timeout=WAIT).not_done
        check(exe.stats, threads, 0, 4)
        release.set()
    final = exe.stats
    check(final, 0, 0, 4)
    assert final.succeeded == threads


def test_options_of_the_wrong_kind_or_infinite_are_refused_clearly() -> None:
    # Issue 16 (attack round, item 4): burst="2" was a ValueError, and an infinite rate or
    # timeout was said to be not "greater than 0".
    with pytest.raises(TypeError, match=re.escape("burst must be an int or None (got '2')")):
        ThreadedLoopExecutor(max_per_second=5, burst="2")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=re.escape("max_per_second must be a finite number (got inf)")
    ):
        ThreadedLoopExecutor(max_per_second=float("inf"))
    with pytest.raises(
        ValueError, match=re.escape("job_timeout must be a finite number (got inf)")
    ):
        ThreadedLoopExecutor(job_timeout=float("inf"))
    # A positive rate whose spacing 1/rate overflows (brk20): no start after the first.
    tiny = "max_per_second must be large enough that 1/max_per_second is finite (got 1e-320)"
    with pytest.raises(ValueError, match=re.escape(tiny)):
        ThreadedLoopExecutor(max_per_second=1e-320)
    with ThreadedLoopExecutor(max_workers=1, max_per_second=5) as exe:
        with pytest.raises(ValueError, match=re.escape(tiny)):
            exe.max_per_second = 1e-320
        with pytest.raises(TypeError, match=re.escape("burst must be an int or None (got '2')")):
            exe.burst = "2"  # type: ignore[assignment]
        with pytest.raises(
            ValueError, match=re.escape("max_per_second must be a finite number (got inf)")
        ):
            exe.max_per_second = float("inf")
        with pytest.raises(
            ValueError, match=re.escape("timeout must be a finite number (got inf)")
        ):
            exe.shutdown(timeout=float("inf"))
        assert (exe.max_per_second, exe.burst) == (5.0, 1)


@pytest.mark.parametrize("how", ["round trip", "None"])
def test_max_workers_none_keeps_the_default_thread_count(how: str) -> None:
    # Issue 16 (attack round, item 4): with max_workers=None the property reads 1000;
    # assigning that back raised the thread cap to 1000, and None itself was refused.
    threads = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    running, release = threading.Semaphore(0), threading.Event()

    def hold() -> None:
        running.release()
        assert release.wait(WAIT)

    if how == "round trip":
        exe = ThreadedLoopExecutor()
        exe.max_workers = exe.max_workers
    else:
        exe = ThreadedLoopExecutor(max_workers=2)
        exe.max_workers = None
    assert exe.max_workers == 1000
    try:
        holders = [exe.submit(hold) for _ in range(threads)]
        for _ in range(threads):
            assert running.acquire(timeout=WAIT)
        extra = exe.submit(hold)  # every thread is busy: it waits for one
    finally:
        # Cancels the jobs waiting for a worker thread before it returns; a job that got
        # a thread of its own (a cap of 1000) would count as started, and run.
        exe.shutdown(wait=False, cancel_futures=True)
        release.set()
    assert extra.cancelled()
    concurrent.futures.wait(holders, timeout=WAIT)
    exe.shutdown(wait=True)
    assert exe.stats.succeeded == threads


def test_shutdown_wait_on_a_worker_thread_names_the_worker_thread() -> None:
    def shut() -> None:
        exe.shutdown(wait=True)

    with ThreadedLoopExecutor(max_workers=1, thread_name_prefix="named") as exe:
        error = exe.submit(shut).exception(timeout=WAIT)
    assert isinstance(error, RuntimeError)
    assert str(error).startswith(
        "shutdown(wait=True) cannot wait on a worker thread of <ThreadedLoopExecutor named"
    )
    assert "deadlock" in str(error)


def test_result_on_the_loop_thread_raises_instead_of_deadlocking(exe: ThreadedLoopExecutor) -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    other = exe.submit(park_until_cancelled, started, saw_cancel)

    async def wait_badly() -> Any:
        return other.result()

    with pytest.raises(RuntimeError, match="deadlock"):
        exe.submit(wait_badly).result(timeout=WAIT)
    other.cancel()


def test_shutdown_wait_on_the_loop_thread_raises(exe: ThreadedLoopExecutor) -> None:
    async def shut() -> None:
        exe.shutdown(wait=True)

    with pytest.raises(RuntimeError, match="deadlock"):
        exe.submit(shut).result(timeout=WAIT)

    async def shut_later() -> None:
        exe.shutdown(wait=False)  # allowed: it only asks

    exe.submit(shut_later).result(timeout=WAIT)
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        exe.submit(double, 1)


def test_exceptional_with_exit_cancels_queued_and_running_coroutine_jobs() -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    futures: list[concurrent.futures.Future[Any]] = []

    def interrupted_block() -> None:
        with ThreadedLoopExecutor(max_workers=1) as exe:
            futures.append(exe.submit(park_until_cancelled, started, saw_cancel))
            futures.append(exe.submit(double, 1))
            assert started.wait(WAIT)
            raise KeyboardInterrupt  # as Ctrl-C would, while a job can never finish

    with pytest.raises(KeyboardInterrupt):
        interrupted_block()
    running, queued = futures
    assert saw_cancel.is_set()
    assert running.cancelled()
    assert queued.cancelled()


async def nap(i: int) -> int:
    await asyncio.sleep(0.01)
    return i


def nap_blocking(i: int) -> int:
    time.sleep(0.01)
    return i


@pytest.mark.parametrize("kind", ["coroutine", "blocking", "blocking via the loop"])
def test_cancel_futures_runs_the_jobs_that_had_a_free_slot(loop_kind: str, kind: str) -> None:
    # Issue 16, item 8: a job submitted while a slot was free counts as started, as on a
    # ThreadPoolExecutor whose idle worker has taken it, even if the loop (or a worker)
    # has not picked it up yet. Only the jobs that would have waited are cancelled.
    options: dict[str, Any] = {"job_timeout": 60.0} if kind == "blocking via the loop" else {}
    exe = ThreadedLoopExecutor(max_workers=5, loop_factory=lambda: new_loop(loop_kind), **options)
    if kind == "blocking":
        # Five idle workers, waiting for jobs: what ThreadPoolExecutor's idle workers
        # would take at once. Each frees its slot just after resolving its future.
        barrier = threading.Barrier(5, timeout=WAIT)
        concurrent.futures.wait([exe.submit(barrier.wait) for _ in range(5)], timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while exe.stats.running:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    job = nap if kind == "coroutine" else nap_blocking
    futures = [exe.submit(job, i) for i in range(50)]
    exe.shutdown(wait=True, cancel_futures=True)
    assert [future.result(timeout=0) for future in futures[:5]] == [0, 1, 2, 3, 4]
    assert all(future.cancelled() for future in futures[5:])


@pytest.mark.parametrize("cls", [concurrent.futures.ThreadPoolExecutor, ThreadedLoopExecutor])
def test_cancel_futures_cancels_blocking_jobs_waiting_for_a_thread(
    cls: type[concurrent.futures.Executor],
) -> None:
    # max_workers=None: a thousand slots, but only ThreadPoolExecutor's default number
    # of threads. A blocking job that found every thread busy waits, there as here.
    threads = min(32, (os.cpu_count() or 1) + 4)
    running = threading.Semaphore(0)
    release = threading.Event()

    def hold(i: int) -> int:
        running.release()
        assert release.wait(WAIT)
        return i

    exe = cls()
    futures = [exe.submit(hold, i) for i in range(threads + 3)]
    for _ in range(threads):
        assert running.acquire(timeout=WAIT)
    exe.shutdown(wait=False, cancel_futures=True)
    release.set()
    exe.shutdown(wait=True)
    assert [future.result(timeout=0) for future in futures[:threads]] == list(range(threads))
    assert all(future.cancelled() for future in futures[threads:])


def test_cancel_futures_cancels_jobs_waiting_for_the_rate_limit() -> None:
    # One token now, the next in 100 s: the jobs after the first wait, holding a slot.
    exe = ThreadedLoopExecutor(max_per_second=0.01, burst=1)
    first = exe.submit(double, 1)
    assert first.result(timeout=WAIT) == 2
    waiting = [exe.submit(double, i) for i in range(3)] + [exe.submit(nap_blocking, 4)]
    exe.shutdown(wait=True, cancel_futures=True)
    assert all(future.cancelled() for future in waiting)


def test_shutdown_timeout_cancels_jobs_after_the_grace_period() -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    exe = ThreadedLoopExecutor()
    future = exe.submit(park_until_cancelled, started, saw_cancel)
    assert started.wait(WAIT)
    exe.shutdown(wait=True, timeout=0.05)
    assert saw_cancel.is_set()
    assert future.cancelled()


def test_job_timeout_fails_a_slow_coroutine_job() -> None:
    started, saw_cancel = threading.Event(), threading.Event()
    with ThreadedLoopExecutor(job_timeout=0.05) as exe:
        future = exe.submit(park_until_cancelled, started, saw_cancel)
        error = future.exception(timeout=WAIT)
        assert isinstance(error, JobTimeoutError) and isinstance(error, TimeoutError)
        # It names the job, not the bridge's wrapper around it.
        assert str(error).startswith("job park_until_cancelled(<threading.Event")
        assert str(error).endswith(") ran longer than job_timeout=0.05 s")
        assert exe.submit(double, 2).result(WAIT) == 4


def test_max_per_second_passes_through() -> None:
    with ThreadedLoopExecutor(max_per_second=1000, burst=5) as exe:
        futures = [exe.submit(double, i) for i in range(20)]
        assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(20)]
        queued = [exe.submit(double, i) for i in range(20)]
        assert queued[-1].cancel() or queued[-1].done()
        concurrent.futures.wait(queued, timeout=WAIT)
    with pytest.raises(ValueError, match="burst"):
        ThreadedLoopExecutor(burst=3)


STARVED = 0.001  # one token per 1000 s: a job held back by it never starts in a test


def test_max_per_second_can_be_lifted_from_another_thread(loop_kind: str) -> None:
    with ThreadedLoopExecutor(
        max_workers=4, max_per_second=STARVED, loop_factory=lambda: new_loop(loop_kind)
    ) as exe:
        first = exe.submit(double, 1)
        assert first.result(timeout=WAIT) == 2  # the one token
        held = exe.submit(double, 2)
        assert exe.stats.queued == 1  # waits for a token, 1000 s away
        lifter = threading.Thread(target=setattr, args=(exe, "max_per_second", None))
        lifter.start()
        lifter.join(WAIT)
        assert not lifter.is_alive()
        assert exe.max_per_second is None
        assert held.result(timeout=WAIT) == 4


@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_max_per_second_imposed_while_running_governs_the_next_starts(kind: str) -> None:
    def blocking(x: int) -> int:
        return 2 * x

    fn: Any = double if kind == "coroutine" else blocking
    with ThreadedLoopExecutor(max_workers=4) as exe:
        assert exe.submit(fn, 1).result(timeout=WAIT) == 2  # no limit yet
        assert exe.max_per_second is None and exe.burst == 1
        exe.max_per_second = STARVED  # a fresh bucket: one start, then one per 1000 s
        assert exe.max_per_second == STARVED
        assert exe.submit(fn, 2).result(timeout=WAIT) == 4
        held = exe.submit(fn, 3)
        # Deterministic: a blocking job that bypassed the limit would count as running.
        assert exe.stats.queued == 1 and not held.done()
        exe.burst = 2
        exe.max_per_second = 1e9
        assert held.result(timeout=WAIT) == 6


def test_rate_setters_validate_in_the_calling_thread() -> None:
    with ThreadedLoopExecutor(max_workers=2) as exe:
        with pytest.raises(ValueError, match=re.escape("burst requires max_per_second")):
            exe.burst = 3
        with pytest.raises(
            TypeError, match=re.escape("max_per_second must be a number or None (got '5')")
        ):
            exe.max_per_second = "5"  # type: ignore[assignment]
        exe.max_per_second = 5
        with pytest.raises(ValueError, match=re.escape("burst must be an int greater than 0")):
            exe.burst = 0
        exe.burst = 4
        assert (exe.max_per_second, exe.burst) == (5.0, 4)
        assert exe.submit(double, 1).result(timeout=WAIT) == 2


def test_rate_set_on_the_loop_thread_applies_at_once() -> None:
    with ThreadedLoopExecutor(max_workers=4) as exe:

        async def impose() -> bool:
            exe.max_per_second = STARVED  # on the loop thread: applied before returning
            exe.submit(double, 1)  # takes the one token
            later = exe.submit(double, 2)
            for _ in range(20):
                await asyncio.sleep(0)
            return later.done()

        assert exe.submit(impose).result(timeout=WAIT) is False
        exe.max_per_second = None
    assert exe.stats.succeeded == 3


def test_nested_submit_from_a_coroutine_job(exe: ThreadedLoopExecutor) -> None:
    async def outer() -> int:
        inner = exe.submit(double, 10)
        return await asyncio.wrap_future(inner)

    assert exe.submit(outer).result(timeout=WAIT) == 20


def test_many_threads_submit_at_once() -> None:
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads, timeout=WAIT)
    with ThreadedLoopExecutor(max_workers=16) as exe:

        def producer(offset: int) -> list[int]:
            barrier.wait()
            futures = [exe.submit(double, offset + i) for i in range(per_thread)]
            return [f.result(timeout=WAIT) for f in futures]

        with concurrent.futures.ThreadPoolExecutor(threads) as callers:
            results = list(callers.map(producer, range(0, threads * per_thread, per_thread)))
    assert [x for chunk in results for x in chunk] == [2 * i for i in range(threads * per_thread)]


def _race_submits_against_shutdown(threads: int) -> list[concurrent.futures.Future[int]]:
    exe = ThreadedLoopExecutor(max_workers=2)
    barrier = threading.Barrier(threads + 1, timeout=WAIT)
    accepted: list[concurrent.futures.Future[int]] = []
    lock = threading.Lock()

    def producer() -> None:
        barrier.wait()
        for i in range(50):
            try:
                future = exe.submit(double, i)
            except RuntimeError:
                return
            with lock:
                accepted.append(future)

    workers = [threading.Thread(target=producer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()  # release the producers and shut down while they submit
    exe.shutdown(wait=True)
    for worker in workers:
        worker.join(WAIT)
        assert not worker.is_alive()
    return accepted


def test_submits_racing_shutdown_are_all_processed_or_refused() -> None:
    for _ in range(20):
        accepted = _race_submits_against_shutdown(threads=6)
        # Every submit that did not raise was processed: no future is left pending.
        assert all(future.done() for future in accepted)


def test_loop_factory_picks_the_loop(loop_kind: str) -> None:  # default, eager, uvloop
    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(new_loop(loop_kind))
        return made[-1]

    async def which() -> bool:
        return asyncio.get_running_loop() is made[0]

    with ThreadedLoopExecutor(loop_factory=factory) as exe:
        assert exe.submit(which).result(timeout=WAIT)
        assert exe.submit(double, 3).result(timeout=WAIT) == 6
        assert exe.submit(lambda: 7).result(timeout=WAIT) == 7
    assert made[0].is_closed()


def test_loop_factory_error_raises_from_the_constructor() -> None:
    def broken_factory() -> asyncio.AbstractEventLoop:
        raise OSError("no loop for you")

    with pytest.raises(OSError, match="no loop for you"):
        ThreadedLoopExecutor(loop_factory=broken_factory)


def test_async_initializer_runs_once_on_the_loop_before_jobs() -> None:
    calls: list[str] = []

    async def init(tag: str) -> None:
        await asyncio.sleep(0)
        calls.append(f"{tag} on {threading.current_thread().name}")

    with ThreadedLoopExecutor(initializer=init, initargs=("init",), thread_name_prefix="x") as exe:
        assert exe.submit(lambda: list(calls)).result(WAIT) == ["init on x_loop"]
        exe.submit(double, 1).result(WAIT)
    assert calls == ["init on x_loop"]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(
        TypeError, match=re.escape("initializer must be a callable or None (got 3)")
    ):
        ThreadedLoopExecutor(initializer=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loop_factory must be a callable"):
        ThreadedLoopExecutor(loop_factory="uvloop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job_timeout must be greater than 0"):
        ThreadedLoopExecutor(job_timeout=0)


def test_repr_shows_name_state_and_limit() -> None:
    exe = ThreadedLoopExecutor(max_workers=8, thread_name_prefix="db")
    exe.shutdown()
    assert repr(exe) == "<ThreadedLoopExecutor db closed max_workers=8>"


def test_shutdown_wait_in_a_blocking_job_raises(exe: ThreadedLoopExecutor) -> None:
    with pytest.raises(RuntimeError, match="deadlock"):
        exe.submit(exe.shutdown, wait=True).result(timeout=WAIT)


def test_hand_off_wakes_the_loop_once_per_batch() -> None:
    loop_busy, release = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        loop_busy.set()
        assert release.wait(WAIT)  # blocks the loop thread on purpose: submits pile up

    with ThreadedLoopExecutor() as exe:
        loop = exe._handoff._mailbox._loop
        assert loop is not None
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        holder = exe.submit(hold_the_loop)
        assert loop_busy.wait(WAIT)
        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            futures = [exe.submit(double, i) for i in range(100)]
            release.set()
            assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(100)]
        finally:
            loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        holder.result(timeout=WAIT)
    assert wakeups == 1


def test_closing_map_early_cancels_its_pending_jobs() -> None:
    started = threading.Semaphore(0)
    cancelled = threading.Semaphore(0)

    async def park(x: int) -> int:
        if x == 0:
            return 0
        started.release()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.release()
            raise
        return x

    with ThreadedLoopExecutor(max_workers=3) as exe:
        results = exe.map(park, range(5))
        assert next(results) == 0
        assert started.acquire(timeout=WAIT)
        assert started.acquire(timeout=WAIT)
        results.close()  # type: ignore[attr-defined]
        assert cancelled.acquire(timeout=WAIT)
        assert cancelled.acquire(timeout=WAIT)


@pytest.mark.parametrize("buffersize", [None, 2])
@pytest.mark.parametrize("how", ["close", "del"])
def test_map_closed_or_dropped_before_its_first_next_cancels_its_jobs(
    loop_kind: str, how: str, buffersize: Any
) -> None:
    # Issue 16 (attack round, item 2): map() submits its jobs before it returns (all of
    # them, or buffersize); closing or dropping the iterator before any next() used to
    # cancel none of them, as a generator never started runs no finally.
    async def park(x: int) -> None:
        await asyncio.Event().wait()

    with ThreadedLoopExecutor(max_workers=2, loop_factory=lambda: new_loop(loop_kind)) as exe:
        results = exe.map(park, range(6), buffersize=buffersize)
        if how == "close":
            results.close()  # type: ignore[attr-defined]
        else:
            del results
        # Queued behind the map's jobs: runs only once they have given their slots back.
        assert exe.submit(double, 1).result(timeout=WAIT) == 2
    stats = exe.stats  # the final counts
    assert (stats.cancelled, stats.succeeded) == (6 if buffersize is None else 2, 1)


def test_map_iterator_is_done_after_close_or_an_error() -> None:
    def fail_at_one(x: int) -> int:
        if x == 1:
            raise ValueError("one")
        return x

    with ThreadedLoopExecutor(max_workers=1) as exe:
        results = exe.map(fail_at_one, range(3))
        assert iter(results) is results
        assert next(results) == 0
        with pytest.raises(ValueError, match="one"):
            next(results)
        assert list(results) == []  # as a generator that raised: exhausted
        closed = exe.map(fail_at_one, [0, 2])
        closed.close()  # type: ignore[attr-defined]
        assert list(closed) == []


def test_failed_jobs_leave_no_cyclic_garbage() -> None:
    import gc

    async def fail_async() -> None:
        raise ValueError("async")

    def fail_blocking() -> None:
        raise ValueError("blocking")

    with ThreadedLoopExecutor(max_workers=2) as exe:
        exe.submit(double, 1).result(WAIT)  # warm up: lazily created objects
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        ours: list[int] = []  # ids of this test's futures and errors (others' may be collected)
        try:
            for fn in (fail_async, fail_blocking):
                future = exe.submit(fn)
                with pytest.raises(ValueError, match=r"async|blocking") as caught:
                    future.result(timeout=WAIT)
                ours += [id(future), id(caught.value)]
                del future, caught
            exe.submit(double, 2).result(WAIT)  # the last failed job's slot is settled
            gc.collect()
            leaked = [o for o in gc.garbage if id(o) in ours]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert leaked == []


def test_loop_factory_returning_a_non_loop_raises_from_the_constructor() -> None:
    before = set(threading.enumerate())
    with pytest.raises(
        TypeError, match=re.escape("loop_factory must return an event loop (got None)")
    ):
        ThreadedLoopExecutor(loop_factory=lambda: None)  # type: ignore[arg-type,return-value]
    assert set(threading.enumerate()) <= before


def test_loop_factory_returning_a_closed_loop_raises_from_the_constructor() -> None:
    # It hung: the loop thread died, the constructor waited for it for ever.
    closed = asyncio.new_event_loop()
    closed.close()
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=r"must return a new event loop \(got a closed one\)"):
        ThreadedLoopExecutor(loop_factory=lambda: closed)
    assert set(threading.enumerate()) <= before


def test_loop_factory_returning_a_running_loop_raises_and_leaves_it_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sibling = asyncio.ensure_future(asyncio.sleep(0, "alive"))
        with pytest.raises(ValueError, match="got a running one"):
            ThreadedLoopExecutor(loop_factory=lambda: loop)
        assert await sibling == "alive"  # not cancelled by the executor's clean-up

    asyncio.run(main())


def test_an_idle_worker_keeps_no_reference_to_its_last_job() -> None:
    # A result yielded by map, or a job's bound method (the requests-futures Session
    # pattern), stayed alive while the worker that ran it waited for its next job.
    import gc
    import weakref

    class Result:
        pass

    class Session:
        def __init__(self) -> None:
            self.executor = LoopExecutor(max_workers=2)

        def fetch(self, n: int) -> Result:
            return Result()

    session = Session()
    refs = []
    for result in session.executor.map(session.fetch, range(6)):
        refs.append(weakref.ref(result))
        del result
    session.executor.submit(session.fetch, 0).result(timeout=5)
    # The futures are done from the worker's side once their value is set; its loop
    # turn to tidy up follows: wait for it through the executor itself.
    session.executor.submit(asyncio.sleep, 0).result(timeout=5)
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
    executor_ref = weakref.ref(session.executor)
    del session
    gc.collect()
    assert executor_ref() is None, "a forgotten executor whose job refers to it was kept"


@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_base_exception_from_a_done_callback_on_our_threads_is_logged(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    go = threading.Event()

    async def coroutine_job() -> str:
        while not go.is_set():
            await asyncio.sleep(0.001)
        return "done"

    def blocking_job() -> str:
        assert go.wait(WAIT)
        return "done"

    def callback(_: concurrent.futures.Future[Any]) -> None:
        raise SystemExit(7)

    caplog.set_level(logging.CRITICAL, logger="concurrent.futures")
    with ThreadedLoopExecutor(max_workers=1) as exe:
        future = exe.submit(coroutine_job if kind == "coroutine" else blocking_job)
        future.add_done_callback(callback)  # runs on the loop thread or the worker
        go.set()
        assert future.result(timeout=WAIT) == "done"
        # The thread that ran the callback survived, and so did the executor.
        assert exe.submit(double, 5).result(timeout=WAIT) == 10
        assert exe.submit(abs, -5).result(timeout=WAIT) == 5
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is SystemExit]
    assert len(logged) == 1


def test_job_timeout_and_blocking_jobs() -> None:
    import os

    threads = min(32, (os.cpu_count() or 1) + 4)  # the default thread cap
    gate = threading.Event()
    running = threading.Semaphore(0)

    def hold() -> str:
        running.release()
        assert gate.wait(WAIT)
        return "finished anyway"

    with ThreadedLoopExecutor(job_timeout=0.2) as exe:
        busy = [exe.submit(hold) for _ in range(threads)]
        for _ in range(threads):
            assert running.acquire(timeout=WAIT)
        waiting = exe.submit(hold)  # holds a slot, but every thread is taken
        # Not started within job_timeout: it fails, and will never run.
        error = waiting.exception(timeout=WAIT)
        assert isinstance(error, JobTimeoutError)
        assert str(error) == "job hold() ran longer than job_timeout=0.2 s"
        gate.set()
        # Calls already running cannot be interrupted: they keep their own outcome.
        assert [f.result(timeout=WAIT) for f in busy] == ["finished anyway"] * threads
    assert not running.acquire(timeout=0)  # the timed-out job never ran
