"""HandOff: the slots, and the lists that carry work between threads, under one lock.

Threading model (who calls what; LoopThread adds the thread body):

* any thread: ``submit_threadsafe``, ``cancel_job_threadsafe``, ``request_shutdown_threadsafe``,
  ``set_max_workers_threadsafe``, ``stats_threadsafe``;
* worker threads: ``_release_from_worker`` (a direct blocking job is done) and
  ``_post_done`` (a blocking job the loop runs is done);
* the loop thread: ``_release_on_loop`` and ``_settle``; LoopThread's ``_drain``.

Slots: ``_held`` counts the jobs holding one of the ``max_workers`` slots; the others
wait in ``_backlog`` (FIFO, both kinds). Whoever frees a slot hands it to the next job
under ``_lock``: a blocking job goes straight to a worker thread (from the submitting
thread, or the worker that freed the slot, as in ThreadPoolExecutor: no loop hop), a
job that needs the loop goes to ``_to_loop``. Work crosses into the loop thread only
through the lists guarded by ``_lock``: the first append of a batch wakes the loop with
one ``call_soon_threadsafe`` and ``_drain`` takes the whole batch. Results go back
through each job's concurrent future, which is thread-safe by itself. No user code and
no future callback runs while ``_lock`` is held.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import threading
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, Callable, Optional

from .._errors import BrokenLoopExecutor
from .._executor import CoroutineExecutor
from .._stats import ExecutorStats
from . import _process
from ._future import BridgeFuture
from ._scheduler import Job, Scheduler, ShutdownRequest
from ._workers import WorkerPool, WorkItem

__all__ = ["EXIT_MESSAGE", "FORK_MESSAGE", "KEEP", "SHUTDOWN_MESSAGE", "HandOff", "State"]

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"
FORK_MESSAGE = (
    "{name} belongs to the parent process: after os.fork() its loop thread does not exist "
    "in the child; create a new executor in the child"
)


class State(enum.Enum):
    STARTING = "starting"  # the loop runs the initializer; jobs wait in the backlog
    RUNNING = "running"  # accepting jobs
    SHUTTING_DOWN = "shutting down"  # no new jobs; accepted ones finish or are cancelled
    BROKEN = "broken"  # the initializer failed; the thread has stopped or is stopping
    CLOSED = "closed"  # the loop has finished every job and stopped; terminal
    FORKED = "forked"  # this is a forked child: the loop thread exists only in the parent


KEEP: Any = object()  # set_rate_threadsafe: leave this one as it is

_STARTING, _RUNNING, _SHUTTING_DOWN = State.STARTING, State.RUNNING, State.SHUTTING_DOWN
_GONE = (State.CLOSED, State.FORKED, State.BROKEN)


class HandOff:
    """The lock-guarded half of LoopThread: slots, backlog and hand-off lists."""

    # Provided by LoopThread:
    _stopped: concurrent.futures.Future[None]
    owner_repr: str
    loop_ident: Optional[int]
    _loop: Optional[asyncio.AbstractEventLoop]
    _pool: WorkerPool
    _scheduler: Scheduler
    _final_stats: Optional[ExecutorStats]

    def __init__(self, max_workers: int, blocking_on_loop: bool) -> None:
        # A core option that must govern blocking jobs too routes them through the loop.
        self._blocking_on_loop = blocking_on_loop  # guarded by _lock (set_rate_threadsafe)
        self._lock = threading.Lock()
        # Invariants: _wake_pending is True iff a _drain is scheduled that has not taken
        # the batch yet; it is only set while _ready. _held == len(_direct) + the jobs in
        # _to_loop + the scheduler's jobs and awaitable tails; _backlog is empty whenever
        # _held < max_workers (except while STARTING).
        self._state = _STARTING  # guarded by _lock
        self._ready = False  # guarded by _lock: the loop drains the hand-off
        self._wake_pending = False  # guarded by _lock
        self.max_workers = max_workers  # guarded by _lock
        self.max_per_second: Optional[float] = None  # guarded by _lock; set by LoopThread
        self.burst = 1  # guarded by _lock; set by LoopThread
        self._held = 0  # guarded by _lock
        self._backlog: collections.deque[Job] = collections.deque()  # guarded by _lock
        self._direct: set[BridgeFuture[Any]] = set()  # guarded by _lock
        self._to_loop: list[Job] = []  # guarded by _lock
        self._calls: list[Callable[[], object]] = []  # guarded by _lock
        self._done_items: list[WorkItem] = []  # guarded by _lock
        self._tails: list[WorkItem] = []  # guarded by _lock: direct jobs with an awaitable
        self._shutdown: Optional[ShutdownRequest] = None  # guarded by _lock
        self._shutdown_changed = False  # guarded by _lock
        self._broken: Optional[BaseException] = None  # guarded by _lock
        # Counts beyond the core's (guarded by _lock): see _stats().
        self._submitted = self._direct_ok = self._direct_failed = self._cancelled = 0

        self._released: list[BridgeFuture[Any]] = []  # loop thread only

    def _drain(self) -> None:
        raise NotImplementedError  # LoopThread: take the batch on the loop thread

    def is_loop_thread(self) -> bool:
        raise NotImplementedError  # LoopThread: compares Thread objects, not idents alone

    #
    # Slots (every method here is called with _lock held)
    #

    def _next_locked(self) -> Optional[Job]:
        """Give a free slot to the next live job in the backlog, if any."""
        if self._held >= self.max_workers or self._state is _STARTING:
            return None
        backlog = self._backlog
        while backlog:
            job = backlog.popleft()
            future = job[0]
            in_backlog, future._in_backlog = future._in_backlog, False
            if future._state == PENDING:
                self._held += 1
                return job
            if in_backlog:
                # Cancelled while it waited, and not counted yet: cancel() changes the
                # state before cancel_job_threadsafe counts it (under this lock).
                self._cancelled += 1
        if self._held == 0 and self._state is _SHUTTING_DOWN:
            self._wake_locked()  # the loop is waiting for the last job to finish
        return None

    def _route_locked(self, job: Job) -> Optional[WorkItem]:
        """A job got a slot: queue it for the loop, or return the item for a worker."""
        future, fn, args, kwargs, ctx, is_coroutine = job
        if is_coroutine or self._blocking_on_loop:
            self._to_loop.append(job)
            self._wake_locked()
            return None
        self._direct.add(future)
        return WorkItem(future, fn, args, kwargs, ctx)

    def _fill_locked(self) -> list[WorkItem]:
        """Give every free slot away; return the items to dispatch after unlocking."""
        items = []
        job = self._next_locked()
        while job is not None:
            item = self._route_locked(job)
            if item is not None:
                items.append(item)
            job = self._next_locked()
        return items

    def _wake_locked(self) -> None:
        if not self._wake_pending and self._ready:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]

    #
    # Any thread
    #

    def submit_threadsafe(self, job: Job) -> None:
        """Accept a job, or raise. A call that returns is always processed."""
        if not job[5] and not self._pool.started:
            # The first blocking job starts a worker now, in the submitting thread, even
            # when another thread is to hand the job to it later (after a slot frees, or
            # the initializer, or on the loop): that may happen during interpreter exit,
            # when Python 3.12 refuses to start threads (issue 16, item 11).
            self._pool.ensure_thread()
        # Hold _lock from the state check through the enqueue. Otherwise:
        #   submitter thread                     loop thread
        #   reads _state -> RUNNING
        #                                        shuts down: waits for _held == 0, closes
        #   appends the job                      (never started: the future hangs forever)
        item: Optional[WorkItem] = None
        with self._lock:
            state = self._state
            if state is _RUNNING or state is _STARTING:
                self._submitted += 1
                if self._held >= self.max_workers or self._backlog or state is _STARTING:
                    job[0]._in_backlog = True
                    self._backlog.append(job)
                    return
                self._held += 1
                if job[5] and self._ready:
                    # _route_locked and _wake_locked for a coroutine job, in-line: less to
                    # run before the loop may take the GIL this thread holds.
                    self._to_loop.append(job)
                    if not self._wake_pending:
                        self._wake_pending = True
                        self._loop.call_soon_threadsafe(self._drain)  # type: ignore[union-attr]
                    return
                item = self._route_locked(job)
                if item is None:
                    return
            else:
                broken = self._broken
        if item is not None:
            self._pool.submit(item)  # a direct blocking job: no loop hop, as the stdlib
            return
        raise self._refusal(state, broken)  # outside the lock: repr(broken) is user code

    def _refusal(self, state: State, broken: Optional[BaseException]) -> BaseException:
        if state is State.BROKEN:
            error = BrokenLoopExecutor(
                f"{self.owner_repr} is broken: its initializer raised {broken!r}"
            )
            error.__cause__ = broken
            return error
        if state is State.FORKED:
            return RuntimeError(FORK_MESSAGE.format(name=self.owner_repr))
        if _process.interpreter_exiting():
            return RuntimeError(EXIT_MESSAGE)
        return RuntimeError(SHUTDOWN_MESSAGE)

    def _call_soon_threadsafe(self, fn: Callable[[], object]) -> bool:
        """Run fn() on the loop soon. False (fn dropped) once the loop has stopped."""
        with self._lock:
            if self._state in _GONE:
                return False
            self._calls.append(fn)
            self._wake_locked()
            return True

    def cancel_job_threadsafe(self, future: BridgeFuture[Any]) -> None:
        """The future was cancelled: cancel its job on the loop, if the loop has it.

        A job still waiting for a slot or a worker is skipped when its turn comes. A job
        the loop is starting right now (``_job`` not yet set) is cancelled by
        Scheduler.start, which checks the future's state after setting ``_job``.

        A job waiting for a slot is counted as cancelled here, at once, so that the next
        ``stats`` says so; it stays in the backlog until its turn, then is skipped.
        """
        if future._in_backlog:
            with self._lock:
                if future._in_backlog:  # not taken from the backlog meanwhile
                    future._in_backlog = False
                    self._cancelled += 1
                    return
        if self.is_loop_thread():
            self._scheduler.cancel_job(future)
        elif future._job is not None:
            # Dropped once the loop has stopped: by then every job has finished.
            self._call_soon_threadsafe(lambda: self._scheduler.cancel_job(future))

    def set_max_workers_threadsafe(self, value: int, max_threads: int) -> None:
        core = self._scheduler.core

        def resize_core() -> None:
            core.max_workers = value

        with self._lock:
            self.max_workers = value
            self._pool.cap = max_threads
            self._pool.slots = value
            items = self._fill_locked()  # growing starts backlog jobs at once
            ready = self._ready
        for item in items:
            self._pool.submit(item)
        if not ready or not self._call_soon_threadsafe(resize_core):
            core.max_workers = value  # the loop is not running it (yet, or any more)

    def set_rate_threadsafe(self, rate: Any = KEEP, burst: Any = KEEP) -> None:
        """Set max_per_second and/or burst, each validated by the caller (KEEP: as is).

        Returns once the core has them, so every job submitted after this call starts
        under the new limit. The core is changed on the loop thread only.
        """
        applied: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:  # the pair is read and written as one step, whichever thread
            new_rate = self.max_per_second if rate is KEEP else rate
            if burst is KEEP:
                new_burst = self.burst
            elif burst is not None and new_rate is None:
                new_burst = None  # refused below, outside the lock
            else:
                new_burst = 1 if burst is None else burst
            if new_burst is not None:
                self.max_per_second, self.burst = new_rate, new_burst
                # A rate limit governs blocking jobs too: they then start from the loop.
                core = self._scheduler.core
                self._blocking_on_loop = new_rate is not None or core._job_timeout is not None
                on_loop = self._ready and not self.is_loop_thread()
                if on_loop:
                    self._calls.append(lambda: _apply_rate(core, new_rate, new_burst, applied))
                    self._wake_locked()
                else:
                    # The loop thread itself, or a core that is not bound to a running
                    # loop (not yet, or any more): no other thread touches it now.
                    core._set_rate(new_rate, new_burst)
        if new_burst is None:
            raise ValueError("burst requires max_per_second")
        if on_loop:
            # The call is dropped only if the loop stops first; then nothing starts again.
            concurrent.futures.wait([applied, self._stopped], return_when="FIRST_COMPLETED")

    def stats_threadsafe(self) -> ExecutorStats:
        """Counts of every job: the core's (jobs on the loop) plus the direct ones."""
        if self._final_stats is not None:
            return self._final_stats
        if self.is_loop_thread():
            return self._stats()
        result: concurrent.futures.Future[ExecutorStats] = concurrent.futures.Future()
        with self._lock:
            # Check and enqueue under one hold: once the loop stops draining (_ready goes
            # False before the thread ends), a call handed off would never run.
            ready = self._ready
            if ready:
                self._calls.append(lambda: result.set_result(self._stats()))
                self._wake_locked()
        if not ready:
            return self._final_stats or self._stats()  # no loop jobs can move now
        # The loop may still stop before it runs the call (the batch it was in is then
        # dropped): the thread's last step, after _final_stats is set, ends the wait.
        either: tuple[concurrent.futures.Future[Any], ...] = (result, self._stopped)
        concurrent.futures.wait(either, return_when=FIRST_COMPLETED)
        if result.done():
            return result.result()
        return self._final_stats or self._stats()

    def _stats(self) -> ExecutorStats:
        core = self._scheduler.core.stats
        with self._lock:
            submitted = self._submitted
            # Direct jobs cancelled while they waited for a worker thread: counted when
            # a worker skips them (at most max_workers to look at; not the hot path).
            skipped = sum(future._state == CANCELLED_AND_NOTIFIED for future in self._direct)
            running = core.running + len(self._direct) - skipped
            succeeded = core.succeeded + self._direct_ok
            failed = core.failed + self._direct_failed
            # Jobs cancelled before the loop could start them: Scheduler.unstarted.
            cancelled = core.cancelled + self._cancelled + self._scheduler.unstarted + skipped
        return ExecutorStats(
            submitted=submitted,
            queued=submitted - running - succeeded - failed - cancelled,
            running=running,
            succeeded=succeeded,
            failed=failed,
            cancelled=cancelled,
        )

    def request_shutdown_threadsafe(self, request: ShutdownRequest) -> int:
        """Stop accepting jobs; the loop finishes (or cancels) them, then the thread ends.

        Never waits for the loop thread: it records the request and wakes the loop. Jobs
        accepted before this call still run. A later call may only add cancellation
        (cancel_futures after a plain shutdown, or an exceptional exit). Jobs waiting for
        a slot, and direct jobs waiting for a worker thread, are cancelled here, before
        this returns; the few the loop holds that wait for the rate limiter or a worker
        thread are cancelled by the loop soon after.

        Returns how many waiting jobs this call cancelled.
        """
        cancelling = request.cancel_queued or request.cancel_running
        with self._lock:
            gone = self._state in _GONE
            if not gone:
                self._state = _SHUTTING_DOWN
                previous = self._shutdown
                if previous is not None:
                    request = ShutdownRequest(
                        previous.cancel_queued or cancelling,
                        previous.cancel_running or request.cancel_running,
                        previous.grace,
                        request.report,
                    )
                self._shutdown = request
                self._shutdown_changed = True
                unstarted = self._take_unstarted_locked() if cancelling else []
                self._wake_locked()
        if gone:
            if request.report is not None:
                request.report.set_result((0, 0, 0))  # the loop has finished every job
            return 0
        return sum(future.cancel() for future in unstarted if future._state == PENDING)

    def _take_unstarted_locked(self) -> list[BridgeFuture[Any]]:
        """The futures to cancel for cancel_futures that are not the loop's to cancel."""
        futures = []
        for job in self._backlog:
            future = job[0]
            if future._in_backlog:  # else cancel() has counted it already
                future._in_backlog = False
                self._cancelled += 1
            futures.append(future)
        self._backlog.clear()
        # Direct jobs waiting for a busy worker thread: the worker skips them and frees
        # their slot. One that got a thread when submitted counts as started: it runs.
        futures += [f for f in self._direct if f._queued and f._state == PENDING]
        if self._held == 0:
            self._wake_locked()
        return futures

    #
    # Worker threads
    #

    def _release_from_worker(self, item: WorkItem) -> Optional[WorkItem]:
        """A direct blocking job is done (or was skipped): free its slot or pass it on."""
        future = item.future
        with self._lock:
            if item.outcome is not None:
                # fn returned an awaitable: the loop awaits it, the job keeps its slot.
                self._tails.append(item)
                self._wake_locked()
                return None
            self._count_direct_locked(future)
            self._held -= 1
            job = self._next_locked()
            return None if job is None else self._route_locked(job)

    def _count_direct_locked(self, future: BridgeFuture[Any]) -> None:
        self._direct.discard(future)
        if future._state != FINISHED:
            self._cancelled += 1
        elif future._exception is None:
            self._direct_ok += 1
        else:
            self._direct_failed += 1

    def _post_done(self, item: WorkItem) -> None:
        with self._lock:
            if self._state is State.CLOSED or self._state is State.FORKED:
                return  # a skipped (cancelled) item after the last job: nobody waits
            self._done_items.append(item)
            self._wake_locked()

    #
    # Loop thread
    #

    def _release_on_loop(self, future: BridgeFuture[Any]) -> None:
        """A job the loop ran is done: free its slot now, or pass it on in _settle.

        A slot nobody waits for is freed at once when _lock is free: one loop turn less
        between a job's end and the loop's next sleep, which is what a caller waiting on
        one job at a time sees. Otherwise the release is batched, one _settle per loop
        turn: blocking on _lock (held by a submitting thread) or starting the next jobs
        from here, once per finished job, would cost every job of a busy executor that
        (under the GIL, blocking is a lock convoy).
        """
        released = self._released
        released.append(future)
        if len(released) > 1:
            return  # a _settle is scheduled already
        lock = self._lock
        if lock.acquire(blocking=False):
            try:
                if not self._backlog:
                    released.clear()
                    self._release_locked(future)
                    self._next_locked()  # starts nothing: the backlog is empty
                    return
            finally:
                lock.release()
        self._loop.call_soon(self._settle)  # type: ignore[union-attr]

    def _release_locked(self, future: BridgeFuture[Any]) -> None:
        if future in self._direct:
            self._count_direct_locked(future)  # a direct job's awaitable tail
        self._held -= 1

    def _settle(self) -> None:
        released, self._released = self._released, []
        starts: list[Job] = []
        items: list[WorkItem] = []
        with self._lock:
            direct = self._direct
            for future in released:
                self._release_locked(future)
            job = self._next_locked()
            while job is not None:
                future, fn, args, kwargs, ctx, is_coroutine = job
                if is_coroutine or self._blocking_on_loop:
                    starts.append(job)  # on the loop already: no need to hand it off
                else:
                    direct.add(future)
                    items.append(WorkItem(future, fn, args, kwargs, ctx))
                job = self._next_locked()
        # Hold no finished job's future (nor its result) while the next ones start: under
        # an eager task factory their first steps run inside start(), and one of them
        # may block the loop thread for long.
        del released
        start = self._scheduler.start
        for job in starts:
            start(job)
        for item in items:
            self._pool.submit(item)


def _apply_rate(
    core: CoroutineExecutor,
    rate: Optional[float],
    burst: int,
    applied: concurrent.futures.Future[None],
) -> None:
    """On the loop thread: give the core its new start-rate limit."""
    try:
        core._set_rate(rate, burst)
    finally:
        applied.set_result(None)
