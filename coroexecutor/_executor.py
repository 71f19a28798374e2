"""CoroutineExecutor: the public API and the lifecycle of the async-with block."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterable, Awaitable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, TypeVar, overload

from ._admission import NATIVE_LOOP, Queued, SentBack, job_position, task_probe
from ._errors import check_job_fn
from ._jobs import JobTask, as_coroutine
from ._map import MapIterator, close_maps
from ._policy import _SHUTDOWN_MESSAGE, Cause
from ._ratelimit import RateLimiter
from ._startup import Startup
from ._state import State
from ._stats import ExecutorStats
from ._typing import ParamSpec, Self, final
from ._validate import check_max_workers, check_rate, check_seconds

__all__ = ["CoroutineExecutor", "MapIterator"]

P = ParamSpec("P")
T = TypeVar("T")
JobHook = Callable[["asyncio.Future[Any]"], object]

_RUNNING = State.RUNNING
_CoroutineType = types.CoroutineType
_JobTask = JobTask
_ACCEPTING = (State.RUNNING, State.EXITING, State.STARTING)
_CancelledError = asyncio.CancelledError
_DEFAULT_MAX_WORKERS = 1000
_get_running_loop = asyncio._get_running_loop


@final
class CoroutineExecutor(Startup):
    """Runs coroutine functions as tasks, at most ``max_workers`` at a time.

    Use it as ``async with CoroutineExecutor(...) as exe:``; leaving the block waits for
    every job, so no job outlives it. See the package documentation for the error policy.

    Args:
        max_workers: how many jobs may run at once (``None``: the default, 1000).
        suppress_task_errors: when true, a job's error stays in its task and nothing else
            is cancelled; when false (the default), the first error cancels every other job,
            interrupts the body of the block and is re-raised by the block.
        initializer: called once as ``initializer(*initargs)``, and awaited if it
            returns an awaitable, before any job starts: on entering ``async with``
            (which waits for it), or at the first submit, submit_nowait or map of an
            executor used without it. If it raises, no job runs: entering the block
            raises :class:`BrokenCoroutineExecutor` chained from its error, and so does
            every later call that would start a job. If ``shutdown()`` is called from
            another task while it runs, entering the block raises ``RuntimeError``.
        initargs: arguments for ``initializer``.
        timeout: seconds from entering the block (or the first submit) until every job is
            cancelled and the block raises :class:`ExecutorTimeoutError` (a
            ``TimeoutError``).
        max_per_second: the most jobs that may *start* per second (``None``: no limit).
        burst: how many jobs may start at once after an idle period when
            ``max_per_second`` is set (default 1).
        job_timeout: seconds a single job may hold its slot; a job that runs longer is
            cancelled and fails with :class:`JobTimeoutError` (a ``TimeoutError``), which
            then follows the error policy.
        on_job_done: called with each finished job's future, on the event loop; an
            exception it raises is reported to the loop's exception handler.

    Raises:
        ValueError: ``max_workers`` below 1, or a non-positive or infinite time, rate or
            burst.
        TypeError: an argument of the wrong kind, such as a non-callable ``initializer``.
    """

    __slots__ = ("__weakref__", "_burst", "_rate")

    def __init__(
        self,
        max_workers: Optional[int] = 1000,
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
        # None means the default, as for LoopExecutor and ThreadPoolExecutor.
        if max_workers is None:
            max_workers = _DEFAULT_MAX_WORKERS
        max_workers = check_max_workers(max_workers)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable or None (got {initializer!r})")
        if on_job_done is not None and not callable(on_job_done):
            raise TypeError(f"on_job_done must be a callable or None (got {on_job_done!r})")
        timeout = check_seconds("timeout", timeout)
        job_timeout = check_seconds("job_timeout", job_timeout)
        self._rate, self._burst = check_rate(max_per_second, burst)
        self._init_admission(max_workers, job_timeout)
        self._init_policy(bool(suppress_task_errors), on_job_done, timeout)
        self._init_startup(initializer, tuple(initargs))

    def __del__(self) -> None:
        # A job error the policy named but nobody was given: no block, and no shutdown()
        # that may wait (one from a job of an unrelated executor does not raise it), and
        # the executor is now forgotten. Report it as asyncio reports a task exception
        # that was never retrieved, rather than lose it silently.
        try:
            error = self._first_error
            if (
                error is None
                or self._error_delivered
                or self._cause is not Cause.JOB_ERROR
                or isinstance(error, _CancelledError)
                or self._loop is None
            ):
                return
            self._loop.call_exception_handler(
                {
                    "message": "CoroutineExecutor job exception was never retrieved"
                    " (no async with block, and no shutdown() that waits, raised it)",
                    "exception": error,
                }
            )
        except AttributeError:  # __init__ raised before the attributes existed
            pass

    def __repr__(self) -> str:
        running = self._running_count()
        return (
            f"<CoroutineExecutor {self._state.value} {running}/{self._max_workers}"
            f" backlog={self._queued} waiting={self._waiting}>"
        )

    #
    # Properties
    #

    @property
    def max_workers(self) -> int:
        """How many jobs may run at once. Settable while jobs run, on the executor's event
        loop (``None``: the default).

        Growing the limit starts queued jobs at once. Shrinking it cancels nothing: running
        jobs finish, and no new job starts until fewer than the new limit are running (a
        waiter already handed a slot when the limit shrank hands it back and waits again).
        """
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: Optional[int]) -> None:
        # None: the default, as in the constructor.
        value = check_max_workers(_DEFAULT_MAX_WORKERS if value is None else value)
        self._check_setter_thread("max_workers")
        self._resize(value)

    @property
    def max_per_second(self) -> Optional[float]:
        """The most jobs that may *start* per second (``None``: no limit). Settable while
        jobs run, on the executor's event loop, to slow down when a server answers 429.

        The new value is validated as in the constructor and governs the next starts:
        lowering it holds back queued jobs (running ones carry on), raising it or setting
        ``None`` lets them start as soon as slots allow.
        """
        return self._rate

    @max_per_second.setter
    def max_per_second(self, value: Optional[float]) -> None:
        rate, _ = check_rate(value, None)
        self._check_setter_thread("max_per_second")
        self._set_rate(rate, self._burst)

    @property
    def burst(self) -> int:
        """How many jobs may start at once after an idle period while ``max_per_second``
        is set (default 1). Settable as ``max_per_second`` is; setting it without a rate
        limit is a ``ValueError``, as in the constructor."""
        return self._burst

    @burst.setter
    def burst(self, value: int) -> None:
        _, burst = check_rate(self._rate, value)
        self._check_setter_thread("burst")
        self._set_rate(self._rate, burst)

    def _check_setter_thread(self, name: str) -> None:
        """Refuse a setter called off the thread of the running loop the executor is bound
        to: it would change the slots, the limiter and the backlog under the loop's feet
        (and under an eager task factory start a queued job on the calling thread)."""
        loop = self._loop
        if loop is not None and loop.is_running() and _get_running_loop() is not loop:
            raise RuntimeError(
                f"{self!r}.{name} can only be set on the thread of its event loop; from"
                f" another thread use loop.call_soon_threadsafe(setattr, executor,"
                f" {name!r}, value), or LoopExecutor, whose setters are thread-safe"
            )

    def _set_rate(self, rate: Optional[float], burst: int) -> None:
        self._rate, self._burst = rate, burst
        loop = self._loop
        if loop is None or self._state is State.CLOSED or loop.is_closed():
            return  # _bind makes the limiter; once closed, no job starts again
        if rate is None:
            self._limiter = None
        elif self._limiter is None:
            self._limiter = RateLimiter(rate, burst, loop.time)
        else:
            self._limiter.reconfigure(rate, burst)
        # A wake-up for the backlog was timed for the old rate: time it for the new one.
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        if self._backlog:
            self._schedule_wake()

    @property
    def stats(self) -> ExecutorStats:
        """A read-only snapshot of the job counts (cheap: no job is visited)."""
        running = self._running_count()
        return ExecutorStats(
            # Every accepted job is queued, running or done: no counter on the hot path.
            submitted=self._succeeded + self._failed + self._cancelled + running + self._queued,
            queued=self._queued,
            running=running,
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

        Returns the job's task, already scheduled. It is an ``asyncio.Task``: a subclass
        whose ``cancel()`` also settles a job cancelled before its first step, or the
        loop's task factory's own task when one is set. When ``max_workers`` jobs are
        running (or others are queued ahead), this waits, in FIFO order, until a slot is
        free: that is the back-pressure that keeps a fast producer in bounded memory.

        Cancellation: cancelling the caller while it waits for a slot submits nothing; a
        slot granted at that moment passes to the next in line.

        Raises:
            RuntimeError: the executor is shut down or shutting down, or was first used
                on another event loop.
            BrokenCoroutineExecutor: the initializer failed.
            TypeError: ``fn`` is not callable or is a coroutine object (checked before
                anything is called or waited for), or ``fn(*args, **kwargs)`` did not
                return an awaitable (known only once ``fn`` has run, side effects
                included). An exception from calling ``fn`` propagates from here.
        """
        if self._state is not _RUNNING:
            self._check_accepting()
        if self._free > 0 and not self._backlog and (not self._limiter or self._limiter.try_take()):
            self._free -= 1
        else:
            if not callable(fn):
                check_job_fn(fn, "submit")  # before waiting: the mistake is reported now
            self._check_loop()  # only where we would wait: the fast path does not look
            if self._init_task is not None:
                self._check_not_initializer("submit()")
            # _acquire_slot() written out: a coroutine less for each wait.
            waiter: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
            self._backlog.append(waiter)
            self._waiting += 1
            if self._free > 0:
                self._schedule_wake()
            try:
                await waiter
                # Start only while fewer than max_workers run: see _acquire_slot.
                while self._free + self._granted <= 0 or (
                    self._backlog and type(self._backlog[0]) is SentBack
                ):
                    if not self._must_wait_again(waiter):
                        break
                    waiter = self._wait_again()
                    await waiter
            except _CancelledError:
                self._left_line(waiter)
                raise
            self._granted -= 1
            if self._state is State.CANCELLING:
                self._free += 1  # granted just before an abort: give it back
                self._check_accepting()
        loop = self._loop
        fast = self._fast
        if fast and (
            loop._task_factory  # type: ignore[union-attr]
            if fast == NATIVE_LOOP
            else loop.get_task_factory()  # type: ignore[union-attr]
        ) is None:
            # _start() written out for the common case (here and in the map's generator):
            # an in-line job whose Task we build as the loop's create_task would. Calling
            # _start instead measured 4% slower for submit, 5% for map (benchmarks ladder).
            runner: Coroutine[Any, Any, Any] | None = None
            coro: Any = None
            try:
                coro = fn(*args, **kwargs)
                if type(coro) is not _CoroutineType:
                    coro = as_coroutine(coro, fn)
                runner = self._run_job(coro, False, True)
                task: asyncio.Task[T] = _JobTask(runner, loop=loop)
            except BaseException:
                self._start_failed(fn, "submit", runner, coro)
                raise
            self._running[coro] = task
            return task
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

        While the initializer runs, every job is queued: it starts once the initializer
        has returned, and fails with :class:`BrokenCoroutineExecutor` if it raised.

        Raises:
            RuntimeError: the executor is shut down or shutting down, or this is not the
                event loop it was first used on.
            BrokenCoroutineExecutor: the initializer failed.
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
        self._check_loop()  # only where we would queue: the fast path does not look
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._backlog.append(Queued(future, fn, args, kwargs))
        self._queued += 1
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

    @overload
    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: bool,
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

        Errors: on a job error the map's remaining jobs are cancelled. Under fail-fast the
        whole executor is cancelled too: a consumer in the block's body is interrupted
        (``CancelledError``, as the rest of the body) and the block raises the error; a
        consumer elsewhere, or any with ``suppress_task_errors``, gets it from the
        iterator. With ``return_exceptions=True`` a job's exception is yielded
        in place of its result instead and does not trigger fail-fast.

        Cancellation: a map closed early cancels its in-flight jobs (not errors) and
        reads no more input. It is closed when dropped (``break`` out of
        ``async for r in exe.map(...)``), by ``aclose()``, and at the latest when the block
        exits or ``shutdown()`` begins; iterating a map the executor closed raises
        ``RuntimeError``.
        """
        self._check_loop()
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

    @overload
    def map_unordered(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        buffersize: int | None = None,
        return_exceptions: bool,
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
        self._check_loop()
        self._check_accepting()
        return MapIterator(self, fn, iterables, buffersize, False, return_exceptions)

    def _check_accepting(self) -> None:
        state = self._state
        if state in _ACCEPTING:
            return
        if state is State.CREATED:
            self._bind()
            return
        self._check_loop()
        if self._broken is not None:
            raise self._broken_error()
        if state is State.CANCELLING:
            raise RuntimeError(f"{_SHUTDOWN_MESSAGE} ({self!r} is cancelling its jobs)")
        raise RuntimeError(_SHUTDOWN_MESSAGE)

    def _bind(self) -> None:
        """First use: tie the executor to the running loop, start the deadline and the
        initializer."""
        loop = self._loop = asyncio.get_running_loop()
        self._state = _RUNNING
        self._outer = job_position.get()
        self._fast = task_probe(loop) if self._inline else 0
        if self._rate is not None:
            self._limiter = RateLimiter(self._rate, self._burst, loop.time)
        if self._timeout is not None:
            self._deadline_handle = loop.call_later(self._timeout, self._abort, Cause.DEADLINE)
        self._watch_loop()
        if self._initializer is not None:
            self._start_initializer()

    def _check_loop(self) -> None:
        """Refuse a call from any loop but the one the executor is bound to (if any).

        Not on the fast paths of submit() and submit_nowait(): on CPython 3.11 finding
        the running loop makes a getpid() system call. They rely on the state instead:
        an executor whose loop has finished (see Startup._watch_loop) is CLOSED, and
        every call on a closed executor comes here."""
        if self._loop is not None and _get_running_loop() is not self._loop:
            raise RuntimeError(
                f"{self!r} belongs to the event loop it was first used on and cannot be"
                " used from another; make one executor per asyncio.run()"
            )

    #
    # Admission: slots, rate and the backlog
    #
    #
    # Lifecycle
    #

    if not TYPE_CHECKING:  # hidden from type checkers, which then still flag a plain `with`

        def __enter__(self) -> None:
            raise TypeError(
                f"{type(self).__name__!r} object does not support the context manager"
                f" protocol: use 'async with' (in async code), or LoopExecutor from sync code"
            )

        def __exit__(self, *exc_info: object) -> None:  # `with` needs it to reach __enter__
            return None

    async def __aenter__(self) -> Self:
        if self._state is not State.CREATED:
            self._check_loop()
            raise RuntimeError(f"{self!r} has already been used; create a new executor")
        self._bind()
        self._parent = asyncio.current_task()
        self._block = True
        if self._init_task is not None:
            await self._await_initializer()
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
                self._abort(Cause.BODY)  # the body raised or was cancelled: cancel every job
        close_maps(self)  # a map left open (named, then `break`) must not keep jobs running
        if self._state is _RUNNING:
            self._state = State.EXITING
        late_cancel = await self._wait_idle(keep_waiting=True)
        self._close()
        self._uncancel_parent()  # the body swallowed our interruption: still withdraw it
        error = self._policy_error()
        if error is not None:
            # A job error (or the deadline) came first: it wins over what followed, as the
            # first error does in asyncio.TaskGroup.
            if error is exc:
                return False
            self._reraise(error)
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
        """Stop accepting jobs; with ``wait=True``, wait until none is running or queued.

        With ``wait=True``, running and queued jobs finish normally; with ``timeout``,
        whatever is still running after that many seconds is cancelled. With
        ``wait=False``, running and queued jobs are cancelled and this returns at once,
        without waiting for them to finish cancelling (as ``Executor.shutdown(wait=False)``
        returns without waiting): the block's exit, or a later ``shutdown()``, waits. Maps still
        open are closed first: their in-flight jobs are cancelled (not errors).

        Who waits: only a caller outside this executor's jobs and below it. Called from
        inside one of its jobs (the job itself, a task started in it, a job of an executor
        nested in it), or from a job of another executor that this one is not nested in,
        ``shutdown()`` never waits, whatever ``wait`` says: it does the rest (stops
        accepting jobs, starts the grace period or cancels) and returns, leaving the
        wait and the policy's error to the block or to the owner's own ``shutdown()``.
        Waiting there could mean waiting for itself, directly or through a circle of
        executors; a job may still wait for an executor it owns (one first used inside
        it). A job calling ``shutdown(wait=False)`` is not cancelled itself; the others
        are.

        Errors: an executor used as ``async with`` leaves the policy's error to its block,
        and ``shutdown()`` from any task raises none. Without a block, every call that
        may wait gets the error the policy names, the same object each time: the first
        job error under fail-fast (the job's own exception, its chain as the job left
        it), or :class:`ExecutorTimeoutError` when the executor's ``timeout`` passed; a
        call that begins after one has raised it and returned raises nothing.
        Cancellations the executor caused are never raised. Called on another event loop
        than the one the executor was first used on, or from the initializer
        (or a task it started) while it runs, it raises ``RuntimeError``.

        Cancellation: cancelling the caller while it waits cancels every job and raises
        ``CancelledError`` at once, without waiting for the jobs to finish cancelling
        (the block's exit still waits for them, as ``asyncio.TaskGroup`` does).
        """
        grace = check_seconds("timeout", timeout)
        if self._loop is None:  # never used (perhaps shut down before): nothing to wait for
            self._close()
            return
        self._check_loop()
        if self._init_task is not None:
            self._check_not_initializer("shutdown()")
        waits = self._may_wait()
        # The policy's error goes to every call that waits, except once a call has raised
        # it and returned: a later shutdown() is a no-op. While a block is active, the
        # block owns it (and the closing).
        late = self._error_delivered
        if self._state in _ACCEPTING:
            self._state = State.DRAINING
        close_maps(self)  # no map could start another job: their in-flight jobs end too
        if not wait:
            self._abort(Cause.SHUTDOWN)
        elif grace is not None and self._busy():
            self._start_grace(grace)
        if not (wait and waits):
            if not self._block:
                self._close_when_idle()
                if waits and not late:
                    error = self._policy_error(shared=True)
                    if error is not None:
                        self._reraise(error)
            return
        try:
            await self._wait_idle(keep_waiting=False)
        except _CancelledError:
            if not self._block:
                self._close_when_idle()
            raise
        finally:
            if self._grace_handle is not None:  # idle, or every job cancelled: moot
                self._grace_handle.cancel()
                self._grace_handle = None
        if not self._block:
            self._close()
            if not late:
                error = self._policy_error(shared=True)
                if error is not None:
                    self._reraise(error)

    def _start_grace(self, grace: float) -> None:
        """Cancel the jobs still running ``grace`` seconds from now (the earliest wins)."""
        when = self._loop.time() + grace  # type: ignore[union-attr]  # bound: not CREATED
        handle = self._grace_handle
        if handle is not None:
            if handle.when() <= when:
                return
            handle.cancel()
        loop: Any = self._loop
        self._grace_handle = loop.call_at(when, self._abort, Cause.SHUTDOWN)
