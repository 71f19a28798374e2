"""Admission: job slots, the start-rate limit, the FIFO backlog, and starting jobs.

The bottom layer of CoroutineExecutor (admission <- error policy <- public API). All of
it runs on the executor's event loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import types
from typing import Any, Callable

from ._errors import check_job_fn
from ._jobs import as_coroutine, wrapped_job
from ._ratelimit import RateLimiter
from ._state import State

__all__ = ["Admission", "Queued"]

_CoroutineType = types.CoroutineType


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


class Admission:
    """Slots, backlog and job start. Invariant: ``_free + running + granted ==
    max_workers``, where *granted* counts slots handed to a waiter whose job has not
    started yet."""

    _state: State
    _loop: asyncio.AbstractEventLoop | None
    _max_workers: int
    _free: int  # slots not held by a running job or a granted waiter
    _running: set[asyncio.Future[Any]]
    # FIFO of Queued jobs (from submit_nowait) and slot waiters (from submit and map).
    # Cancelled entries stay until they reach the front. _queued counts the live jobs (they
    # are accepted: stats shows them), _waiting the live waiters (not yet accepted).
    _backlog: collections.deque[Queued | asyncio.Future[None]]
    _queued: int
    _waiting: int
    _limiter: RateLimiter | None
    _wake_handle: asyncio.TimerHandle | None
    _wrap: bool  # an initializer or a job_timeout: jobs need the wrapper coroutine
    _initializer: Callable[..., object] | None
    _initargs: tuple[Any, ...]
    _job_timeout: float | None
    _submitted: int
    _failed: int
    _cancelled: int
    _job_done_cb: Callable[[asyncio.Future[Any]], object]

    def _init_admission(
        self,
        max_workers: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        job_timeout: float | None,
    ) -> None:
        self._state = State.CREATED
        self._loop = None
        self._max_workers = max_workers
        self._free = max_workers
        self._running = set()
        self._backlog = collections.deque()
        self._queued = 0
        self._waiting = 0
        self._limiter = None
        self._wake_handle = None
        self._initializer = initializer
        self._initargs = initargs
        self._job_timeout = job_timeout
        self._wrap = initializer is not None or job_timeout is not None
        self._submitted = self._failed = self._cancelled = 0

    # Provided by the error-policy layer.
    def _job_failed(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _check_idle(self) -> None:
        raise NotImplementedError

    def _resize(self, value: int) -> None:
        self._free += value - self._max_workers
        self._max_workers = value
        if self._free > 0 and self._backlog:
            self._start_backlog()

    async def _acquire_slot(self) -> None:
        """Wait in the backlog until a slot is granted to us (self._free already taken)."""
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._backlog.append(waiter)
        self._waiting += 1
        self._schedule_wake()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._waiting -= 1  # we left the line; _start_backlog will skip the entry
            elif waiter.exception() is None:
                # Granted a slot, then cancelled before we could use it (asyncio's
                # Semaphore.acquire has the same race): pass the slot to the next in line.
                self._free += 1
                self._start_backlog()
                self._check_idle()
            raise

    def _schedule_wake(self) -> None:
        """Make sure the backlog moves when a slot or a token is already available."""
        if self._free > 0 and self._wake_handle is None and self._loop is not None:
            delay = 0.0 if self._limiter is None else self._limiter.delay()
            self._wake_handle = self._loop.call_later(delay, self._on_wake)

    def _on_wake(self) -> None:
        self._wake_handle = None
        self._start_backlog()

    def _start_backlog(self) -> None:
        """Admit queued jobs and slot waiters in FIFO order while slots and tokens last."""
        backlog = self._backlog
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
                entry.set_result(None)  # type: ignore[union-attr]

    def _start_queued(self, entry: Queued) -> None:
        future = entry.future
        try:
            task = self._start(entry.fn, entry.args, entry.kwargs, "submit_nowait", counted=True)
        except Exception as exc:
            # fn() raised or returned a non-awaitable: the job failed before it began.
            future.remove_done_callback(self._on_queued_done)
            future.set_exception(exc)
            future.exception()  # the executor owns the error (policy or suppress): no log
            self._failed += 1
            self._job_failed(exc)
            return
        future.remove_done_callback(self._on_queued_done)
        future.add_done_callback(lambda f: f.cancelled() and task.cancel())
        task.add_done_callback(lambda t: _copy_outcome(t, future))

    def _on_queued_done(self, future: asyncio.Future[Any]) -> None:
        """A queued job's future was cancelled before the job started."""
        self._queued -= 1
        self._cancelled += 1
        self._check_idle()

    def _start(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        where: str,
        counted: bool = False,
        done_callback: Callable[[asyncio.Future[Any]], object] | None = None,
    ) -> asyncio.Future[Any]:
        """Start a job in a slot the caller already holds (self._free already taken).

        The hot path of every submit: keep it to one call of fn, one task and one callback.
        """
        try:
            coro = fn(*args, **kwargs)
            if type(coro) is not _CoroutineType:
                coro = as_coroutine(coro, fn)
            if self._wrap:
                inner = coro
                coro = wrapped_job(self._initializer, self._initargs, self._job_timeout, inner)
            task = self._loop.create_task(coro)  # type: ignore[union-attr]
        except BaseException:
            self._free += 1  # give the slot back
            if self._backlog:
                self._schedule_wake()
            self._check_idle()
            if not callable(fn):
                check_job_fn(fn, where)  # the clearer error for a coroutine object
            raise
        if self._wrap:
            # If the wrapper never runs (cancelled before its first step, or the
            # initializer failed), close the job's coroutine: no "never awaited" warning.
            task.add_done_callback(lambda _: inner.close())
        self._running.add(task)
        if not counted:
            self._submitted += 1
        task.add_done_callback(done_callback or self._job_done_cb)
        return task



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
