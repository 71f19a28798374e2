"""The concurrent.futures.Executor contract, run against ThreadPoolExecutor and ours.

One fixture yields a factory for either executor (the stdlib's ``create_executor_tests``
mixins are the model): whatever ThreadPoolExecutor does here, ThreadedLoopExecutor must
do too. Jobs are plain blocking callables, since that is all the stdlib can run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from coroexecutor import BrokenLoopExecutor, ThreadedLoopExecutor

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

Factory = Callable[..., concurrent.futures.Executor]


@pytest.fixture(params=["ThreadPoolExecutor", "ThreadedLoopExecutor"])
def make_executor(request: pytest.FixtureRequest) -> Iterator[Factory]:
    cls = (
        concurrent.futures.ThreadPoolExecutor
        if request.param == "ThreadPoolExecutor"
        else ThreadedLoopExecutor
    )
    made: list[concurrent.futures.Executor] = []

    def make(*args: Any, **kwargs: Any) -> concurrent.futures.Executor:
        exe = cls(*args, **kwargs)
        made.append(exe)
        return exe

    yield make
    for exe in made:
        exe.shutdown(wait=True, cancel_futures=True)


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


class Gate:
    """Parks blocking jobs until opened; counts how many have started."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.started = 0
        self.all_started = threading.Event()
        self.expected = 1

    def park(self, value: Any = None) -> Any:
        with self.lock:
            self.started += 1
            if self.started >= self.expected:
                self.all_started.set()
        assert self.opened.wait(WAIT)
        return value


def test_submit_returns_the_result(make_executor: Factory) -> None:
    exe = make_executor(max_workers=2)
    assert exe.submit(square, 7).result(timeout=WAIT) == 49
    assert exe.submit(pow, 2, exp=5).result(timeout=WAIT) == 32


def test_job_exception_fails_only_its_own_future(make_executor: Factory) -> None:
    exe = make_executor(max_workers=2)
    bad = exe.submit(fail, "boom")
    good = exe.submit(square, 3)
    with pytest.raises(ValueError, match="boom"):
        bad.result(timeout=WAIT)
    assert isinstance(bad.exception(timeout=WAIT), ValueError)
    assert good.result(timeout=WAIT) == 9


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_job_fails_only_its_future(
    make_executor: Factory, exc_type: type[BaseException]
) -> None:
    def raiser() -> None:
        raise exc_type("from the job")

    exe = make_executor(max_workers=1)
    future = exe.submit(raiser)
    with pytest.raises(exc_type, match="from the job"):
        future.result(timeout=WAIT)
    assert exe.submit(square, 4).result(timeout=WAIT) == 16  # the executor still works


def test_map_yields_results_in_input_order(make_executor: Factory) -> None:
    exe = make_executor(max_workers=4)
    assert list(exe.map(square, range(20))) == [x * x for x in range(20)]
    assert list(exe.map(pow, [2, 3], [5, 2])) == [32, 9]


def test_map_raises_the_job_error_at_its_position(make_executor: Factory) -> None:
    exe = make_executor(max_workers=2)

    def maybe_fail(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    results = exe.map(maybe_fail, range(4))
    assert next(results) == 0
    assert next(results) == 1
    with pytest.raises(ValueError, match="two"):
        next(results)


def test_map_timeout_raises_timeout_error(make_executor: Factory) -> None:
    gate = Gate()
    exe = make_executor(max_workers=1)
    results = exe.map(gate.park, [1, 2], timeout=0.05)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    gate.opened.set()


def test_map_buffersize_reads_input_lazily(make_executor: Factory) -> None:
    if isinstance(
        make_executor(max_workers=1), concurrent.futures.ThreadPoolExecutor
    ) and sys.version_info < (3, 14):
        pytest.skip("ThreadPoolExecutor.map has buffersize from Python 3.14")
    exe = make_executor(max_workers=2)
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    results = exe.map(square, endless(), buffersize=3)  # type: ignore[call-arg]
    assert [next(results) for _ in range(5)] == [1, 4, 9, 16, 25]
    assert pulled <= 5 + 3
    results.close()  # type: ignore[attr-defined]


def test_submit_after_shutdown_raises(make_executor: Factory) -> None:
    exe = make_executor(max_workers=1)
    exe.shutdown(wait=True)
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        exe.submit(square, 2)
    exe.shutdown(wait=True)  # a second shutdown is harmless


def test_max_workers_must_be_positive(make_executor: Factory) -> None:
    with pytest.raises(ValueError, match=re.escape("max_workers must be greater than 0")):
        make_executor(max_workers=0)


def test_with_block_waits_for_every_job(make_executor: Factory) -> None:
    done: list[int] = []

    def work(x: int) -> None:
        time.sleep(0.001)
        done.append(x)

    with make_executor(max_workers=3) as exe:
        for x in range(10):
            exe.submit(work, x)
    assert sorted(done) == list(range(10))


def test_shutdown_cancel_futures_cancels_queued_jobs(make_executor: Factory) -> None:
    gate = Gate()
    exe = make_executor(max_workers=1)
    running = exe.submit(gate.park, "ran")
    assert gate.all_started.wait(WAIT)
    queued = [exe.submit(square, x) for x in range(5)]
    exe.shutdown(wait=False, cancel_futures=True)
    gate.opened.set()
    assert running.result(timeout=WAIT) == "ran"
    assert all(f.cancelled() for f in queued)
    exe.shutdown(wait=True)


def test_shutdown_cancel_futures_cancels_the_jobs_waiting_for_the_initializer(
    make_executor: Factory,
) -> None:
    # Asked by a docs-only tester: slots are free, but no job starts before the
    # initializer has returned, so the jobs submitted meanwhile would have waited (for
    # it): cancel_futures=True cancels every one of them, as ThreadPoolExecutor does with
    # the work queued while its workers run the initializer.
    entered, release = threading.Event(), threading.Event()

    def slow_init() -> None:
        entered.set()
        release.wait(WAIT)

    exe = make_executor(max_workers=5, initializer=slow_init)
    futures = [exe.submit(square, x) for x in range(10)]
    assert entered.wait(WAIT)
    exe.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in futures)  # before the initializer returns
    release.set()
    exe.shutdown(wait=True)


