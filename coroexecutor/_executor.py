"""CoroutineExecutor: the public API of the async core, and the owner of its components.

The executor holds its :class:`~coroexecutor._slots.Slots` (capacity and the backlog), its
:class:`~coroexecutor._policy.Outcomes` (the error policy's decider) and its
:class:`~coroexecutor._startup.Startup` (the initializer), owns the lifecycle state and the
running jobs, and does its work through the functions of ``_start`` (the life of a job),
``_lifecycle`` (the canceller, idle, closing), ``_shutdown`` (waiting for the jobs) and
``_map``. See docs/internals.rst.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, TypeVar, overload

from . import _shutdown
from ._context import job_position
from ._errors import ExecutorTimeoutError, check_job_fn
from ._lifecycle import SHUTDOWN_MESSAGE, Block, abort, admit, close
from ._map import MapIterator, MapJobs
from ._policy import Cause, JobKind, Outcomes
from ._slots import Queued, Slots
from ._start import (
    TaskProbe,
    on_job_done,
    on_queued_done,
    queue_job,
    start_job,
    start_queued,
    take_slot,
    task_probe,
)
from ._startup import Startup, await_initializer, broken_error, start_initializer, watch_loop
from ._state import State
from ._stats import ExecutorStats
from ._typing import ParamSpec, Self, final
from ._validate import check_max_workers, check_rate, check_seconds

__all__ = ["CoroutineExecutor", "MapIterator"]

P = ParamSpec("P")
T = TypeVar("T")
JobHook = Callable[["asyncio.Future[Any]"], object]

_RUNNING = State.RUNNING
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

    # Slots, not an instance __dict__: with a __dict__ every attribute read on the hot path
    # would be a dict lookup instead of a slot read.
    __slots__ = (
        "__weakref__", "_block", "_burst", "_deadline_handle", "_grace_handle",
        "_idle_handle", "_idle_waiters", "_inline", "_job_timeout", "_loop", "_loop_watch",
        "_maps", "_outcomes", "_outer", "_rate", "_running", "_slots", "_spared",
        "_startup", "_state", "_task_probe", "_timeout", "_watchers",
    )

    _state: State
    _loop: asyncio.AbstractEventLoop  # set by _bind(): read only once bound (see _bound)
    _slots: Slots
    _outcomes: Outcomes
    _startup: Startup
    # Running jobs' tasks, keyed by the job's own coroutine for jobs that complete in-line
    # (the runner finds its entry without knowing its task) and by the task otherwise.
    # The initializer's task is here too while it runs.
    _running: dict[object, asyncio.Future[Any]]
    # Job task -> future to resolve when the job is settled: a map consumer waiting for the
    # job it must yield next. Resolved in the job's own last step, a turn before any done
    # callback of its task could run.
    _watchers: dict[asyncio.Future[Any], asyncio.Future[None]]
    _maps: set[MapJobs]  # every live map(): the block's exit and shutdown() close them
    _block: Block | None  # used as ``async with``: the block owns the policy's error
    # Where the executor was first used: the executor whose job bound it (job_position
    # then), or None outside any job. Decides who may wait for its jobs (may_wait).
    _outer: CoroutineExecutor | None
    # The task that ran abort, which it did not cancel (a job in its last step, or a job
    # that called shutdown(wait=False)); cancel_again cancels it if the wait for the jobs
    # is cancelled.
    _spared: asyncio.Future[Any] | None
    _idle_waiters: list[asyncio.Future[None]]  # shutdown() and __aexit__ may both wait
    _idle_handle: asyncio.Handle | None
    _deadline_handle: asyncio.TimerHandle | None
    _grace_handle: asyncio.TimerHandle | None  # shutdown(timeout=): then cancel what runs
    _timeout: float | None
    _job_timeout: float | None
    _inline: bool  # jobs settle in their own last step (no hook, no job_timeout)
    _task_probe: TaskProbe
    _loop_watch: AsyncGenerator[None, None] | None  # see _startup.watch_loop
    _rate: float | None
    _burst: int

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
        self._timeout = check_seconds("timeout", timeout)
        self._job_timeout = check_seconds("job_timeout", job_timeout)
        self._rate, self._burst = check_rate(max_per_second, burst)
        self._state = State.CREATED
        self._slots = Slots(max_workers)
        self._outcomes = Outcomes(bool(suppress_task_errors), on_job_done)
        self._startup = Startup(initializer, tuple(initargs))
        self._running = {}
        self._watchers = {}
        self._maps = set()
        self._block = None
        self._outer = None
        self._spared = None
        self._idle_waiters = []
        self._idle_handle = self._deadline_handle = self._grace_handle = None
        self._inline = on_job_done is None and self._job_timeout is None
        self._task_probe = TaskProbe.NEVER
        self._loop_watch = None

    def __del__(self) -> None:
        # A job error the policy named but nobody was given: no block, and no shutdown()
        # that may wait (one from a job of an unrelated executor does not raise it), and
        # the executor is now forgotten. Report it as asyncio reports a task exception
        # that was never retrieved, rather than lose it silently.
        try:
            error = self._outcomes.unretrieved
            if error is None:
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
        slots = self._slots
        return (
            f"<CoroutineExecutor {self._state.value} {slots.running}/{slots.limit}"
            f" backlog={slots.queued} waiting={slots.waiting}>"
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
        return self._slots.limit

    @max_workers.setter
    def max_workers(self, value: Optional[int]) -> None:
        # None: the default, as in the constructor.
        value = check_max_workers(_DEFAULT_MAX_WORKERS if value is None else value)
        self._check_setter_thread("max_workers")
        self._slots.resize(value)
        if self._bound:
            admit(self)

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
        if not self._bound:
            return
        loop = self._loop
        if loop.is_running() and _get_running_loop() is not loop:
            raise RuntimeError(
                f"{self!r}.{name} can only be set on the thread of its event loop; from"
                f" another thread use loop.call_soon_threadsafe(setattr, executor,"
                f" {name!r}, value), or LoopExecutor, whose setters are thread-safe"
            )

    def _set_rate(self, rate: Optional[float], burst: int) -> None:
        """Set the start rate (the bridge calls this on the loop thread)."""
        self._rate, self._burst = rate, burst
        state = self._state
        if not self._bound or state is State.CLOSED or self._loop.is_closed():
            return  # _bind makes the limiter; once closed, no job starts again
        self._slots.set_rate(rate, burst)

    @property
    def stats(self) -> ExecutorStats:
        """A read-only snapshot of the job counts (cheap: no job is visited)."""
        slots, outcomes = self._slots, self._outcomes
        running = slots.running
        done = outcomes.succeeded + outcomes.failed + outcomes.cancelled
        return ExecutorStats(
            # Every accepted job is queued, running or done: no counter on the hot path.
            submitted=done + running + slots.queued,
            queued=slots.queued,
            running=running,
            succeeded=outcomes.succeeded,
            failed=outcomes.failed,
            cancelled=outcomes.cancelled,
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
        if not self._slots.take_nowait():
            if not callable(fn):
                check_job_fn(fn, "submit")  # before waiting: the mistake is reported now
            self._check_loop()  # only where we would wait: the fast path does not look
            await take_slot(self, "submit")
        return start_job(self, fn, args, kwargs, "submit")  # type: ignore[return-value]  # a Task of fn's result

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
        if self._slots.take_nowait():
            return start_job(self, fn, args, kwargs, "submit_nowait")
        if not callable(fn):
            check_job_fn(fn, "submit_nowait")
        self._check_loop()  # only where we would queue: the fast path does not look
        return queue_job(self, fn, args, kwargs)

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
        return MapIterator(
            self, fn, iterables, buffersize, ordered=True, return_exceptions=return_exceptions
        )

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
        return MapIterator(
            self, fn, iterables, buffersize, ordered=False, return_exceptions=return_exceptions
        )

    def _check_accepting(self) -> None:
        state = self._state
        if state in _ACCEPTING:
            return
        if state is State.CREATED:
            self._bind()
            return
        self._check_loop()
        if self._startup.broken is not None:
            raise broken_error(self)
        if state is State.CANCELLING:
            raise RuntimeError(f"{SHUTDOWN_MESSAGE} ({self!r} is cancelling its jobs)")
        raise RuntimeError(SHUTDOWN_MESSAGE)

    def _bind(self) -> None:
        """First use: tie the executor to the running loop, start the deadline and the
        initializer."""
        loop = self._loop = asyncio.get_running_loop()
        self._slots.bind(loop)
        self._state = _RUNNING
        self._outer = job_position.get()
        self._task_probe = task_probe(loop) if self._inline else TaskProbe.NEVER
        if self._rate is not None:
            self._slots.set_rate(self._rate, self._burst)
        if self._timeout is not None:
            self._deadline_handle = loop.call_later(self._timeout, abort, self, Cause.DEADLINE)
        self._loop_watch = watch_loop(self)
        if self._startup.fn is not None:
            start_initializer(self)

    def _check_loop(self) -> None:
        """Refuse a call from any loop but the one the executor is bound to (if any).

        Not on the fast paths of submit() and submit_nowait(): on CPython 3.11 finding
        the running loop makes a getpid() system call. They rely on the state instead:
        an executor whose loop has finished (see _startup.watch_loop) is CLOSED, and
        every call on a closed executor comes here."""
        if self._bound and _get_running_loop() is not self._loop:
            raise RuntimeError(
                f"{self!r} belongs to the event loop it was first used on and cannot be"
                " used from another; make one executor per asyncio.run()"
            )

    @property
    def _bound(self) -> bool:
        """Whether the executor has been tied to its loop (first use). A never-used
        executor that was shut down is CLOSED but has no loop."""
        return hasattr(self, "_loop")

    def _policy_error(self, shared: bool = False) -> BaseException | None:
        return self._outcomes.policy_error(self._timeout_error, shared=shared)

    def _timeout_error(self) -> BaseException:
        return ExecutorTimeoutError(f"{self!r} timed out after {self._timeout} seconds")

    # Callbacks handed to futures and to queued jobs (bound methods: they compare equal,
    # so remove_done_callback finds them).

    def _on_job_done(self, task: asyncio.Future[Any]) -> None:
        on_job_done(self, JobKind.POLICY, task)

    def _on_result_job_done(self, task: asyncio.Future[Any]) -> None:
        on_job_done(self, JobKind.RESULT, task)

    def _on_queued_done(self, future: asyncio.Future[Any]) -> None:
        on_queued_done(self, future)

    def _start_queued(self, entry: Queued) -> None:
        start_queued(self, entry)

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
        block = self._block = Block(asyncio.current_task())
        if self._startup.task is not None:
            await await_initializer(self)
        block.in_body = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await _shutdown.exit_block(self, exc)

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
        if not self._bound:  # never used (perhaps shut down before): nothing to wait for
            close(self)
            return
        self._check_loop()
        await _shutdown.shutdown(self, wait, grace)
