"""CoroutineExecutor: bounded concurrency, back-pressure and the error policy."""

from __future__ import annotations

import asyncio
import collections
import enum
import sys
import types
from collections.abc import AsyncIterable, Awaitable, Iterable
from types import TracebackType
from typing import Any, Callable, Literal, Optional, TypeVar, overload

from typing_extensions import ParamSpec, Self, final

from ._admission import Queued, RateLimiter, check_max_workers, check_rate, check_seconds
from ._errors import DeadlineExceeded, check_job_fn
from ._jobs import as_coroutine, wrapped_job
from ._map import MapIterator
from ._state import State as _State
from ._stats import ExecutorStats

__all__ = ["CoroutineExecutor", "MapIterator"]

P = ParamSpec("P")
T = TypeVar("T")
JobHook = Callable[["asyncio.Future[Any]"], object]

_SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_CoroutineType = types.CoroutineType


class _Cause(enum.Enum):
    """Why the executor started cancelling its jobs: decides what the block raises."""

    JOB_ERROR = "a job failed"
    DEADLINE = "the deadline passed"
    BODY = "the block raised or was cancelled"
    SHUTDOWN = "shutdown() cancelled the jobs"


_RUNNING = _State.RUNNING
_ACCEPTING = (_State.RUNNING, _State.EXITING)


