"""ThreadedLoopExecutor: a concurrent.futures.Executor backed by an event loop thread."""

from __future__ import annotations

import concurrent.futures
import itertools
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, Union, overload

from .._adaptive import Adaptive
from .._keyed import MaxPerKey
from .._keyed_slots import KeyFn, check_keying
from .._retry import INHERIT, Inherit, RetryArg, resolve_retry
from .._typing import A1, A2, A3, Never, ParamSpec, Self, final
from .._validate import (
    check_initializer,
    check_max_workers,
    check_seconds,
    check_switch,
)
from ._job import is_coroutine_job, submit_job
from ._loop_thread import LoopThread
from ._map import start_map
from ._options import CoreOptions, ShutdownRequest
from ._runner import LoopFactory
from ._settings import _DEFAULT_MAX_JOBS, BridgeSettings, _default_max_threads
from ._waiting import FAILED_EXIT, NORMAL_EXIT, check_may_wait, shut_down, wait_stopped

__all__ = ["ThreadedLoopExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

_name_counter = itertools.count()


@final
class ThreadedLoopExecutor(BridgeSettings, concurrent.futures.Executor):
    """An Executor that runs coroutine functions on its own event loop thread.

    Coroutine functions run as tasks of a :class:`CoroutineExecutor` on a loop in a
    background thread; plain callables run in worker threads the executor owns, so
    libraries that hand an Executor ordinary functions get real concurrency.
    ``max_workers`` bounds the running jobs of both kinds together (``None``: 1000
    coroutine jobs, and ``min(32, os.cpu_count() + 4)`` threads, as ThreadPoolExecutor).

    Lifecycle: the loop thread starts in the constructor; ``shutdown()``, leaving a
    ``with``/``async with`` block, garbage collection or interpreter exit stop it after
    its jobs. Leaving a block by an exception (``KeyboardInterrupt`` too) first cancels
    the queued jobs and the running coroutine jobs.

    Errors: a job's exception (``KeyboardInterrupt`` and ``SystemExit`` included) fails
    only that job's future. If ``initializer`` raises, or the loop cannot start its
    first task (its task factory raises, or makes no task), the executor is broken:
    pending and later jobs fail with :class:`BrokenLoopExecutor`, chained from that
    error; an initializer's error is logged at CRITICAL on the ``concurrent.futures``
    logger too, as ThreadPoolExecutor logs it. A job whose own task the factory cannot
    make fails with that error alone.

    A blocking callable that has started cannot be interrupted: ``cancel()`` returns
    False for it, as for ThreadPoolExecutor. To stop long blocking work, make it a
    coroutine function (``cancel()`` reaches it while it runs) or check a flag in it.

    Args:
        max_workers: how many jobs may run at once, and the most worker threads; or an
            :class:`Adaptive` limit (worker threads up to its ``max``).
        loop_factory: makes the loop, for example ``uvloop.new_event_loop``.
        thread_name_prefix: names the threads ``<prefix>_loop`` and ``<prefix>_worker_N``.
        initializer: run once on the loop thread before any job, as
            ``initializer(*initargs)``; awaited if it returns an awaitable.
        max_per_second, burst, job_timeout: passed to the :class:`CoroutineExecutor`;
            they govern blocking jobs too (those then start from the loop thread).
            ``job_timeout`` fails the future of a blocking job still waiting for a
            thread, but cannot interrupt a call that a worker has started.
        retry: a :class:`Retry` or ``policy(attempt, exc) -> seconds | None``, for jobs of
            both kinds; a job holds no slot and no thread between attempts.
        key, max_per_key: per-key limits, as on :class:`CoroutineExecutor`, over jobs of
            both kinds; ``key()`` and ``max_per_key()`` run in the submitting thread.

    Raises:
        ValueError: ``max_workers`` below 1, or a bad pass-through option.
        TypeError: a non-callable ``initializer`` or ``loop_factory``, or an option of the
            wrong kind.
    """

    def __init__(
        self,
        max_workers: Union[int, Adaptive, None] = None,
        *,
        loop_factory: Optional[LoopFactory] = None,
        thread_name_prefix: str = "",
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        max_per_second: Optional[float] = None,
        burst: Optional[int] = None,
        job_timeout: Optional[float] = None,
        annotate_errors: bool = True,
        retry: RetryArg = None,
        key: Optional[KeyFn] = None,
        max_per_key: Optional[MaxPerKey] = None,
    ) -> None:
        self._annotate = check_switch("annotate_errors", annotate_errors)  # names failed jobs
        policy = resolve_retry(retry)
        per_key = check_keying(key, max_per_key)
        adaptive = max_workers if isinstance(max_workers, Adaptive) else None
        if max_workers is None:
            max_jobs, max_threads = _DEFAULT_MAX_JOBS, _default_max_threads()
        elif adaptive is not None:  # the slots follow the limit; threads up to its max
            max_jobs = max_threads = adaptive.max
        else:
            max_jobs = max_threads = check_max_workers(max_workers)
        # max_workers=None: the property reads 1000, and assigning it back keeps this mode.
        self._default_workers = max_workers is None
        check_initializer(initializer)
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(f"loop_factory must be a callable or None (got {loop_factory!r})")
        name = thread_name_prefix or f"ThreadedLoopExecutor-{next(_name_counter)}"
        self._bridge = bridge = LoopThread(
            name,
            core=CoreOptions(
                max_jobs, max_per_second, burst, job_timeout, adaptive, policy, key, per_key
            ),
            max_threads=max_threads,
            loop_factory=loop_factory,
            initializer=initializer,
            initargs=tuple(initargs),
        )
        self._handoff = handoff = bridge.handoff
        bridge.start()
        # Garbage collection of a forgotten executor stops its thread after its jobs; the
        # threads hold the LoopThread, never this object.
        finalizer = weakref.finalize(self, handoff.request_shutdown_threadsafe, ShutdownRequest())
        finalizer.atexit = False  # interpreter exit has its own hook (_python_exit)

    def __repr__(self) -> str:
        handoff = self._handoff
        state, max_workers = handoff.state.value, handoff.max_workers
        return f"<ThreadedLoopExecutor {self._bridge.name} {state} max_workers={max_workers}>"

    #
    # Submitting
    #

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]: ...

    @overload
    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]: ...

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; return a future for its result.

        A coroutine function (or a callable with ``async def __call__``) runs as a task on
        the loop; any other callable runs in a worker thread, and if it returns an
        awaitable (``lambda: fetch(url)``), that is awaited on the loop. The job runs in a
        copy of the calling thread's ``contextvars`` context. Callable from any thread,
        including the loop thread and jobs themselves; never blocks.

        Cancellation: ``future.cancel()`` cancels a queued job, and a coroutine job even
        while it runs; it returns False for a blocking call that has started. Under the
        executor's ``retry`` policy it also cancels a job between two attempts.

        Raises:
            RuntimeError: after ``shutdown()`` ("cannot schedule new futures after
                shutdown"), or in a child process after ``os.fork()``.
            BrokenLoopExecutor: the initializer failed, or the loop could not start.
            TypeError: ``fn`` is not callable (a coroutine object gets a hint), or is an
                async generator function; checked before anything runs.
        """
        return submit_job(self._handoff, self._annotate, fn, args, kwargs, None)

    # One pair of overloads per number of inputs, as typeshed types the builtin map: the
    # items of each input must suit fn's parameter in that place (a coroutine function
    # first, so its result is the awaited one); from four inputs on they are not checked.
    @overload
    def map(self, fn: Callable[[A1], Awaitable[T]], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[[A1], T], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[[A1, A2], Awaitable[T]], in1: Iterable[A1], in2: Iterable[A2],
            /, *, timeout: Optional[float] = ..., chunksize: int = ...,
            buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[[A1, A2], T], in1: Iterable[A1], in2: Iterable[A2],
            /, *, timeout: Optional[float] = ..., chunksize: int = ...,
            buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[[A1, A2, A3], Awaitable[T]], in1: Iterable[A1],
            in2: Iterable[A2], in3: Iterable[A3], /, *, timeout: Optional[float] = ...,
            chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[[A1, A2, A3], T], in1: Iterable[A1],
            in2: Iterable[A2], in3: Iterable[A3], /, *, timeout: Optional[float] = ...,
            chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[..., Awaitable[T]], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self, fn: Callable[..., T], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    # Executor.map's own shape, so that type checkers take this map for a valid override
    # (an Iterable[Never] may stand where the base has Iterable[Any]). No item is a Never:
    # only a map of no input takes it, and the calls refused above stay refused.
    @overload
    def map(self, fn: Callable[..., T], *iterables: Iterable[Never],
            timeout: Optional[float] = ..., chunksize: int = ..., buffersize: Optional[int] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
        retry: Union[RetryArg, Inherit] = INHERIT,
    ) -> Iterator[Any]:
        """Return an iterator of ``fn(*args)`` over the zipped inputs, in input order.

        As ``Executor.map``: ``TimeoutError`` from ``next()`` once ``timeout`` seconds
        have passed since this call; a job's error is raised when its result is reached;
        the jobs still pending are cancelled when the iterator is closed or collected,
        and those this call submitted when it raises as it submits (an input or ``key()``
        raising, a Ctrl-C).
        ``chunksize`` is accepted for compatibility and ignored, as by ThreadPoolExecutor.
        One ``next()`` at a time, as on its generator: a ``next()`` made while another
        has not returned (in another thread) raises ``ValueError`` and changes nothing.

        ``buffersize`` (Python 3.14's parameter, here on every version) reads the inputs
        lazily: at most that many jobs are submitted ahead of the result being waited
        for, so an endless input runs in bounded memory. By default every job is
        submitted at once, before this returns.

        ``retry`` replaces the executor's retry policy for this map's jobs (``None``: no
        retries); the results still come in input order.
        """
        is_coroutine_job(fn, "map")  # what is no job is refused here, named as map()'s
        policy = retry if isinstance(retry, Inherit) else resolve_retry(retry)
        return start_map(self, fn, iterables, timeout, buffersize, policy)

    #
    # Shutting down
    #

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: Optional[float] = None
    ) -> None:
        """Stop accepting jobs; with ``wait``, return once every job and thread is done.

        As ``Executor.shutdown``: later ``submit()`` calls raise ``RuntimeError``;
        ``cancel_futures`` cancels the jobs that would have waited, for a slot, a worker
        thread, the rate limit or the initializer (every job submitted while it runs):
        their futures are cancelled before this returns (so ``wait()``/``as_completed()``
        return), except those the loop thread holds (rate limit; ``job_timeout``), which
        it cancels soon after. A job submitted while a slot was free (the initializer
        done) counts as started and runs, as on a ThreadPoolExecutor whose idle worker
        has taken it. ``timeout`` is a grace period from this call: coroutine jobs
        still running after it are cancelled, and so is an async initializer (the jobs
        waiting for it never start); a sync one cannot be, and delays it. Every call's
        grace period counts, the earliest end wins: a later call with a shorter one
        ends it sooner (after ``shutdown(wait=False)`` or while another call waits),
        a longer one never extends it.

        With ``wait=False`` this returns at once, from any thread. With ``wait=True``, not
        from the loop thread or a worker thread (that would deadlock: ``RuntimeError``).

        Cancellation: a ``KeyboardInterrupt`` (Ctrl-C) during the wait cancels the queued
        and running coroutine jobs, waits for them to finish cancelling, then propagates;
        a second one ends that wait at once.
        """
        grace = check_seconds("timeout", timeout)
        request = ShutdownRequest(cancel_queued=cancel_futures, grace=grace)
        if wait:
            shut_down(self._bridge, request, "shutdown(wait=True)", self)
        else:
            self._handoff.request_shutdown_threadsafe(request)

    def _check_may_wait(self, call: str) -> None:
        check_may_wait(self._bridge, call, self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # Leaving by an exception (Ctrl-C included): do not wait for jobs that may never
        # finish. Cancel queued and running coroutine jobs, wait, and let it propagate.
        # One line: a Ctrl-C raised before it (on entering __exit__, as in any __exit__
        # written in Python) leaves the block as it is; one raised in it cancels the jobs.
        shut_down(self._bridge, *(NORMAL_EXIT if exc is None else FAILED_EXIT), self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Shut down as ``with`` does, waiting without blocking the caller's event loop.

        Cancellation: cancelling the waiting task cancels the queued and running
        coroutine jobs, still waits for them, then re-raises the cancellation.
        """
        self._check_may_wait("async with")
        await wait_stopped(self._bridge, failed=exc is not None)
