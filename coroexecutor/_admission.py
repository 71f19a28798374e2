"""Admission: job slots, the start-rate limit, the FIFO backlog, and starting jobs.

The bottom layer of CoroutineExecutor (admission <- error policy <- public API). All of
it runs on the executor's event loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import types
from collections.abc import Coroutine
from typing import Any, Callable

from ._errors import check_job_fn
from ._jobs import JobTask, as_coroutine, prime, wrapped_job
from ._ratelimit import RateLimiter
from ._state import State

__all__ = ["NATIVE_LOOP", "Admission", "Queued", "initializing", "job_position", "task_probe"]

_CoroutineType = types.CoroutineType
_getcoroutinestate = inspect.getcoroutinestate
_CORO_CLOSED = inspect.CORO_CLOSED
# The innermost executor whose job the current context runs in (None: no job). Every
# job's task sets it in its own context, so the tasks a job starts (a TaskGroup's, an
# inner executor's jobs, wait_for's on Python < 3.12) inherit it. Read by shutdown().
job_position: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "coroexecutor_job_position", default=None
)
# The executors whose initializer the current context runs in, innermost last. Set in the
# initializer's own task (see Startup._start_initializer), so the tasks it starts (its
# helpers, wait_for's on Python < 3.12, an inner executor's jobs) inherit it too.
initializing: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "coroexecutor_initializing", default=()
)
NATIVE_LOOP = 1
_UVLOOP = 2


def task_probe(loop: asyncio.AbstractEventLoop) -> int:
    """Whether _start may build a job's Task itself on ``loop`` (see Admission)."""
    create_task = type(loop).create_task
    if create_task is asyncio.BaseEventLoop.create_task:
        return NATIVE_LOOP
    # uvloop's create_task also calls asyncio.Task(coro, loop=loop) when no factory is set.
    if type(loop).__module__ == "uvloop" and type(loop).__name__ == "Loop":
        return _UVLOOP
    return 0


