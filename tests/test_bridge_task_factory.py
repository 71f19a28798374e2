"""ThreadedLoopExecutor on a loop whose task factory (``loop.set_task_factory``, set
by its ``loop_factory``) misbehaves: it raises, or makes no task, for the loop's first
task or for later ones.

The outcomes are documented in docs/bridge.rst ("A failing initializer", the paragraph
on the loop's task factory) and in docs/reliability.rst's fault table: a loop that
cannot start its first task breaks the executor; a job whose task cannot be made fails
with that error. Either way nothing hangs, nothing reaches threading.excepthook or
warns "never awaited", and no thread is left behind.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import re
import sys
import threading
from typing import Any, Callable

import pytest

from coroexecutor import BrokenLoopExecutor, ThreadedLoopExecutor
from tests.conftest import uvloop

pytestmark = pytest.mark.timeout(20)

WAIT = 5  # seconds: the bound on every blocking wait in a thread; reaching it fails


#
# The loop cannot start its first task
#


class _Reports:
    """What the loop thread would report: threading.excepthook (the thread died) and
    sys.unraisablehook ("coroutine ... was never awaited", an error under -W error)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.died: list[BaseException | None] = []
        self.unraisable: list[str] = []
        monkeypatch.setattr(threading, "excepthook", lambda args: self.died.append(args.exc_value))
        monkeypatch.setattr(
            sys, "unraisablehook", lambda args: self.unraisable.append(repr(args.exc_value))
        )