@final
class CoroutineExecutor:
    """Runs coroutine functions as tasks, at most ``max_workers`` at a time.

    Use it as ``async with CoroutineExecutor(...) as exe:``; leaving the block waits for
    every job, so no job outlives it. See the package documentation for the error policy.

    Args:
        max_workers: how many jobs may run at once.
        suppress_task_errors: when true, a job's error stays in its task and nothing else
            is cancelled; when false (the default), the first error cancels every other job,
            interrupts the body of the block and is re-raised by the block.
        initializer: called as ``initializer(*initargs)`` (and awaited if it returns an
            awaitable) inside each job before the job's function.
        initargs: arguments for ``initializer``.
        timeout: seconds from entering the block (or the first submit) until every job is
            cancelled and the block raises ``TimeoutError``.
        max_per_second: the most jobs that may *start* per second (``None``: no limit).
        burst: how many jobs may start at once after an idle period when
            ``max_per_second`` is set (default 1).
        job_timeout: seconds a single job may hold its slot; a job that runs longer is
            cancelled and fails with ``TimeoutError``, which then follows the error policy.
        on_job_done: called with each finished job's future, on the event loop; an
            exception it raises is reported to the loop's exception handler.

    Raises:
        ValueError: ``max_workers`` below 1, or a non-positive time, rate or burst.
        TypeError: an argument of the wrong kind, such as a non-callable ``initializer``.
    """

    def __init__(
        self,
        max_workers: int = 1000,
        *,
        suppress_task_errors: bool = False,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        timeout: Optional[float] = None,
        max_per_second: Optional[float] = None,
        burst: Optional[int] = None,
        job_timeout: Optional[float] = None,
        on_job_done: Optional[JobHook] = None,
    ) -> None:
        self._max_workers = check_max_workers(max_workers)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable or None (got {initializer!r})")
        if on_job_done is not None and not callable(on_job_done):
            raise TypeError(f"on_job_done must be a callable or None (got {on_job_done!r})")
        self._suppress = bool(suppress_task_errors)
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._timeout = check_seconds("timeout", timeout)
        self._job_timeout = check_seconds("job_timeout", job_timeout)
        self._rate, self._burst = check_rate(max_per_second, burst)
        self._hook = on_job_done
        self._wrap = initializer is not None or self._job_timeout is not None

        self._state = _State.CREATED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: RateLimiter | None = None
        self._free = self._max_workers  # slots not held by a running or granted job
        self._running: set[asyncio.Future[Any]] = set()
        # FIFO of Queued jobs (from submit_nowait) and slot waiters (from submit/map).
        # Cancelled entries stay until they reach the front; _queued counts the live ones.
        self._backlog: collections.deque[Queued | asyncio.Future[None]] = collections.deque()
        self._queued = 0
        self._our_cancels: set[asyncio.Future[Any]] = set()
        self._idle_waiter: asyncio.Future[None] | None = None
        self._wake_handle: asyncio.TimerHandle | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._cause: _Cause | None = None
        self._first_error: BaseException | None = None
        self._error_delivered = False
        self._parent: asyncio.Task[Any] | None = None  # the task running the async-with body
        self._in_body = False
        self._parent_cancel_requested = False
        self._submitted = self._succeeded = self._failed = self._cancelled = 0
        self._job_done_cb = self._on_job_done  # bound once: added to every job

    def __repr__(self) -> str:
        running = len(self._running)
        return (
            f"<CoroutineExecutor {self._state.value} {running}/{self._max_workers}"
            f" backlog={self._queued}>"
        )

    #
    # Properties
    #

    @property
    def max_workers(self) -> int:
        """How many jobs may run at once. Settable while jobs run.

        Growing the limit starts queued jobs at once. Shrinking it cancels nothing: running
        jobs finish, and no new job starts until fewer than the new limit are running.
        """
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        value = check_max_workers(value)
        self._free += value - self._max_workers
        self._max_workers = value
        if self._free > 0 and self._backlog:
            self._start_backlog()

    @property
    def stats(self) -> ExecutorStats:
        """A read-only snapshot of the job counts (cheap: no job is visited)."""
        return ExecutorStats(
            submitted=self._submitted,
            queued=self._queued,
            running=len(self._running),
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
        )

    #
    # Submitting
    #

    async def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Task[T]:
        """Start ``fn(*args, **kwargs)`` as a job, waiting for a free slot if need be.

        Returns the job's task, already scheduled. When ``max_workers`` jobs are running
        (or others are queued ahead), this waits, in FIFO order, until a slot is free: that
        is the back-pressure that keeps a fast producer in bounded memory.

        Cancellation: cancelling the caller while it waits for a slot submits nothing; a
        slot granted at that moment passes to the next in line.

        Raises:
            RuntimeError: the executor is shut down or shutting down.
            TypeError: ``fn`` is not callable, is a coroutine object, or did not return an
                awaitable. An exception from calling ``fn`` propagates from here.
        """
        if self._state is not _RUNNING:
            self._check_accepting()
        if self._free > 0 and not self._backlog and (not self._limiter or self._limiter.try_take()):
            self._free -= 1
        else:
            await self._acquire_slot()
            if self._state is _State.CANCELLING:
                self._free += 1  # granted just before an abort: give it back
                self._check_accepting()
        return self._start(fn, args, kwargs, "submit")  # type: ignore[return-value]

    def submit_nowait(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """Start ``fn(*args, **kwargs)`` now if a slot is free, else queue it; never waits.

        Returns the job's task when it started at once, or a future that follows the job
        once it starts: queued jobs start in FIFO order as slots free up. Must be called on
        the executor's event loop thread.

        Cancellation: cancelling the returned future drops a queued job (it never runs)
        and cancels a running one.

        Raises:
            RuntimeError: the executor is shut down or shutting down.
            TypeError: as for :meth:`submit`. For a queued job, errors from calling ``fn``
                fail its future instead and follow the error policy.
        """
        if self._state is not _RUNNING:
            self._check_accepting()
        if self._free > 0 and not self._backlog and (not self._limiter or self._limiter.try_take()):
            self._free -= 1
            return self._start(fn, args, kwargs, "submit_nowait")
        if not callable(fn):
            check_job_fn(fn, "submit_nowait")
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._backlog.append(Queued(future, fn, args, kwargs))
        self._queued += 1
        self._submitted += 1
        future.add_done_callback(self._on_queued_done)
        self._schedule_wake()
        return future

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: Literal[True],
    ) -> MapIterator[T | BaseException]: ...

    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: bool = False,
    ) -> MapIterator[T] | MapIterator[T | BaseException]:
        """Run ``fn`` over the inputs; iterate the results in input order.

        Inputs (sync or async iterables, zipped as ``map`` does) are read lazily: at most
        ``buffersize`` jobs (default ``max_workers``) are started ahead of the result the
        consumer is waiting for, so any input size runs in bounded memory.

        Errors: on a job error the map's remaining jobs are cancelled and the error is
        raised from the iterator (under fail-fast the whole executor is cancelled too, and
        the block raises it). With ``return_exceptions=True`` a job's exception is yielded
        in place of its result instead and does not trigger fail-fast.

        Cancellation: leaving the loop early (``break``, an exception, ``aclose()``)
        cancels the map's in-flight jobs; those cancellations are not errors.
        """
        self._check_accepting()
        return MapIterator(self, fn, iterables, buffersize, True, return_exceptions)

    @overload
    def map_unordered(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def map_unordered(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: Literal[True],
    ) -> MapIterator[T | BaseException]: ...

    def map_unordered(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: bool = False,
    ) -> MapIterator[T] | MapIterator[T | BaseException]:
        """Like :meth:`map`, but yields each result as soon as its job finishes.

        ``buffersize`` bounds the jobs in flight plus finished results not yet consumed.
        Errors and cancellation behave as for :meth:`map`.
        """
        self._check_accepting()
        return MapIterator(self, fn, iterables, buffersize, False, return_exceptions)

    def _check_accepting(self) -> None:
        state = self._state
        if state in _ACCEPTING:
            return
        if state is _State.CREATED:
            self._bind()
            return
        if state is _State.CANCELLING:
            raise RuntimeError(f"{_SHUTDOWN_MESSAGE} ({self!r} is cancelling its jobs)")
        raise RuntimeError(_SHUTDOWN_MESSAGE)

    def _bind(self) -> None:
        """First use: tie the executor to the running loop and start the deadline."""
        loop = self._loop = asyncio.get_running_loop()
        self._state = _RUNNING
        if self._rate is not None:
            self._limiter = RateLimiter(self._rate, self._burst, loop.time)
        if self._timeout is not None:
            self._deadline_handle = loop.call_later(self._timeout, self._abort, _Cause.DEADLINE)

    #
    # Admission: slots, rate and the backlog
    #

    async def _acquire_slot(self) -> None:
        """Wait in the backlog until a slot is granted to us (self._free already taken)."""
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._backlog.append(waiter)
        self._queued += 1
        self._schedule_wake()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._queued -= 1  # we left the line; _start_backlog will skip the entry
            elif waiter.exception() is None:
                # Granted a slot, then cancelled before we could use it (asyncio's
                # Semaphore.acquire has the same race): pass the slot to the next in line.
                self._free += 1
                self._start_backlog()
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
            self._queued -= 1
            self._free -= 1
            if type(entry) is Queued:
                entry.ctx.run(self._start_queued, entry)
            else:
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
            if self._wrap:
                coro = wrapped_job(
                    self._initializer, self._initargs, self._job_timeout, fn, args, kwargs
                )
            else:
                coro = fn(*args, **kwargs)
                if type(coro) is not _CoroutineType:
                    coro = as_coroutine(coro, fn)
            task = self._loop.create_task(coro)  # type: ignore[union-attr]
        except BaseException:
            self._free += 1  # give the slot back
            if self._backlog:
                self._schedule_wake()
            if not callable(fn):
                check_job_fn(fn, where)  # the clearer error for a coroutine object
            raise
        self._running.add(task)
        if not counted:
            self._submitted += 1
        task.add_done_callback(done_callback or self._job_done_cb)
        return task

    #
    # Completion and the error policy
    #

    def _on_job_done(self, task: asyncio.Future[Any]) -> None:
        """The only place that turns a finished job into a policy decision."""
        self._running.discard(task)
        self._free += 1
        if task.cancelled():
            self._cancelled += 1
            if task in self._our_cancels:
                self._our_cancels.discard(task)
            elif self._state is not _State.CANCELLING:
                # Cancelled from outside: under fail-fast that counts as the job's error.
                try:
                    task.result()
                except asyncio.CancelledError as exc:
                    self._job_failed(exc)
        else:
            # Reading the exception is also what stops asyncio logging
            # "Task exception was never retrieved" for jobs whose handle was dropped.
            error = task.exception()
            if error is None:
                self._succeeded += 1
            else:
                self._failed += 1
                self._job_failed(error)
        if self._backlog:
            self._start_backlog()
        if self._idle_waiter is not None:
            self._check_idle()
        if self._hook is not None:
            self._call_hook(task)

    def _on_value_job_done(self, task: asyncio.Future[Any]) -> None:
        """Completion of a map(return_exceptions=True) job: its error is a result."""
        self._running.discard(task)
        self._free += 1
        if task.cancelled():
            self._cancelled += 1
            self._our_cancels.discard(task)
        elif task.exception() is None:
            self._succeeded += 1
        else:
            self._failed += 1
        if self._backlog:
            self._start_backlog()
        if self._idle_waiter is not None:
            self._check_idle()
        if self._hook is not None:
            self._call_hook(task)

    def _job_failed(self, exc: BaseException) -> None:
        if not self._suppress and self._state is not _State.CANCELLING:
            self._abort(_Cause.JOB_ERROR, exc)

    def _call_hook(self, task: asyncio.Future[Any]) -> None:
        try:
            self._hook(task)  # type: ignore[misc]
        except Exception as exc:
            self._loop.call_exception_handler(  # type: ignore[union-attr]
                {"message": "on_job_done hook raised", "exception": exc, "future": task}
            )

    def _cancel_job(self, task: asyncio.Future[Any]) -> None:
        """Cancel one job on the executor's own behalf (map left early): not an error."""
        if not task.done():
            self._our_cancels.add(task)
            task.cancel()

    def _abort(self, cause: _Cause, error: BaseException | None = None) -> None:
        """Cancel every running and queued job. Idempotent; the first cause wins."""
        if self._cause is None:
            self._cause = cause
            self._first_error = error
        if self._state is _State.CANCELLING or self._state is _State.CLOSED:
            return
        self._state = _State.CANCELLING
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        for task in list(self._running):
            task.cancel()
        backlog, self._backlog = self._backlog, collections.deque()
        for entry in backlog:
            if type(entry) is Queued:
                entry.future.cancel()  # _on_queued_done uncounts it
            elif not entry.done():  # type: ignore[union-attr]
                self._queued -= 1
                entry.set_exception(  # type: ignore[union-attr]
                    RuntimeError(f"{_SHUTDOWN_MESSAGE} ({self!r} is cancelling its jobs)")
                )
        if cause in (_Cause.JOB_ERROR, _Cause.DEADLINE) and self._in_body:
            # Interrupt the body at its next await, as asyncio.TaskGroup does to its parent,
            # so a producer still submitting stops at once. __aexit__ undoes it.
            parent = self._parent
            if parent is not None and not parent.done() and not self._parent_cancel_requested:
                self._parent_cancel_requested = True
                parent.cancel()
        self._check_idle()

    def _check_idle(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not self._busy() and not waiter.done():
            waiter.set_result(None)

    def _busy(self) -> bool:
        # A granted slot whose job has not started yet is busy too: free counts it.
        return self._free != self._max_workers or self._queued > 0

    async def _wait_idle(self) -> asyncio.CancelledError | None:
        """Wait until no job runs or waits. Cancelled meanwhile: cancel the jobs, keep
        waiting (no job may outlive us), and return the CancelledError to re-raise."""
        cancelled: asyncio.CancelledError | None = None
        while self._busy():
            self._idle_waiter = self._loop.create_future()  # type: ignore[union-attr]
            try:
                await self._idle_waiter
            except asyncio.CancelledError as exc:
                cancelled = exc
                self._abort(_Cause.BODY)
            finally:
                self._idle_waiter = None
        return cancelled

    def _close(self) -> None:
        self._state = _State.CLOSED
        self._backlog.clear()
        for handle in (self._deadline_handle, self._wake_handle):
            if handle is not None:
                handle.cancel()

    def _policy_error(self) -> BaseException | None:
        """The exception the error policy says the block (or shutdown()) raises, if any."""
        if self._error_delivered:
            return None
        if self._cause is _Cause.JOB_ERROR:
            self._error_delivered = True
            return self._first_error
        if self._cause is _Cause.DEADLINE:
            self._error_delivered = True
            return DeadlineExceeded(f"{self!r} timed out after {self._timeout} seconds")
        return None

    #
    # Lifecycle
    #

    async def __aenter__(self) -> Self:
        if self._state is not _State.CREATED:
            raise RuntimeError(f"{self!r} has already been used; create a new executor")
        self._bind()
        self._parent = asyncio.current_task()
        self._in_body = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._in_body = False
        ours = False
        if exc is not None:
            if isinstance(exc, asyncio.CancelledError) and self._parent_cancel_requested:
                ours = self._uncancel_parent()  # our own interruption of the body
            if not ours:
                self._abort(_Cause.BODY)  # the body raised or was cancelled: cancel every job
        if self._state is _RUNNING:
            self._state = _State.EXITING
        late_cancel = await self._wait_idle()
        self._close()
        self._uncancel_parent()  # the body swallowed our interruption: still withdraw it
        error = self._policy_error()
        if error is not None:
            # A job error (or the deadline) came first: it wins over what followed, as the
            # first error does in asyncio.TaskGroup.
            if error is exc:
                return False
            raise error
        if late_cancel is not None:
            raise late_cancel  # cancelled while waiting for the jobs: not swallowed
        return None

    def _uncancel_parent(self) -> bool:
        """Withdraw our interruption of the body, once. True if the body's pending
        cancellation was only ours."""
        if not self._parent_cancel_requested:
            return False
        self._parent_cancel_requested = False
        if sys.version_info >= (3, 11):
            return self._parent.uncancel() == 0  # type: ignore[union-attr]
        return True  # 3.9/3.10 cannot count cancel requests: assume it was ours

    async def shutdown(self, wait: bool = True, *, timeout: float | None = None) -> None:
        """Stop accepting jobs and wait until none is running or queued.

        With ``wait=True``, running and queued jobs finish normally; with ``timeout``,
        whatever is still running after that many seconds is cancelled. With
        ``wait=False``, running and queued jobs are cancelled at once. Either way this
        returns only once every job has finished (or finished cancelling).

        Errors: used without ``async with``, this raises the error the policy names:
        the first job error under fail-fast, or ``TimeoutError`` when the executor's
        ``timeout`` passed. Cancellations the executor caused are never raised.

        Cancellation: cancelling the caller cancels every job, waits for them, then
        re-raises the cancellation.
        """
        grace = check_seconds("timeout", timeout)
        if self._state is _State.CREATED:
            self._close()
            return
        if self._state in _ACCEPTING:
            self._state = _State.DRAINING
        grace_handle = None
        if not wait:
            self._abort(_Cause.SHUTDOWN)
        elif grace is not None and self._busy():
            grace_handle = self._loop.call_later(grace, self._abort, _Cause.SHUTDOWN)  # type: ignore[union-attr]
        try:
            cancelled = await self._wait_idle()
        finally:
            if grace_handle is not None:
                grace_handle.cancel()
        if not self._in_body:
            self._close()
        if cancelled is not None:
            raise cancelled
        if not self._in_body:
            error = self._policy_error()
            if error is not None:
                raise error


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

