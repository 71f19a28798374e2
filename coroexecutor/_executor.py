"""CoroutineExecutor: the public API of the async core, and the owner of its components.

The executor holds its :class:`~coroexecutor._slots.Slots` (capacity and the backlog), its
:class:`~coroexecutor._policy.Outcomes` (the error policy's decider) and its
:class:`~coroexecutor._startup.Startup` (the initializer), owns the lifecycle state and the
running jobs, and does its work through the functions of ``_start`` (the life of a job),
``_lifecycle`` (the canceller), ``_idle`` (idle, closing), ``_shutdown`` (waiting for the
jobs) and ``_map``. Its settable limits and stats are properties of its base, ``Settings``
(``_settings``). See docs/internals.rst.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncGenerator, Awaitable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from . import _map_api, _shutdown, _startup
from ._core import Block, Core, Startup
from ._entries import Queued
from ._errors import check_job_fn
from ._following import QueuedFuture
from ._idle import close, report_unretrieved
from ._jobs import FactoryReader, JobTask, as_coroutine
from ._keyed import MaxPerKey
from ._keyed_slots import KeyFn, make_slots
from ._keying import start_keyed, submit_nowait_keyed, take_key
from ._map import MapIterator, MapJobs, close_maps
from ._policy import JobKind, Outcomes
from ._queued import on_queued_dropped, queue_job, start_queued
from ._retry import RetryArg, resolve_retry
from ._retrying import failed_call
from ._runners import run_job
from ._settings import DEFAULT_MAX_WORKERS, Settings
from ._settle import on_job_done
from ._start import _NO_KWARGS, start_job
from ._startup import check_accepting, check_loop
from ._state import State
from ._taking import start_failed, submitting, take_slot
from ._tuning import MaxWorkers, limit_of
from ._typing import ParamSpec, Self, final
from ._validate import (
    check_callables,
    check_initializer,
    check_rate,
    check_seconds,
    check_switch,
)

__all__ = ["CoroutineExecutor", "MapIterator"]

P = ParamSpec("P")
T = TypeVar("T")
JobHook = Callable[["asyncio.Future[Any]"], object]

_RUNNING = State.RUNNING
_CoroutineType = types.CoroutineType


@final
class CoroutineExecutor(Settings):
    """Runs coroutine functions as tasks, at most ``max_workers`` at a time.

    Use it as ``async with CoroutineExecutor(...) as exe:``; leaving the block waits for
    every job, so no job outlives it. See the package documentation for the error policy.

    Args:
        max_workers: how many jobs may run at once (``None``: 1000), or an :class:`Adaptive`.
        suppress_task_errors: when true, a job's error stays in its task and nothing else
            is cancelled; when false (the default), the first error cancels every other job,
            interrupts the body of the block and is re-raised by the block.
        initializer: called (and awaited if need be) as ``initializer(*initargs)`` before
            any job starts. If it raises, no job runs, and entering the block (and every
            later call that would start a job) raises :class:`BrokenCoroutineExecutor`.
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
        on_job_done: called once per job as it ends, started or not, with the future its
            submitter holds, on the loop (not awaited: a plain function); what it raises,
            or a TypeError for an awaitable it returns, goes to the loop's handler.
        retry: a :class:`Retry` or ``policy(attempt, exc) -> seconds | None``; a job
            holds no slot between attempts. annotate_errors: note on a job's error which job.
        key, max_per_key: per-key limits, given together: ``key(*args, **kwargs)`` gives
            each job a hashable key, and at most ``max_per_key`` (an int, or a callable
            ``key -> int``) jobs of one key run at once. See "Per-key limits".

    Raises:
        ValueError: ``max_workers`` below 1, or a non-positive or infinite time, rate or
            burst.
        TypeError: an argument of the wrong kind, such as a non-callable ``initializer``.
    """

    # Slots, not a __dict__: an attribute read on the hot path is then a slot read.
    __slots__ = (
        "__weakref__", "_annotate", "_block", "_burst", "_deadline_handle", "_ending",
        "_grace_handle", "_idle_handle", "_idle_waiters", "_inline", "_job_timeout", "_keyed",
        "_loop", "_loop_watch", "_maps", "_outcomes", "_outer", "_plain", "_rate", "_readers",
        "_retry",
        "_running", "_slots", "_spared", "_startup", "_state", "_task_factory_of", "_timeout",
        "_tuner", "_unread", "_watchers",
    )

    _loop: asyncio.AbstractEventLoop  # this and the next: set at first use (_startup.bind)
    _task_factory_of: FactoryReader | None

    def __init__(
        self,
        max_workers: MaxWorkers = 1000,
        *,
        suppress_task_errors: bool = False,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        timeout: Optional[float] = None,
        max_per_second: Optional[float] = None,
        burst: Optional[int] = None,
        job_timeout: Optional[float] = None,
        on_job_done: Optional[JobHook] = None,
        retry: RetryArg = None,
        annotate_errors: bool = True,
        key: Optional[KeyFn] = None,
        max_per_key: Optional[MaxPerKey] = None,
    ) -> None:
        max_workers, self._tuner = limit_of(max_workers, DEFAULT_MAX_WORKERS)  # None: default
        check_initializer(initializer)
        check_callables(on_job_done=on_job_done)
        self._timeout = check_seconds("timeout", timeout)
        self._job_timeout = check_seconds("job_timeout", job_timeout)
        self._rate, self._burst = check_rate(max_per_second, burst)
        self._retry = resolve_retry(retry)
        self._annotate = check_switch("annotate_errors", annotate_errors)
        self._state = State.CREATED
        self._slots, self._keyed = make_slots(max_workers, key, max_per_key)
        self._outcomes = Outcomes(
            check_switch("suppress_task_errors", suppress_task_errors), on_job_done
        )
        self._startup = Startup(initializer, tuple(initargs))
        # Running jobs' tasks (and the initializer's), keyed by the job's coroutine for
        # in-line jobs (their runner does not know its task), else by the task.
        self._running: dict[object, asyncio.Future[Any]] = {}
        self._watchers: dict[asyncio.Future[Any], asyncio.Future[None]] = {}  # map wake-ups
        self._maps: set[MapJobs] = set()  # live maps: the block's exit and shutdown() close them
        self._readers: set[asyncio.Task[Any]] = set()  # stopped, closing inputs: see _shutdown
        self._unread: set[MapJobs] = set()  # inputs no reader could close: see close_unread
        self._block: Block | None = None  # used as ``async with``: the block owns the error
        self._outer: Core | None = None  # the executor whose job bound it: see may_wait
        self._spared: asyncio.Future[Any] | None = None  # the task abort did not cancel
        self._ending: asyncio.Future[Any] | None = None  # see _lifecycle.abort
        self._idle_waiters: list[asyncio.Future[None]] = []  # shutdown() and __aexit__
        self._idle_handle: asyncio.Handle | None = None
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._grace_handle: asyncio.TimerHandle | None = None  # shutdown(timeout=)
        # Jobs settle in their own last step unless a hook, a job_timeout or an Adaptive
        # limit needs more (keyed jobs too: see _keyed_slots).
        self._inline = on_job_done is None and self._job_timeout is None and self._tuner is None
        # submit() starts such jobs in its plain lane (no key either; checked per job: no
        # rate limit, no task factory). Tests set it False to run the general path.
        self._plain = self._inline and self._keyed is None
        self._loop_watch: AsyncGenerator[None, None] | None = None  # see _startup

    def __del__(self) -> None:
        report_unretrieved(self)

    def __repr__(self) -> str:
        slots = self._slots
        return (f"<CoroutineExecutor {self._state.value} {slots.running}/{slots.limit}"
                f" backlog={slots.queued} waiting={slots.waiting}>")

    #
    # Submitting
    #

    async def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Task[T]:
        """Start ``fn(*args, **kwargs)`` as a job, waiting for a free slot if need be.

        Returns the job's task, already scheduled (a JobTask, or the loop's task factory's
        task). With ``max_workers`` jobs running, or others queued ahead, it first waits in
        FIFO order for a slot (with ``key=``, also for room in its key).

        Cancellation: cancelled while it waits, it submits nothing (a slot granted at that
        moment passes to the next in line).

        Raises:
            RuntimeError: shut down or shutting down (also when shutdown() begins, or,
                outside the executor's jobs, the block exits, while it waits), or first
                used on another loop.
            BrokenCoroutineExecutor: the initializer failed.
            TypeError: ``fn`` is not callable or is a coroutine object (before any wait),
                or ``fn(*args, **kwargs)`` returned no awaitable. What calling ``fn`` raises
                propagates unless retry= retries it; the job's own error goes to the error policy.
        """
        if self._state is not _RUNNING:
            check_accepting(self)
        slots = self._slots
        if self._plain and slots.free > 0 and not slots.backlog and slots.limiter is None:
            loop = self._loop
            # None: asyncio's own loop. Read before the slot is taken: in debug mode it
            # refuses a call from another thread (see factory_reader).
            reader = self._task_factory_of
            if (loop._task_factory if reader is None else reader(loop)) is None:  # type: ignore[attr-defined]  # asyncio's loops have it
                # THE PLAIN LANE (the one hot path written out twice): take_nowait() and
                # start_job() for an in-line job (no key, hook, job_timeout, adaptive
                # limit or rate limit; a retry policy may be set) on a loop with no task
                # factory. Its runner, run_job(), settles a success itself with
                # settle() written out, for every in-line job (the lane's other half):
                # 3.8 % of a no-op job's instructions, about 3 % of its time (paired;
                # internals.rst, "The plain lane").
                # Every other job starts in the general path below.
                # tests/test_core_lanes.py runs the same scenarios through both.
                slots.free -= 1  # Slots.take_nowait() written out (part of the lane's copy)
                call: Callable[..., Any] = fn
                policy = self._retry
                runner: Coroutine[Any, Any, Any] | None = None
                coro: Any = None
                try:
                    try:
                        coro = call(*args, **kwargs) if kwargs else call(*args)
                        if type(coro) is not _CoroutineType:
                            coro = as_coroutine(coro, fn, args if self._annotate else None, kwargs)
                    except Exception as exc:  # its first attempt failed as it started
                        retried = failed_call(policy, fn, exc)
                        if retried is None:
                            raise
                        coro, policy = retried
                    if policy is None:
                        runner = run_job(self, coro)
                    else:  # the call is kept until the job ends only for retries
                        runner = run_job(
                            self, coro, None, None, call, args, kwargs or _NO_KWARGS, policy
                        )
                    task: asyncio.Task[T] = JobTask(runner, loop=loop)
                except BaseException:
                    start_failed(self, fn, "submit", runner, coro)
                    raise
                self._running[coro] = task
                return task
            # (A task factory: the general start below, which takes the slot.)
        if not slots.take_nowait():
            if not callable(fn):
                check_job_fn(fn, "submit")  # before waiting: the mistake is reported now
            if (keyed := self._keyed) is not None:  # key=: key() raises to the caller
                key = keyed.key(*args, **kwargs)
                if self._state is not _RUNNING:  # (see submit_nowait_keyed)
                    check_accepting(self)
                if not keyed.take_key_nowait(key):
                    await take_key(self, key, "submit", submitting(self))
                return start_keyed(self, keyed, fn, args, kwargs, "submit", key)  # type: ignore[return-value]  # as below
            check_loop(self)  # only where we would wait: the fast path does not look
            await take_slot(self, "submit", submitting(self))
        return start_job(self, fn, args, kwargs, "submit")  # type: ignore[return-value]  # a Task of fn's result

    def submit_nowait(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """Start ``fn(*args, **kwargs)`` now if a slot is free, else queue it; never waits.

        Returns the job's task, or a future that follows the job once it starts (queued
        jobs start in FIFO order as slots free up); like a task, it refuses
        ``set_result()`` and ``set_exception()``. Loop thread only.

        Cancellation: cancelling the future drops a queued job (cancelled at once) and
        requests a running one's cancel, as ``Task.cancel()`` does: the future then ends
        as the job does (a job that catches the cancel keeps its value or its error).

        Raises:
            RuntimeError, BrokenCoroutineExecutor, TypeError: as :meth:`submit`. A queued
            job's errors from calling ``fn`` fail its future and follow the policy.
        """
        if self._state is not _RUNNING:
            check_accepting(self)
        if self._slots.take_nowait():
            return start_job(self, fn, args, kwargs, "submit_nowait")
        if not callable(fn):
            check_job_fn(fn, "submit_nowait")
        if (keyed := self._keyed) is not None:
            return submit_nowait_keyed(self, keyed, fn, args, kwargs)
        check_loop(self)  # only where we would queue: the fast path does not look
        return queue_job(self, fn, args, kwargs)

    # Functions of _map_api, with their overloads (one per number of inputs, as for the
    # builtin map), bound as methods as _close_maps is below.
    map = _map_api.map
    map_unordered = _map_api.map_unordered

    @property
    def _bound(self) -> bool:
        """Whether first use has tied the executor to a loop (a never-used executor that
        was shut down is CLOSED, with no loop)."""
        return hasattr(self, "_loop")

    # Callbacks for futures and queued jobs (bound methods compare equal: removable; a
    # queued job's future calls _on_queued_dropped from its cancel(), see QueuedFuture).
    def _on_job_done(self, task: asyncio.Future[Any]) -> None:
        on_job_done(self, JobKind.POLICY, None, task)

    def _on_result_job_done(self, task: asyncio.Future[Any]) -> None:
        on_job_done(self, JobKind.RESULT, None, task)

    def _on_queued_dropped(self, future: QueuedFuture) -> None:
        on_queued_dropped(self, future)

    def _start_queued(self, entry: Queued) -> None:
        start_queued(self, entry)

    _close_maps = close_maps  # a method, for abort(): _lifecycle cannot import _map

    #
    # Lifecycle
    #

    if not TYPE_CHECKING:  # hidden from type checkers, which then still flag a plain `with`
        __enter__, __exit__ = _startup.refuse_plain_with, _startup.no_exit

    async def __aenter__(self) -> Self:
        await _startup.enter_block(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await _shutdown.exit_block(self, exc)

    async def shutdown(self, wait: bool = True, *, timeout: float | None = None) -> None:
        """Stop accepting jobs; with ``wait=True``, wait until none is running or queued.

        Open maps are closed first. With ``wait=True`` jobs finish normally (``timeout``:
        cancel what runs after that many seconds) and the maps' async inputs close. With
        ``wait=False`` jobs are cancelled and it returns at once, as the stdlib's does.

        From inside one of its jobs (or a task started there) it never waits, whatever
        ``wait`` says (see "Who waits" in the semantics).

        Errors: with an ``async with`` block the block raises the policy's error; without,
        every call that waits raises it (the first job error under fail-fast, or
        :class:`ExecutorTimeoutError`); a call that does not wait (``wait=False``, or
        from inside its jobs) never does, even when the error is known already. A job
        that answers this call's cancel with an error of its own has failed: that error
        may be the first. ``RuntimeError`` from another loop, or from the initializer
        while it runs.

        Cancellation: cancelled while it waits, it cancels every job and input reader, and raises
        ``CancelledError`` at once (the block's exit still waits for the jobs).
        """
        grace = check_seconds("timeout", timeout)
        if not self._bound:  # never used (perhaps shut down before): nothing to wait for
            close(self)
            return
        check_loop(self)
        await _shutdown.shutdown(self, wait, grace)