def _loop_with(
    task_factory: Callable[..., Any], made: list[asyncio.AbstractEventLoop]
) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop_factory: a new loop with this task factory, kept in ``made``."""

    def factory() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        made[-1].set_task_factory(task_factory)
        return made[-1]

    return factory


def _refusing_loop(
    made: list[asyncio.AbstractEventLoop], error: BaseException, gate: threading.Event
) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop_factory: a new loop whose task factory raises ``error``, once ``gate`` is
    open (so jobs can be handed in first, as they can while a loop starts)."""

    def refuse(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        assert gate.wait(WAIT)
        raise error

    return _loop_with(refuse, made)


async def _double(n: int) -> int:
    return 2 * n


@pytest.mark.parametrize("with_initializer", [False, True])
def test_bridge_task_factory_raising_breaks_the_executor(
    with_initializer: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the loop thread died (threading.excepthook), "coroutine
    # '_LoopRun.main' was never awaited", and submit() said "cannot schedule new futures
    # after shutdown" with no cause. Found with uvloop 0.23 and eager_task_factory on 3.13.
    reports = _Reports(monkeypatch)
    made: list[asyncio.AbstractEventLoop] = []
    error, gate = TypeError("task factory refuses"), threading.Event()
    ran: list[str] = []
    initializer = functools.partial(ran.append, "initializer") if with_initializer else None
    before = set(threading.enumerate())

    async def job(n: int) -> int:
        ran.append("job")
        return n

    exe = ThreadedLoopExecutor(
        max_workers=2, loop_factory=_refusing_loop(made, error, gate), initializer=initializer
    )
    accepted = [exe.submit(job, n) for n in range(3)]  # 2 given a slot, 1 waits for one
    blocking = exe.submit(len, "abc")  # without an initializer: waits for a slot too
    gate.set()
    for future in [*accepted, blocking]:
        exc = future.exception(timeout=WAIT)
        assert isinstance(exc, BrokenLoopExecutor), repr(exc)
        assert exc.__cause__ is error
    message = "is broken: its event loop could not start its first task: TypeError("
    with pytest.raises(BrokenLoopExecutor, match=re.escape(message)) as info:
        exe.submit(job, 9)
    assert info.value.__cause__ is error
    with pytest.raises(BrokenLoopExecutor) as info:
        list(exe.map(job, [1, 2]))
    assert info.value.__cause__ is error
    with exe:  # leaves without raising
        pass
    exe.shutdown(wait=True)
    assert ran == []
    assert made[0].is_closed()
    stats = exe.stats
    assert (stats.submitted, stats.queued, stats.running, stats.failed) == (4, 0, 0, 4)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []
    assert set(threading.enumerate()) <= before


def test_bridge_task_factory_raising_leaves_blocking_jobs_on_a_thread_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A blocking job given a slot goes to a worker thread at once, loop or not; what it
    # returns for the loop to await is closed, and the job fails as the others do.
    reports = _Reports(monkeypatch)
    made: list[asyncio.AbstractEventLoop] = []
    error, gate = TypeError("task factory refuses"), threading.Event()
    exe = ThreadedLoopExecutor(max_workers=2, loop_factory=_refusing_loop(made, error, gate))
    ran = exe.submit(len, "abc")
    assert ran.result(timeout=WAIT) == 3
    returns_awaitable = exe.submit(lambda: _double(2))
    gate.set()
    exc = returns_awaitable.exception(timeout=WAIT)
    assert isinstance(exc, BrokenLoopExecutor) and exc.__cause__ is error
    exe.shutdown(wait=True)
    stats = exe.stats
    assert (stats.submitted, stats.queued, stats.succeeded, stats.failed) == (2, 0, 1, 1)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []


# What a task factory returns in place of a task, and whether it closes the coroutine
# it was given first.
_NO_TASKS = {
    "None": (lambda loop: None, False),
    "None, coroutine closed": (lambda loop: None, True),
    "a Future": (lambda loop: loop.create_future(), False),
    "a Future, coroutine closed": (lambda loop: loop.create_future(), True),
    "an object, coroutine closed": (lambda loop: object(), True),
}



def _assert_no_task_error(error: BaseException | None) -> None:
    """The error for what a task factory made in place of a task: ours on 3.11 and 3.12;
    on 3.13 create_task's own, as it calls the product's set_name, which these lack."""
    if sys.version_info >= (3, 13):
        assert isinstance(error, AttributeError), repr(error)
        assert "set_name" in str(error)
    else:
        assert isinstance(error, TypeError), repr(error)
        assert "the event loop's task factory must return an asyncio.Task (got " in str(error)


@pytest.mark.parametrize("product", list(_NO_TASKS))
def test_bridge_task_factory_making_no_task_breaks_the_executor(
    product: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: for a Future (3.11, 3.12) the loop waited for ever for it, so result(),
    # shutdown() and leaving ``with`` hung; for a coroutine the factory closed first, the
    # loop thread died in Runner.close() (threading.excepthook) with no BrokenLoopExecutor.
    reports = _Reports(monkeypatch)
    made: list[asyncio.AbstractEventLoop] = []
    gate = threading.Event()
    make, close = _NO_TASKS[product]
    before = set(threading.enumerate())

    def no_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        assert gate.wait(WAIT)
        if close:
            coro.close()
        return make(loop)

    exe = ThreadedLoopExecutor(max_workers=2, loop_factory=_loop_with(no_task, made))
    accepted = [exe.submit(_double, n) for n in range(3)]  # 2 given a slot, 1 waits for one
    gate.set()
    for future in accepted:
        exc = future.exception(timeout=WAIT)
        assert isinstance(exc, BrokenLoopExecutor), repr(exc)
        _assert_no_task_error(exc.__cause__)
    with pytest.raises(BrokenLoopExecutor, match="could not start its first task") as info:
        exe.submit(_double, 9)
    _assert_no_task_error(info.value.__cause__)
    with exe:  # leaves without raising
        pass
    assert made[0].is_closed()
    stats = exe.stats
    assert (stats.submitted, stats.queued, stats.running, stats.failed) == (3, 0, 0, 3)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []
    assert set(threading.enumerate()) <= before


def test_bridge_loop_closes_without_a_task_factory_that_fails_after_the_first_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: Runner.close() made its own tasks (closing the async generators and
    # the default executor) through the factory, which raised out of the loop thread
    # (threading.excepthook) with the loop left open.
    reports = _Reports(monkeypatch)
    made: list[asyncio.AbstractEventLoop] = []
    calls: list[object] = []

    def first_only(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        calls.append(coro)
        if len(calls) > 1:
            raise RuntimeError("one task only")
        return asyncio.Task(coro, loop=loop, **kwargs)

    with ThreadedLoopExecutor(loop_factory=_loop_with(first_only, made)) as exe:
        assert exe.submit(len, "ab").result(timeout=WAIT) == 2  # on a worker thread
    assert len(calls) == 1  # the loop's own last tasks did not go through it
    assert made[0].is_closed()
    gc.collect()
    assert reports.died == [] and reports.unraisable == []


@pytest.mark.skipif(uvloop is None or sys.version_info < (3, 12), reason="uvloop, 3.12+")
def test_bridge_on_uvloop_with_the_eager_task_factory_works_or_is_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvloop 0.23 calls the eager factory with eager_start=, which it refuses (3.13).
    reports = _Reports(monkeypatch)

    def factory() -> asyncio.AbstractEventLoop:
        loop = uvloop.new_event_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        return loop

    with ThreadedLoopExecutor(loop_factory=factory) as exe:
        try:
            outcome: object = exe.submit(_double, 21).result(timeout=WAIT)
        except BrokenLoopExecutor as exc:
            outcome = exc.__cause__
    assert outcome == 42 or isinstance(outcome, TypeError)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []


#
# The loop cannot make a job's task
#


class _Refusals:
    """A task factory that makes the loop's first task, then refuses jobs' tasks in one
    way (``how``) while ``refusing`` is set, and makes plain tasks otherwise."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.refusing = threading.Event()
        self.error = RuntimeError("no task for this job")
        self.calls = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1 or not self.refusing.is_set():
            return asyncio.Task(coro, loop=loop, **kwargs)
        if self.how.endswith("coroutine closed"):
            coro.close()
        if self.how.startswith("raises"):
            raise self.error
        return loop.create_future() if self.how.startswith("a Future") else None

    def check(self, error: BaseException | None) -> None:
        """The error a job whose task was refused fails with."""
        if self.how.startswith("raises"):
            assert error is self.error
        else:
            _assert_no_task_error(error)


_REFUSALS = [
    "raises",
    "raises, coroutine closed",
    "None",
    "None, coroutine closed",
    "a Future",
    "a Future, coroutine closed",
]


@pytest.mark.parametrize("how", _REFUSALS)
def test_bridge_job_whose_task_cannot_be_made_fails_and_the_executor_goes_on(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the loop thread died in Runner.close() (threading.excepthook); jobs
    # failed with an AttributeError about what the factory returned, or (a Future, 3.11
    # and 3.12) hung with their slot; stats counted the failed jobs as cancelled.
    reports = _Reports(monkeypatch)
    made: list[asyncio.AbstractEventLoop] = []
    refusals = _Refusals(how)
    before = set(threading.enumerate())
    exe = ThreadedLoopExecutor(max_workers=1, loop_factory=_loop_with(refusals, made))
    assert exe.submit(_double, 1).result(timeout=WAIT) == 2
    refusals.refusing.set()
    refused = [exe.submit(_double, n) for n in range(3)]  # each in turn in the one slot
    for future in refused:
        refusals.check(future.exception(timeout=WAIT))
    with pytest.raises((RuntimeError, TypeError, AttributeError)) as info:
        list(exe.map(_double, [7], timeout=WAIT))
    refusals.check(info.value)
    refusals.refusing.clear()
    assert exe.submit(_double, 5).result(timeout=WAIT) == 10  # its slot came back
    exe.shutdown(wait=True)
    assert made[0].is_closed()
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed, stats.cancelled) == (6, 2, 4, 0)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("how", ["raises", "None, coroutine closed", "a Future"])
def test_bridge_blocking_job_whose_awaitable_cannot_be_awaited_fails(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A blocking job's call returned an awaitable for the loop to await, in a task of
    # its own. Regression: the error of create_task went to the loop's exception handler
    # and the job's future never ended.
    reports = _Reports(monkeypatch)
    refusals = _Refusals(how)
    with ThreadedLoopExecutor(max_workers=1, loop_factory=_loop_with(refusals, [])) as exe:
        refusals.refusing.set()
        returns_awaitable = exe.submit(lambda: _double(2))
        refusals.check(returns_awaitable.exception(timeout=WAIT))
        refusals.refusing.clear()
        assert exe.submit(lambda: _double(3)).result(timeout=WAIT) == 6  # its slot came back
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.failed, stats.cancelled) == (2, 1, 1, 0)
    gc.collect()
    assert reports.died == [] and reports.unraisable == []


def test_bridge_job_cancelled_while_its_task_is_refused_counts_as_cancelled() -> None:
    # cancel() wins the race against the factory's error: the future ends cancelled, so
    # stats count the job as cancelled, not failed (they must agree with the future).
    holder: list[Any] = []
    submitted = threading.Event()

    def cancel_then_refuse(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if not holder:  # the loop's first task
            holder.append(None)
            return asyncio.Task(coro, loop=loop, **kwargs)
        assert submitted.wait(WAIT)
        assert holder[-1].cancel()
        raise RuntimeError("no task for this job")

    loop_factory = _loop_with(cancel_then_refuse, [])
    with ThreadedLoopExecutor(max_workers=1, loop_factory=loop_factory) as exe:
        holder.append(exe.submit(_double, 1))
        submitted.set()
    assert holder[-1].cancelled()
    stats = exe.stats
    assert (stats.submitted, stats.failed, stats.cancelled) == (1, 0, 1)