class Queued:
    """A job accepted by submit_nowait() while every slot was taken, waiting in the backlog."""

    __slots__ = ("args", "ctx", "fn", "future", "kwargs")

    def __init__(
        self,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # The job runs in a copy of the submitter's context, as asyncio.create_task()
        # would have given it had it started at once.
        self.ctx = contextvars.copy_context()


class SentBack(asyncio.Future[None]):
    """The place in the backlog of a waiter whose slot went back because ``max_workers``
    shrank between the grant and its resumption (see Admission._wait_again)."""

    __slots__ = ()


class Admission:
    """Slots, backlog and job start. Invariant: ``_free + running + granted ==
    max_workers``, where *granted* counts slots handed to a waiter whose job has not
    started yet."""

    # Slots, not an instance __dict__: the executor has more attributes than CPython
    # 3.11's shared-key dicts hold (30), so with a __dict__ every attribute read on the
    # hot path would be a dict lookup instead of a slot read.
    __slots__ = (
        "_backlog", "_cancelled", "_failed", "_fast", "_free", "_granted", "_init_task",
        "_inline", "_job_timeout", "_limiter", "_loop", "_max_workers", "_queued",
        "_running", "_state", "_waiting", "_wake_handle", "_wrap",
    )

    _state: State
    _loop: asyncio.AbstractEventLoop | None
    _max_workers: int
    _free: int  # slots not held by a running job or a granted waiter
    # Running jobs' tasks, keyed by the job's own coroutine for jobs that complete in-line
    # (the runner finds its entry without knowing its task) and by the task otherwise.
    _running: dict[object, asyncio.Future[Any]]
    # FIFO of Queued jobs (from submit_nowait) and slot waiters (from submit and map).
    # Cancelled entries stay until they reach the front. _queued counts the live jobs (they
    # are accepted: stats shows them), _waiting the live waiters (not yet accepted).
    _backlog: collections.deque[Queued | asyncio.Future[None]]
    _queued: int
    _waiting: int
    _granted: int  # slots handed to a waiter that has not resumed yet
    _limiter: RateLimiter | None
    _wake_handle: asyncio.TimerHandle | None
    _wrap: bool  # a job_timeout: jobs need the wrapper coroutine
    _job_timeout: float | None
    # The initializer's task while it runs (see Startup): no job starts meanwhile. No job
    # runs then either, so only _on_wake and _resize can reach _start_backlog: they check.
    _init_task: asyncio.Task[None] | None
    # Whether a job's Task may be built directly, as the loop's create_task would when no
    # task factory is set: NATIVE_LOOP (asyncio's own create_task), _UVLOOP, or 0 (never,
    # and always 0 unless jobs complete in-line). Read by _start and by the written-out
    # starts of submit() and MapIterator.__anext__(), which check the factory its way.
    _fast: int
    _failed: int
    _cancelled: int
    _inline: bool  # jobs settle their bookkeeping in their own last step (no hook, no wrap)

    def _init_admission(self, max_workers: int, job_timeout: float | None) -> None:
        self._state = State.CREATED
        self._loop = None
        self._max_workers = max_workers
        self._free = max_workers
        self._running = {}
        self._backlog = collections.deque()
        self._queued = 0
        self._waiting = 0
        self._granted = 0
        self._limiter = None
        self._wake_handle = None
        self._job_timeout = job_timeout
        self._wrap = job_timeout is not None
        self._init_task = None
        self._fast = 0
        self._failed = self._cancelled = 0

    # Provided by the error-policy layer.
    def _job_failed(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _check_idle(self) -> None:
        raise NotImplementedError

    def _run_job(
        self, coro: Coroutine[Any, Any, Any], value_job: bool, registered: bool
    ) -> Coroutine[Any, Any, Any]:
        raise NotImplementedError

    def _on_job_done(self, task: asyncio.Future[Any]) -> None:
        raise NotImplementedError

    def _on_value_job_done(self, task: asyncio.Future[Any]) -> None:
        raise NotImplementedError

    def _cancel_late(self, task: asyncio.Future[Any]) -> None:
        raise NotImplementedError

    def _tearing_down(self, freed_by: asyncio.Future[Any] | None) -> bool:
        raise NotImplementedError

    def _running_count(self) -> int:
        # Each running job holds a slot; so does a waiter granted one, until it resumes.
        return self._max_workers - self._free - self._granted

    def _resize(self, value: int) -> None:
        self._free += value - self._max_workers
        self._max_workers = value
        if self._free > 0 and self._backlog and self._init_task is None:
            self._start_backlog()

    async def _acquire_slot(self) -> None:
        """Wait in the backlog until a slot is granted to us, and start our job only while
        fewer than ``max_workers`` run (``free + granted > 0``, this grant counted in
        ``granted``) and no waiter ahead of us was sent back: see _must_wait_again.

        submit() has this written out (a coroutine less per wait)."""
        assert self._loop is not None
        if self._init_task is not None:
            self._check_not_initializer("map()")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._backlog.append(waiter)
        self._waiting += 1
        self._schedule_wake()
        try:
            await waiter
            while self._free + self._granted <= 0 or (
                self._backlog and type(self._backlog[0]) is SentBack
            ):
                if not self._must_wait_again(waiter):
                    break
                waiter = self._wait_again()
                await waiter
        except asyncio.CancelledError:
            self._left_line(waiter)
            raise
        self._granted -= 1

    def _check_not_initializer(self, call: str) -> None:
        """Refuse a wait the initializer, or a task it started, would make for itself
        (only while it runs)."""
        if self._init_task is not None and self in initializing.get():
            raise RuntimeError(
                f"{call} cannot wait in the initializer of {self!r}: no job starts"
                " before the initializer returns"
            )

    def _must_wait_again(self, waiter: asyncio.Future[None]) -> bool:
        """Whether a waiter just resumed with a granted slot must give it back.

        Yes if ``max_workers`` jobs run (the limit shrank between the grant and now:
        granted waiters resume in the order they were granted, so the earliest start
        while there is room), or if a waiter ahead of it in the line was sent back so and
        still waits (a slot freed meanwhile must go to that one first). A waiter that was
        sent back itself has none of those ahead of it."""
        if self._state is State.CANCELLING:
            return False  # the caller gives the slot back and raises
        if self._free + self._granted <= 0:
            return True
        if type(waiter) is SentBack:
            return False
        for entry in self._backlog:
            if type(entry) is not SentBack:
                return False
            if not entry.done():  # (a done one was cancelled: it left the line)
                return True
        return False

    def _wait_again(self) -> asyncio.Future[None]:
        """Give the granted slot back and wait again, ahead of every waiter never granted
        one and behind those sent back before us (see _must_wait_again)."""
        self._granted -= 1
        self._free += 1
        waiter = SentBack(loop=self._loop)
        backlog = self._backlog
        ahead = 0  # the SentBack waiters form a prefix of the backlog: only they go first
        while ahead < len(backlog) and type(backlog[ahead]) is SentBack:
            ahead += 1
        backlog.insert(ahead, waiter)
        self._waiting += 1
        if self._free > 0:  # we stepped aside for a waiter sent back before us: grant it
            self._start_backlog()
        return waiter

    def _left_line(self, waiter: asyncio.Future[None]) -> None:
        """A slot waiter was cancelled: leave the line, or pass on a slot just granted."""
        if waiter.cancelled():
            self._waiting -= 1  # we left the line; _start_backlog will skip the entry
        elif waiter.exception() is None:
            # Granted a slot, then cancelled before we could use it (asyncio's
            # Semaphore.acquire has the same race): pass the slot to the next in line.
            self._granted -= 1
            self._free += 1
            self._start_backlog()
            self._check_idle()

    def _schedule_wake(self) -> None:
        """Make sure the backlog moves when a slot or a token is already available."""
        if self._free > 0 and self._wake_handle is None and self._loop is not None:
            delay = 0.0 if self._limiter is None else self._limiter.delay()
            self._wake_handle = self._loop.call_later(delay, self._on_wake)

    def _on_wake(self) -> None:
        self._wake_handle = None
        if self._init_task is None:  # else the initializer starts the backlog as it returns
            self._start_backlog()

    def _start_backlog_after_job(self) -> None:
        """Admit the backlog from a job's own last step (in-line completion).

        With no task factory, a job's task takes its first step in a later turn of the
        loop, so admitting here is safe and costs nothing. A task factory (an eager one
        runs the first step inside create_task) would run the next job's first step nested
        inside this one's last step: each job completing in-line would start the next one
        deeper in the stack (a RecursionError with a long backlog) and keep this job's
        frame, and its result, alive meanwhile. So then admit from a wake-up instead."""
        loop = self._loop
        probe = self._fast
        if probe and (
            loop._task_factory  # type: ignore[union-attr]
            if probe == NATIVE_LOOP
            else loop.get_task_factory()  # type: ignore[union-attr]
        ) is None:
            self._start_backlog()
        elif not self._tearing_down(None):  # asked now, in the job's own last step
            self._schedule_wake()

    def _start_backlog(self, freed_by: asyncio.Future[Any] | None = None) -> None:
        """Admit queued jobs and slot waiters in FIFO order while slots and tokens last.

        ``freed_by``: the task of the job whose end freed the slot, when that is not the
        current task (a done callback settled it)."""
        backlog = self._backlog
        if self._free > 0 and backlog and self._tearing_down(freed_by):
            return  # every queued job was cancelled instead
        while self._free > 0 and backlog:
            entry = backlog[0]
            if (entry.future if type(entry) is Queued else entry).done():  # type: ignore[union-attr]
                backlog.popleft()  # cancelled while queued: already uncounted
                continue
            if self._limiter is not None and not self._limiter.try_take():
                self._schedule_wake()
                return
            backlog.popleft()
            self._free -= 1
            if type(entry) is Queued:
                self._queued -= 1
                entry.ctx.run(self._start_queued, entry)
            else:
                self._waiting -= 1
                self._granted += 1
                entry.set_result(None)  # type: ignore[union-attr]

    def _start_queued(self, entry: Queued) -> None:
        future = entry.future
        try:
            task = self._start(entry.fn, entry.args, entry.kwargs, "submit_nowait")
        except Exception as exc:
            # fn() raised or returned a non-awaitable: the job failed before it began.
            future.remove_done_callback(self._on_queued_done)
            future.set_exception(exc)
            future.exception()  # the executor owns the error (policy or suppress): no log
            self._failed += 1
            self._job_failed(exc)
            return
        except BaseException as exc:
            # KeyboardInterrupt or SystemExit: from an eager first step (the job ran and
            # settled itself) or from fn(). Its future carries it, and it leaves the event
            # loop from a callback of its own, as asyncio lets it leave from a task: not
            # from here, which may be the last step of another job, whose outcome it is not.
            future.remove_done_callback(self._on_queued_done)
            future.set_exception(exc)
            future.exception()
            self._loop.call_soon(_raise, exc)  # type: ignore[union-attr]
            return
        future.remove_done_callback(self._on_queued_done)
        future.add_done_callback(lambda f: f.cancelled() and task.cancel())
        task.add_done_callback(lambda t: _copy_outcome(t, future))

    def _on_queued_done(self, future: asyncio.Future[Any]) -> None:
        """A queued job's future was cancelled before the job started."""
        self._queued -= 1
        self._cancelled += 1
        self._check_idle()

    def _start_failed(
        self,
        fn: Callable[..., Any],
        where: str,
        runner: Coroutine[Any, Any, Any] | None,
        coro: Coroutine[Any, Any, Any],
    ) -> None:
        """Starting a job raised: give its slot back (the caller re-raises)."""
        if runner is not None:  # made, but never became a task
            runner.close()
            coro.close()  # never ran: no "never awaited" warning
        self._release_slot()
        if not callable(fn):
            check_job_fn(fn, where)  # the clearer error for a coroutine object

    def _release_slot(self) -> None:
        """Give back a slot the caller holds but will not start a job in."""
        self._free += 1
        if self._backlog:
            self._schedule_wake()
        self._check_idle()

    def _start(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        where: str,
        value_job: bool = False,
    ) -> asyncio.Future[Any]:
        """Start a job in a slot the caller already holds (self._free already taken).

        ``value_job``: a map(return_exceptions=True) job, whose error is a result, not a
        policy decision. The hot path of every submit: one call of fn, one runner
        coroutine, one task and no done callback. A JobTask primes its runner if it is
        cancelled before its first step; a task from the loop's task factory gets a runner
        primed now, as that task's cancel is not ours.
        """
        runner: Coroutine[Any, Any, Any] | None = None
        coro: Any = None
        settled = False
        try:
            coro = fn(*args, **kwargs)
            if type(coro) is not _CoroutineType:
                coro = as_coroutine(coro, fn)
            loop = self._loop
            if self._inline:
                runner = self._run_job(coro, value_job, True)
                probe = self._fast
                if probe and (
                    loop._task_factory  # type: ignore[union-attr]
                    if probe == NATIVE_LOOP
                    else loop.get_task_factory()  # type: ignore[union-attr]
                ) is None:
                    # What the loop's create_task does with no task factory, minus a call.
                    # (loop= costs the call a keyword argument, but without it the Task
                    # looks up the running loop, which on CPython makes a getpid() system
                    # call: far dearer.)
                    task: asyncio.Future[Any] = JobTask(runner, loop=loop)
                    self._running[coro] = task
                    return task
                prime(runner)
                try:
                    task = loop.create_task(runner)  # type: ignore[union-attr]
                except BaseException:
                    if _getcoroutinestate(runner) == _CORO_CLOSED:
                        # An eager task factory ran the job to its end inside create_task,
                        # and its KeyboardInterrupt or SystemExit came out of it, as
                        # asyncio's eager start re-raises them: the runner has settled the
                        # job (slot, counts, policy) already, so only pass the error on.
                        settled = True
                    raise
                if not task.done():  # an eager task factory may have run the job to its end
                    self._running[coro] = task
                    if self._state is State.CANCELLING:  # its first step stopped us
                        self._cancel_late(task)
                return task
            job = coro
            if self._job_timeout is not None:
                job = runner = wrapped_job(self._job_timeout, coro, fn, args, kwargs)
            # The task's context, and those of the tasks it starts, know they run in a job
            # of ours (_run_job does this for in-line jobs). create_task copies the
            # current context, and an eager first step runs in that copy.
            ctx = contextvars.copy_context()
            ctx.run(job_position.set, self)
            task = ctx.run(loop.create_task, job)  # type: ignore[union-attr]
        except BaseException:
            if not settled:  # else the job ran and settled itself (see above)
                self._start_failed(fn, where, runner, coro)
            raise
        if runner is not None:
            # If the wrapper never runs (cancelled before its first step), close the
            # job's coroutine, the one coroutine it holds: no "never awaited" warning.
            task.add_done_callback(lambda _: coro.close())
        self._running[task] = task
        task.add_done_callback(self._on_value_job_done if value_job else self._on_job_done)
        if self._state is State.CANCELLING and not task.done():  # its first step stopped us
            self._cancel_late(task)
        return task


def _raise(exc: BaseException) -> None:
    raise exc


def _copy_outcome(task: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    """Copy a started job's outcome into the future submit_nowait() returned for it."""
    if future.done():
        return
    if task.cancelled():
        future.cancel()
        return
    exc = task.exception()
    if exc is None:
        future.set_result(task.result())
    else:
        future.set_exception(exc)
        future.exception()  # the executor owns the error (policy or suppress): no log
