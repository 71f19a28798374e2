"""LoopThread: the background thread, its event loop, and the hand-off from other threads.

Threading model (who calls what):

* any thread: ``submit_threadsafe``, ``cancel_job_threadsafe``, ``request_shutdown_threadsafe``,
  ``set_max_workers_threadsafe``, ``stats_threadsafe``, ``join``;
* worker threads: ``_post_done_threadsafe`` (a blocking job finished);
* the loop thread: ``_run`` (the thread body), ``_main``, ``_drain`` and the Scheduler;
* a forked child, in its only thread: ``_after_fork_in_child``.

Work crosses into the loop thread only through the hand-off: callers append to a list
under ``_lock``, and the first append of a batch wakes the loop with one
``call_soon_threadsafe``; ``_drain`` then takes the whole batch at once. Results go back
through each job's concurrent future, which is thread-safe by itself. Nothing outside
this module takes ``_lock``, and no user code or future callback runs while it is held.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import inspect
import os
import threading
import weakref
from typing import Any, Callable, Optional

from .._errors import BrokenLoopExecutor
from .._stats import ExecutorStats
from ._future import BridgeFuture
from ._runner import LoopFactory, Runner
from ._scheduler import Job, Scheduler, ShutdownRequest
from ._workers import WorkItem

__all__ = ["SHUTDOWN_MESSAGE", "LoopThread"]

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"
_FORK_MESSAGE = (
    "{name} belongs to the parent process: after os.fork() its loop thread does not exist "
    "in the child; create a new executor in the child"
)


class _State(enum.Enum):
    STARTING = "starting"  # the loop runs the initializer; submits wait in the hand-off
    RUNNING = "running"  # accepting jobs
    SHUTTING_DOWN = "shutting down"  # no new jobs; accepted ones finish or are cancelled
    BROKEN = "broken"  # the initializer failed; the thread has stopped or is stopping
    CLOSED = "closed"  # the loop has finished every job and stopped; terminal
    FORKED = "forked"  # this is a forked child: the loop thread exists only in the parent


_STARTING, _RUNNING = _State.STARTING, _State.RUNNING


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
        self._scheduler = Scheduler(
            name,
            max_workers=max_workers,
            max_threads=max_threads,
            max_per_second=max_per_second,
            burst=burst,
            job_timeout=job_timeout,
            post_done=self._post_done_threadsafe,
        )
        self._loop_factory = loop_factory
        self._initializer = initializer
        self._initargs = initargs

        self._lock = threading.Lock()
        # Invariant: _wake_pending is True iff a _drain is scheduled that has not yet taken
        # the batch; it is only ever set while _ready (the loop drains the hand-off).
        self._state = _STARTING  # guarded by _lock
        self._ready = False  # guarded by _lock
        self._wake_pending = False  # guarded by _lock
        self._submits: collections.deque[Job] = collections.deque()  # guarded by _lock
        self._calls: list[Callable[[], object]] = []  # guarded by _lock
        self._done_items: list[WorkItem] = []  # guarded by _lock
        self._shutdown: Optional[ShutdownRequest] = None  # guarded by _lock
        self._broken: Optional[BaseException] = None  # guarded by _lock
        self._applied: list[threading.Event] = []  # guarded by _lock; set once applied
        self.max_workers = max_workers  # written under _lock

        self._loop: Optional[asyncio.AbstractEventLoop] = None  # set once, before _created
        self.loop_ident: Optional[int] = None
        self._created = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._final_stats: Optional[ExecutorStats] = None
        self._stop: Optional[asyncio.Future[ShutdownRequest]] = None  # loop thread only
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
        return threading.get_ident() in self._scheduler.pool.thread_idents()

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
            state = self._state
            if state is _RUNNING or state is _STARTING:
                self._submits.append(job)
                if not self._wake_pending and self._ready:
                    self._wake_pending = True
                    self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]
                return
            broken = self._broken
        raise self._refusal(state, broken)

    def _refusal(self, state: _State, broken: Optional[BaseException]) -> BaseException:
        if state is _State.BROKEN:
            error = BrokenLoopExecutor(
                f"{self.owner_repr} is broken: its initializer raised {broken!r}"
            )
            error.__cause__ = broken
            return error
        if state is _State.FORKED:
            return RuntimeError(_FORK_MESSAGE.format(name=self.owner_repr))
        if _interpreter_exiting:
            return RuntimeError(_EXIT_MESSAGE)
        return RuntimeError(SHUTDOWN_MESSAGE)

    def _wake_locked(self) -> None:
        if not self._wake_pending and self._ready:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]

    def _call_soon_threadsafe(self, fn: Callable[[], object]) -> bool:
        """Run fn() on the loop soon. False (fn dropped) once the loop has stopped."""
        with self._lock:
            if self._state is _State.CLOSED or self._state is _State.FORKED or self._broken:
                return False
            self._calls.append(fn)
            self._wake_locked()
            return True

    def cancel_job_threadsafe(self, future: BridgeFuture[Any]) -> None:
        """The future was cancelled: cancel its job on the loop (a no-op once it is done)."""
        if self.is_loop_thread():
            self._scheduler.cancel_job(future)
        else:
            # Dropped once the loop has stopped: by then every job has finished.
            self._call_soon_threadsafe(lambda: self._scheduler.cancel_job(future))

    def _post_done_threadsafe(self, item: WorkItem) -> None:
        with self._lock:
            if self._state is _State.CLOSED or self._state is _State.FORKED:
                return  # a skipped (cancelled) item after the last job: nobody waits
            self._done_items.append(item)
            self._wake_locked()

    def set_max_workers_threadsafe(self, value: int, max_threads: int) -> None:
        scheduler = self._scheduler

        def apply() -> None:
            scheduler.core.max_workers = value
            scheduler.pool.cap = max_threads
            scheduler.add(collections.deque())  # start backlog jobs into the new room

        with self._lock:
            self.max_workers = value
            starting = self._state is _STARTING and not self._ready
        if starting or not self._call_soon_threadsafe(apply):
            # The loop is not draining yet (or any more): nothing else touches these.
            scheduler.core.max_workers = value
            scheduler.pool.cap = max_threads

    def stats_threadsafe(self) -> ExecutorStats:
        """The core's counts plus the jobs still in the hand-off and the backlog."""
        if self._final_stats is not None:
            return self._final_stats
        if self.is_loop_thread():
            return self._stats()
        result: concurrent.futures.Future[ExecutorStats] = concurrent.futures.Future()
        with self._lock:
            starting = not self._ready
        if starting or not self._call_soon_threadsafe(lambda: result.set_result(self._stats())):
            # The loop is not draining (initializer running, or stopped): nothing moves.
            return self._final_stats or self._stats()
        return result.result()

    def _stats(self) -> ExecutorStats:
        stats = self._scheduler.core.stats
        with self._lock:
            waiting = len(self._submits)
        waiting += self._scheduler.waiting()
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
        When it asks for cancellation, this returns once the loop has cancelled the jobs,
        as the stdlib's shutdown(cancel_futures=True) does (except on the loop thread).
        """
        applied = threading.Event()
        if not self._request_shutdown(request, applied):
            return
        if (request.cancel_queued or request.cancel_running) and not self.is_loop_thread():
            applied.wait()

    def _request_shutdown(self, request: ShutdownRequest, applied: threading.Event) -> bool:
        with self._lock:
            state = self._state
            if state is _State.CLOSED or state is _State.FORKED or state is _State.BROKEN:
                return False
            self._applied.append(applied)
            self._state = _State.SHUTTING_DOWN
            previous = self._shutdown
            if previous is not None:
                request = ShutdownRequest(
                    previous.cancel_queued or request.cancel_queued,
                    previous.cancel_running or request.cancel_running,
                    previous.grace,
                )
            self._shutdown = request
            self._wake_locked()
            return True

    def join(self) -> None:
        if self._thread.ident is not None and not self.is_loop_thread():
            self._thread.join()

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
        except BaseException as exc:  # a bug in this package: fail the futures, never strand
            crash = exc
        finally:
            try:
                runner.close()
            finally:
                self._scheduler.pool.stop()
                self._close(crash)
                if self._stopped.set_running_or_notify_cancel():
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
            if self._state is _STARTING:
                self._state = _RUNNING
            self._ready = True
            self._wake_pending = True
        try:
            self._drain()
            await self._scheduler.shutdown(await self._stop)
        finally:
            # No wake-up may target the loop once it starts closing. Otherwise:
            #   worker thread                         loop thread
            #   skips a cancelled item, posts it
            #                                         closes the loop
            #   call_soon_threadsafe -> RuntimeError("Event loop is closed")
            # Whatever is handed off from now on is dropped by _close(): every job is done.
            with self._lock:
                self._ready = False

    def _drain(self) -> None:
        """Take the whole batch from the hand-off and act on it."""
        with self._lock:
            self._wake_pending = False
            submits, self._submits = self._submits, collections.deque()
            calls, self._calls = self._calls, []
            done_items, self._done_items = self._done_items, []
            request = self._shutdown
            applied, self._applied = self._applied, []
        scheduler = self._scheduler
        if submits:
            scheduler.add(submits)
        if request is not None:
            # Before the finished jobs below free their slots: a job queued when
            # shutdown(cancel_futures=True) was called must not start after all.
            scheduler.apply(request)
            for event in applied:
                event.set()
            stop = self._stop
            assert stop is not None
            if not stop.done():
                stop.set_result(request)
        for item in done_items:
            scheduler.on_work_done(item)
        for call in calls:
            call()

    def _break(self, error: BaseException) -> None:
        """The initializer raised: fail every job handed off so far, and every later one."""
        with self._lock:
            self._state = _State.BROKEN
            self._broken = error
            submits, self._submits = self._submits, collections.deque()
            self._calls.clear()
            applied, self._applied = self._applied, []
        for event in applied:
            event.set()
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
            self._done_items.clear()
            applied, self._applied = self._applied, []
        for event in applied:
            event.set()
        self._final_stats = self._scheduler.core.stats
        for future in [job[0] for job in submits] + self._scheduler.orphans():
            # Only after a crash of this package: never strand a future.
            error = RuntimeError(f"{self.owner_repr} stopped unexpectedly: {crash!r}")
            error.__cause__ = crash
            future._try_set_exception(error)

    #
    # Forked child
    #

    def _after_fork_in_child(self) -> None:
        # Only the forking thread exists here, so a lock held by a parent thread at the
        # fork would never be released: replace the locks instead of taking them.
        self._lock = threading.Lock()
        self._state = _State.FORKED
        self._ready = False
        self._final_stats = self._final_stats or self._scheduler.core.stats
        self._scheduler.pool.forget_threads()
        orphans = [job[0] for job in self._submits] + self._scheduler.orphans()
        self._submits.clear()
        for future in orphans:
            future._condition = threading.Condition()
            future._try_set_exception(RuntimeError(_FORK_MESSAGE.format(name=self.owner_repr)))


#
# Interpreter exit and fork
#

_live: weakref.WeakSet[LoopThread] = weakref.WeakSet()  # guarded by _global_lock
_global_lock = threading.Lock()
_interpreter_exiting = False  # guarded by _global_lock


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