def test_running_blocking_job_cannot_be_cancelled(make_executor: Factory) -> None:
    gate = Gate()
    exe = make_executor(max_workers=1)
    future = exe.submit(gate.park, 1)
    assert gate.all_started.wait(WAIT)
    assert future.running()
    assert not future.cancel()
    gate.opened.set()
    assert future.result(timeout=WAIT) == 1


def test_queued_job_can_be_cancelled(make_executor: Factory) -> None:
    gate = Gate()
    exe = make_executor(max_workers=1)
    first = exe.submit(gate.park, 1)
    assert gate.all_started.wait(WAIT)
    second = exe.submit(square, 2)
    assert second.cancel()
    assert second.cancelled()
    gate.opened.set()
    assert first.result(timeout=WAIT) == 1
    with pytest.raises(concurrent.futures.CancelledError):
        second.result(timeout=WAIT)


def test_wait_and_as_completed_see_cancelled_futures(make_executor: Factory) -> None:
    gate = Gate()
    exe = make_executor(max_workers=1)
    first = exe.submit(gate.park, 1)
    assert gate.all_started.wait(WAIT)
    queued = exe.submit(square, 3)
    assert queued.cancel()
    gate.opened.set()
    _done, not_done = concurrent.futures.wait([first, queued], timeout=WAIT)
    assert not not_done
    assert set(concurrent.futures.as_completed([first, queued], timeout=WAIT)) == {first, queued}


def test_done_callbacks_run_once_with_the_future(make_executor: Factory) -> None:
    exe = make_executor(max_workers=1)
    seen: list[concurrent.futures.Future[Any]] = []
    called = threading.Event()
    future = exe.submit(square, 5)

    def on_done(f: concurrent.futures.Future[Any]) -> None:
        seen.append(f)
        called.set()

    future.add_done_callback(on_done)
    assert called.wait(WAIT)
    assert seen == [future]
    assert future.result() == 25


def test_callback_may_submit_more_jobs(make_executor: Factory) -> None:
    exe = make_executor(max_workers=2)
    chained: list[concurrent.futures.Future[int]] = []
    submitted = threading.Event()

    def again(f: concurrent.futures.Future[int]) -> None:
        chained.append(exe.submit(square, f.result()))
        submitted.set()

    exe.submit(square, 2).add_done_callback(again)
    assert submitted.wait(WAIT)
    assert chained[0].result(timeout=WAIT) == 16


def test_jobs_may_submit_jobs(make_executor: Factory) -> None:
    exe = make_executor(max_workers=2)

    def outer(x: int) -> concurrent.futures.Future[int]:
        return exe.submit(square, x)

    inner = exe.submit(outer, 6).result(timeout=WAIT)
    assert inner.result(timeout=WAIT) == 36


def test_initializer_failure_breaks_the_executor(make_executor: Factory) -> None:
    def bad_init() -> None:
        raise OSError("no config")

    exe = make_executor(max_workers=1, initializer=bad_init)
    # Whether submit() itself raises or the future fails depends on when the initializer
    # has run; either way the job fails with BrokenExecutor, now and later.
    for x in range(3):
        with pytest.raises(concurrent.futures.BrokenExecutor):
            exe.submit(square, x).result(timeout=WAIT)


def test_initializer_failure_is_logged_at_critical(
    make_executor: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    error = OSError("no config")

    def bad_init() -> None:
        raise error

    exe = make_executor(max_workers=1, initializer=bad_init)
    with pytest.raises(concurrent.futures.BrokenExecutor):
        exe.submit(square, 2).result(timeout=WAIT)  # (the stdlib runs it on a first job)
    exe.shutdown(wait=True)
    logged = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (logging.CRITICAL, "Exception in initializer:")
    ]
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is error


def test_initializer_runs_before_jobs(make_executor: Factory) -> None:
    ready = threading.Event()
    exe = make_executor(max_workers=1, initializer=ready.set)
    assert exe.submit(ready.is_set).result(timeout=WAIT)


def test_initializer_error_fails_pending_and_later_jobs_chained_from_it() -> None:
    error = OSError("no config")

    release = threading.Event()

    def slow_bad_init() -> None:
        assert release.wait(WAIT)
        raise error

    exe = ThreadedLoopExecutor(initializer=slow_bad_init)
    try:
        pending = [exe.submit(square, x) for x in range(3)]  # handed off before it fails
        release.set()
        for future in pending:
            with pytest.raises(BrokenLoopExecutor) as caught:
                future.result(timeout=WAIT)
            assert caught.value.__cause__ is error
        with pytest.raises(BrokenLoopExecutor) as caught:
            exe.submit(square, 3)
        assert caught.value.__cause__ is error
    finally:
        exe.shutdown(wait=True)
