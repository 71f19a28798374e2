"""LoopThread: the background thread, its event loop, and the hand-off from other threads.

Threading model (who calls what):

* any thread: ``submit_threadsafe``, ``cancel_job_threadsafe``, ``request_shutdown_threadsafe``,
  ``call_threadsafe``, ``set_max_workers_threadsafe``, ``join``;
* worker threads: ``_post_done_threadsafe`` (a blocking job finished);
* the loop thread: ``_run`` (the thread body), ``_main``, ``_drain`` and everything it calls,
  the job wrappers ``_run_coroutine``/``_run_blocking`` and ``_on_job_done``;
* a forked child, in its only thread: ``_after_fork_in_child``.

Work crosses into the loop thread only through the hand-off below: callers append to a
deque under ``_lock`` and the first append of a batch wakes the loop with one
``call_soon_threadsafe``; ``_drain`` then takes the whole batch. Results go back through
the job's concurrent future, which is thread-safe by itself. Nothing outside this module
takes ``_lock``, and no user code and no future callback runs while it is held.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import enum
import inspect
import os
import threading
import weakref
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, Callable, NamedTuple, Optional

from .._errors import BrokenLoopExecutor
from .._executor import CoroutineExecutor
from .._stats import ExecutorStats
from ._future import BridgeFuture
from ._runner import LoopFactory, Runner
from ._workers import WorkerPool, WorkItem

__all__ = ["Job", "LoopThread", "ShutdownRequest"]

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"
_FORK_MESSAGE = (
    "{name} belongs to the parent process: after os.fork() its loop thread does not exist "
    "in the child; create a new executor in the child"
)

# A job as it crosses the hand-off: (future, fn, args, kwargs, context, is_coroutine_job).
Job = tuple[BridgeFuture[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any], contextvars.Context, bool]


class ShutdownRequest(NamedTuple):
    cancel_queued: bool  # cancel jobs that have not started (stdlib cancel_futures)
    cancel_running: bool  # cancel running coroutine jobs too (exceptional exit)
    grace: Optional[float]  # shutdown(timeout=): then cancel what still runs


class _State(enum.Enum):
    STARTING = "starting"  # the loop runs the initializer; submits wait in the hand-off
    RUNNING = "running"  # accepting jobs
    SHUTTING_DOWN = "shutting down"  # no new jobs; accepted ones finish or are cancelled
    BROKEN = "broken"  # the initializer failed; the thread has stopped or is stopping
    CLOSED = "closed"  # the loop has finished every job and stopped; terminal
    FORKED = "forked"  # this is a forked child: the loop thread exists only in the parent


_ACCEPTING = (_State.STARTING, _State.RUNNING)


class _CoroutineJobError(Exception):
    """Carries a coroutine job's KeyboardInterrupt/SystemExit out of its task.

    An asyncio task re-raises those out of the event loop, which would kill the loop
    thread and strand every other future; the job's own future gets the original.
    """


class LoopThread:
    """The event loop thread behind one ThreadedLoopExecutor. Holds no reference to it."""

    def __init__(
        self,
        name: str,
        *,
        max_workers: int,
        max_threads: int,
        loop_factory: Optional[LoopFactory],
        initializer: Optional[Callable[..., object]],
        initargs: tuple[Any, ...],
        max_per_second: Optional[float],
        burst: Optional[int],
        job_timeout: Optional[float],
    ) -> None:
        self.name = name
        self.owner_repr = f"<ThreadedLoopExecutor {name}>"
        # Validates the pass-through options here, in the caller's thread.
        self._core = CoroutineExecutor(
            max_workers,
            suppress_task_errors=True,  # one job's error fails only its own future (stdlib)
            max_per_second=max_per_second,
            burst=burst,
            job_timeout=job_timeout,
        )
        self._loop_factory = loop_factory
        self._initializer = initializer
        self._initargs = initargs
        self._pool = WorkerPool(name, max_threads, self._post_done_threadsafe)

        self._lock = threading.Lock()
        # Invariants: _wake_pending is True iff a _drain is scheduled and has not yet taken
        # the batch; it is only ever set while _ready (the loop is draining the hand-off).
        self._state = _State.STARTING  # guarded by _lock
        self._ready = False  # guarded by _lock
        self._wake_pending = False  # guarded by _lock
        self._submits: collections.deque[Job] = collections.deque()  # guarded by _lock
        self._calls: list[Callable[[], object]] = []  # guarded by _lock
        self._shutdown: Optional[ShutdownRequest] = None  # guarded by _lock
        self._broken: Optional[BaseException] = None  # guarded by _lock
        self.max_workers = max_workers  # guarded by _lock for writes

        self._loop: Optional[asyncio.AbstractEventLoop] = None  # set once, before _created
        self.loop_ident: Optional[int] = None
        self._created = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._final_stats: Optional[ExecutorStats] = None
        # Loop thread only:
        self._jobs: set[BridgeFuture[Any]] = set()  # every job handed to the core, not done
        self._stop: Optional[asyncio.Future[ShutdownRequest]] = None

        self._thread = threading.Thread(name=f"{name}_loop", target=self._run)

    def start(self) -> None:
        """Start the thread; return once its loop exists. Raises what loop_factory raised."""
        with _global_lock:
            if _interpreter_exiting:
                raise RuntimeError(_EXIT_MESSAGE)
            _live.add(self)
        self._thread.start()
        self._created.wait()
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            self._thread.join()
            raise error

    @property
    def state(self) -> str:
        return self._state.value

    def is_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_ident

    def is_worker_thread(self) -> bool:
        return threading.get_ident() in self._pool.thread_idents()

    #
    # Any thread: the hand-off
    #

    def submit_threadsafe(self, job: Job) -> None:
        """Hand a job to the loop, or raise. A call that returns is always processed."""
        # Hold _lock from the state check through the append. Otherwise:
        #   submitter thread                     loop thread
        #   reads _state -> RUNNING
        #                                        shuts down: drains the hand-off, closes
        #   appends the job                      (never drained: the future hangs forever)
        with self._lock:
            if self._state is _State.RUNNING or self._state is _State.STARTING:
                self._submits.append(job)
                if not self._wake_pending and self._ready:
                    self._wake_pending = True
                    self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]
                return
            state, broken = self._state, self._broken
        raise self._refusal(state, broken)

    def _refusal(self, state: _State, broken: Optional[BaseException]) -> BaseException:
        if state is _State.BROKEN:
            error = BrokenLoopExecutor(f"{self.owner_repr} is broken: its initializer raised {broken!r}")
            error.__cause__ = broken
            return error
        if state is _State.FORKED:
            return RuntimeError(_FORK_MESSAGE.format(name=self.owner_repr))
        if _interpreter_exiting:
            return RuntimeError(_EXIT_MESSAGE)
        return RuntimeError(SHUTDOWN_MESSAGE)

    def _call_soon_threadsafe(self, fn: Callable[[], object]) -> bool:
        """Run fn() on the loop soon. False (fn dropped) once the loop has stopped."""
        with self._lock:
            if self._state is _State.CLOSED or self._state is _State.FORKED or self._broken:
                return False
            self._calls.append(fn)
            if not self._wake_pending and self._ready:
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]
            return True

    def cancel_job_threadsafe(self, future: BridgeFuture[Any]) -> None:
        """The future was cancelled: cancel its job on the loop (a no-op once it is done)."""
        if self.is_loop_thread():
            self._cancel_job(future)
        else:
            # Dropped once the loop has stopped: by then every job has finished.
            self._call_soon_threadsafe(lambda: self._cancel_job(future))

    def _post_done_threadsafe(self, item: WorkItem) -> None:
        self._call_soon_threadsafe(lambda: self._on_work_done(item))

    def set_max_workers_threadsafe(self, value: int, max_threads: int) -> None:
        with self._lock:
            self.max_workers = value

        def apply() -> None:
            self._core.max_workers = value
            self._pool.cap = max_threads

        if not self._call_soon_threadsafe(apply):
            self._core.max_workers = value  # not running: nothing else touches them
            self._pool.cap = max_threads

    def stats_threadsafe(self) -> ExecutorStats:
        """The core's counts plus the jobs still in the hand-off."""
        if self._final_stats is not None:
            return self._final_stats
        if self.is_loop_thread():
            return self._stats()
        result: concurrent.futures.Future[ExecutorStats] = concurrent.futures.Future()

        def read() -> None:
            result.set_result(self._stats())

        with self._lock:
            starting = self._state is _State.STARTING
        if starting or not self._call_soon_threadsafe(read):
            # The loop is not draining (initializer running, or stopped): nothing moves.
            return self._final_stats or self._stats()
        return result.result()

    def _stats(self) -> ExecutorStats:
        stats = self._core.stats
        with self._lock:
            waiting = len(self._submits)
        if not waiting:
            return stats
        return ExecutorStats(
            submitted=stats.submitted + waiting,
            queued=stats.queued + waiting,
            running=stats.running,
            succeeded=stats.succeeded,
            failed=stats.failed,
            cancelled=stats.cancelled,
        )

    def request_shutdown_threadsafe(self, request: ShutdownRequest) -> None:
        """Stop accepting jobs; the loop finishes (or cancels) them, then the thread ends.

        Jobs handed off before this call are still processed. A later call may only add
        cancellation (cancel_futures after a plain shutdown, or an exceptional exit).
        """
        with self._lock:
            state = self._state
            if state is _State.CLOSED or state is _State.FORKED or state is _State.BROKEN:
                return
            self._state = _State.SHUTTING_DOWN
            previous = self._shutdown
            if previous is None:
                self._shutdown = request
            else:
                self._shutdown = ShutdownRequest(
                    previous.cancel_queued or request.cancel_queued,
                    previous.cancel_running or request.cancel_running,
                    previous.grace,
                )
            if not self._wake_pending and self._ready:
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread.ident is not None and not self.is_loop_thread():
            self._thread.join(timeout)

    def stopped_future(self) -> concurrent.futures.Future[None]:
        """Resolved by the loop thread as its very last step."""
        return self._stopped

    #
    # Loop thread
    #

    def _run(self) -> None:
        """The thread body: create the loop, run _main, close the loop, stop the workers."""
        try:
            runner = Runner(loop_factory=self._loop_factory)
            self._loop = runner.get_loop()
        except BaseException as exc:
            self._start_error = exc
            with self._lock:
                self._state = _State.CLOSED
            self._created.set()
            self._stopped.set_result(None)
            return
        self.loop_ident = threading.get_ident()
        self._created.set()
        crash: Optional[BaseException] = None
        try:
            runner.run(self._main())
        except BaseException as exc:  # a bug in this module: fail the futures, never strand them
            crash = exc
        finally:
            try:
                runner.close()
            finally:
                self._pool.stop()
                self._close(crash)
                self._stopped.set_result(None)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        if self._initializer is not None:
            try:
                ready = self._initializer(*self._initargs)
                if inspect.isawaitable(ready):
                    await ready
            except BaseException as exc:
                self._break(exc)
                return
        with self._lock:
            if self._state is _State.STARTING:
                self._state = _State.RUNNING
            self._ready = True
            self._wake_pending = True
        self._drain()
        request = await self._stop
        self._apply(request)
        await self._core.shutdown(wait=True, timeout=request.grace)
        await asyncio.sleep(0)  # let the job-done callbacks of the last jobs run

    def _drain(self) -> None:
        """Take the whole batch from the hand-off and act on it."""
        with self._lock:
            self._wake_pending = False
            submits, self._submits = self._submits, collections.deque()
            calls, self._calls = self._calls, []
            request = self._shutdown
        start = self._start_job
        for job in submits:
            start(job)
        del submits
        for call in calls:
            call()
        if request is not None:
            stop = self._stop
            assert stop is not None
            if not stop.done():
                stop.set_result(request)
            else:
                self._apply(request)  # a later shutdown() adding cancellation

    def _start_job(self, job: Job) -> None:
        future, fn, args, kwargs, ctx, is_coroutine = job
        if future._state != PENDING:
            return  # cancelled before it reached the loop; cancel() already notified
        try:
            if is_coroutine:
                task = ctx.run(self._core.submit_nowait, self._run_coroutine, future, fn, args, kwargs)
            else:
                task = ctx.run(
                    self._core.submit_nowait, self._run_blocking, future, fn, args, kwargs, ctx
                )
        except BaseException as exc:  # the core refused it (not expected while we accept)
            future._try_set_exception(exc)
            return
        future._job = task
        self._jobs.add(future)
        task.add_done_callback(lambda t: self._on_job_done(future, t))

    def _cancel_job(self, future: BridgeFuture[Any]) -> None:
        task = future._job
        if task is not None:
            task.cancel()

    async def _run_coroutine(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        future._started = True
        return await _await_into(future, fn(*args, **kwargs), fn)

    async def _run_blocking(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
    ) -> Any:
        loop = self._loop
        assert loop is not None
        item = WorkItem(future, fn, args, kwargs, ctx, loop.create_future())
        self._pool.submit(item)
        try:
            await item.waiter
        except asyncio.CancelledError:
            if not future._withdraw():
                # A worker is running the call and cannot be interrupted: keep the slot
                # until it returns, so max_workers and shutdown(wait=True) stay truthful.
                while not item.finished:
                    item.waiter = loop.create_future()
                    try:
                        await item.waiter
                    except asyncio.CancelledError:
                        continue  # cancelled again: still waiting for the same call
                _drop_awaitable(item.outcome)
            raise
        if item.outcome is None:
            return None  # the worker has set the future already
        outcome, item.outcome = item.outcome, None
        return await _await_into(future, outcome, fn)

    def _on_work_done(self, item: WorkItem) -> None:
        item.finished = True
        if not item.waiter.done():
            item.waiter.set_result(None)

    def _on_job_done(self, future: BridgeFuture[Any], task: asyncio.Future[Any]) -> None:
        """The job's task (or queued future) is done: resolve what the job left open."""
        self._jobs.discard(future)
        if future._state == FINISHED or future._state == CANCELLED_AND_NOTIFIED:
            return  # the usual case: the job itself (or the user) resolved it
        if task.cancelled():
            future._set_cancelled()  # queued job dropped, or cancelled on the loop
            return
        exc = task.exception()
        if exc is None:
            future._try_set_result(task.result())
        else:
            future._try_set_exception(exc.__cause__ if type(exc) is _CoroutineJobError else exc)  # type: ignore[arg-type]

    def _apply(self, request: ShutdownRequest) -> None:
        """Cancel what the shutdown request says to cancel."""
        for future in list(self._jobs):
            if request.cancel_running or not future._started:
                # For a job not yet running (queued, or waiting for a worker) this is
                # exactly cancel_futures; a blocking call already running refuses it.
                if not future.cancel() and request.cancel_running:
                    self._cancel_job(future)

    def _break(self, error: BaseException) -> None:
        """The initializer raised: fail every job handed off so far, and every later one."""
        with self._lock:
            self._state = _State.BROKEN
            self._broken = error
            submits, self._submits = self._submits, collections.deque()
            self._calls.clear()
        for job in submits:
            job[0]._try_set_exception(self._refusal(_State.BROKEN, error))

    def _close(self, crash: Optional[BaseException]) -> None:
        """The loop has stopped. Nothing may be handed off any more."""
        with self._lock:
            if self._state is not _State.BROKEN:
                self._state = _State.CLOSED
            self._ready = False
            submits, self._submits = self._submits, collections.deque()
            self._calls.clear()
        self._final_stats = self._core.stats
        leftovers = [job[0] for job in submits] + list(self._jobs)
        self._jobs.clear()
        for future in leftovers:  # only after a crash of this module: never strand a future
            error = RuntimeError(f"{self.owner_repr} stopped unexpectedly: {crash!r}")
            error.__cause__ = crash
            future._try_set_exception(error)

    #
    # Forked child
    #

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists here, so no lock may be held by a live thread;
        # replace the locks instead of taking ones a parent thread held at the fork.
        self._lock = threading.Lock()
        self._state = _State.FORKED
        self._ready = False
        self._pool.forget_threads()
        orphans = [job[0] for job in self._submits] + list(self._jobs)
        self._submits.clear()
        self._jobs.clear()
        for future in orphans:
            future._condition = threading.Condition()
            future._try_set_exception(RuntimeError(_FORK_MESSAGE.format(name=self.owner_repr)))


async def _await_into(future: BridgeFuture[Any], awaitable: Any, fn: object) -> Any:
    """Await a job's awaitable on the loop and put its outcome into the job's future."""
    try:
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"job function must return an awaitable (got {awaitable!r} from {fn!r})")
        result = await awaitable
    except asyncio.CancelledError:
        raise  # _on_job_done cancels the future once the task has finished cancelling
    except (KeyboardInterrupt, SystemExit) as exc:
        future._try_set_exception(exc)
        raise _CoroutineJobError(repr(exc)) from exc
    except BaseException as exc:
        future._try_set_exception(exc)
        raise
    # Set it here rather than in a done callback: the caller gets it one loop turn sooner.
    future._try_set_result(result)
    return result


def _drop_awaitable(awaitable: object) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never awaited because the job was cancelled: no warning


#
# Interpreter exit and fork
#

_live: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_global_lock = threading.Lock()  # guards _interpreter_exiting and _live
_interpreter_exiting = False


def _python_exit() -> None:
    """Let never-shut-down executors finish their jobs before the interpreter exits.

    Registered like ThreadPoolExecutor's hook: it runs just before the interpreter joins
    non-daemon threads, so a forgotten executor neither hangs the exit nor loses jobs.
    """
    global _interpreter_exiting
    with _global_lock:
        _interpreter_exiting = True
        live = list(_live)
    for loop_thread in live:
        loop_thread.request_shutdown_threadsafe(ShutdownRequest(False, False, None))
    for loop_thread in live:
        loop_thread.join()


def _after_fork_in_child() -> None:
    global _global_lock
    _global_lock = threading.Lock()
    for loop_thread in list(_live):
        loop_thread._after_fork_in_child()


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

