"""HandOff: the bridge's one lock, and everything it guards on a job's way between threads.

Who calls what. Any thread: ``submit_threadsafe``, ``cancel_job_threadsafe`` and
``notify_waiters_threadsafe`` (in ``_withdraw``),
``request_shutdown_threadsafe``, ``set_max_workers_threadsafe``, ``set_rate``,
``post_if_draining``, ``counts``. Worker threads: ``_release_from_worker`` (a direct
blocking job is done), ``_post_done`` (a blocking job the loop runs is done). The loop
thread: ``listen``, ``open``, ``take_batch``, ``is_idle``, ``stop_draining``, ``fail_backlog``,
``blocking_calls``, the Scheduler's ``_release_nowait`` and ``_release_all``; once the
loop has stopped, ``_closing.close``.

``_slots`` counts the jobs holding one of the ``max_workers`` slots; the others wait in
its backlog (FIFO, both kinds; per key with ``key=``). Whoever frees a slot hands it to
the next job under ``_lock``: a blocking job goes straight to a worker thread, a job that
needs the loop goes to ``_mailbox``, whose first post of a batch wakes the loop (one
``call_soon_threadsafe`` of the drain given to ``open``, which takes it with
``take_batch``). No user code and no future callback runs while ``_lock`` is held, but
for the ``__hash__`` and ``__eq__`` of a job's key (``key=``; see _keyed_slots).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from typing import Any, Callable, Optional, Union

from .._stats import ExecutorStats
from ._accept import accept_locked
from ._breaking import fail_backlog, fail_tail, refuse_tail_locked
from ._future import BridgeFuture
from ._job import Job
from ._keyed_slots import key_of, make_slots
from ._lifecycle import ACCEPTING, GONE, INITIALIZER_FAILED, BridgeState, refusal
from ._mailbox import Batch, Mailbox
from ._options import CoreOptions, ShutdownRequest
from ._retries import Retries
from ._scheduler import Scheduler
from ._withdraw import cancel_job, notify_cancelled
from ._workers import WorkerPool, WorkItem

__all__ = ["HandOff"]


class HandOff:
    """The lock-guarded part of a bridge: lifecycle, slots, and the batch for the loop.

    Owns the Slots, the WorkerPool (direct blocking jobs) and the Scheduler (the jobs the
    loop runs, on the core): every job it gives a slot goes to one of them, and both give
    the slot back here. LoopThread owns the HandOff and drives it from the loop thread.
    """

    def __init__(
        self,
        name: str,
        *,
        thread: threading.Thread,
        max_threads: int,
        core: CoreOptions,
    ) -> None:
        self.owner_repr = f"<ThreadedLoopExecutor {name}>"
        self._thread = thread  # the loop thread
        self.pool = WorkerPool(
            name, max_threads, self._release_from_worker, self._post_done, core.retry
        )
        self.pool.slots = core.max_workers
        # Made here, in the caller's thread, so bad options raise from the constructor.
        self.scheduler = Scheduler(
            self.pool, release_nowait=self._release_nowait, release_all=self._release_all,
            options=core,
        )
        self._lock = threading.Lock()
        self._state = BridgeState.STARTING  # guarded by _lock
        self._key, self._max_per_key = core.key, core.max_per_key  # key=: see _keyed_slots
        self._slots = make_slots(core, self.scheduler.tuner)  # guarded by _lock
        self._mailbox = Mailbox()  # guarded by _lock
        # A core option that must govern blocking jobs too routes them through the loop
        # (guarded by _lock; set_rate changes it).
        self._blocking_on_loop = core.max_per_second is not None or core.job_timeout is not None
        self._broken: Optional[BaseException] = None  # guarded by _lock
        self._broken_why = INITIALIZER_FAILED  # guarded by _lock; with _broken
        self.scheduler.retries = Retries(
            core.retry, self._lock, self._slots, route=self._to_worker_locked,
            grant=self._grant_locked, start=self.scheduler.start, dispatch=self.pool.submit,
        )

    @property
    def state(self) -> BridgeState:
        return self._state

    @property
    def max_workers(self) -> int:
        return self._slots.max_workers

    def is_loop_thread(self) -> bool:
        # The ident is the cheap test; the Thread object decides. Once the loop thread has
        # ended, a new thread may be given its ident (a later shutdown(wait=True) from it
        # would be refused), but never its Thread object.
        thread = self._thread
        return threading.get_ident() == thread.ident and threading.current_thread() is thread

    def is_worker_thread(self) -> bool:
        return self.pool.runs_current_thread()

    #
    # Slots (every method here is called with _lock held)
    #

    def _next_locked(self) -> Optional[Job]:
        """Give a free slot to the next live job in the backlog, if any."""
        job = self._slots.next_job()
        if job is None and self._slots.held == 0 and self._state is BridgeState.SHUTTING_DOWN:
            self._mailbox.wake()  # the loop is waiting for the last job to finish
        return job

    def _to_worker_locked(self, job: Job) -> Optional[WorkItem]:
        """A job got a slot: the item for a worker thread, or None if the loop runs it."""
        if job.coroutine_fn or self._blocking_on_loop:
            return None
        self._slots.direct.add(job.future)
        return WorkItem(job.future, job.fn, job.args, job.kwargs, job.ctx)

    def _route_locked(self, job: Job) -> Optional[WorkItem]:
        """A job got a slot: queue it for the loop, or return the item for a worker."""
        item = self._to_worker_locked(job)
        if item is None:
            self._mailbox.start(job)
        return item

    def _grant_locked(self) -> tuple[list[Job], list[WorkItem]]:
        """Give every free slot away: return the jobs for the loop and the worker items."""
        to_start: list[Job] = []
        items: list[WorkItem] = []
        job = self._next_locked()
        while job is not None:
            item = self._to_worker_locked(job)
            if item is None:
                to_start.append(job)
            else:
                items.append(item)
            job = self._next_locked()
        return to_start, items

    def _fill_locked(self) -> list[WorkItem]:
        """Give every free slot away; return the items to dispatch after unlocking."""
        to_start, items = self._grant_locked()
        for job in to_start:
            self._mailbox.start(job)
        return items

    #
    # Any thread
    #

    def submit_threadsafe(self, job: Job) -> None:
        """Accept a job, or raise. A call that returns is always processed; one a Ctrl-C cut
        short changed nothing (undo_submit) or handed the job off whole: it runs."""
        if not job.coroutine_fn and not self.pool.started:
            # The first blocking job starts a worker now, in the submitting thread, even
            # when another thread is to hand the job to it later: that may happen during
            # interpreter exit, when Python 3.12 refuses to start threads (issue 16, #11).
            self.pool.ensure_thread()
        key = None if self._key is None else key_of(self._key, self._max_per_key, job)
        # Hold _lock from the state check through the enqueue. Otherwise:
        #   submitter thread                     loop thread
        #   reads _state -> RUNNING
        #                                        shuts down: waits for no slot held, closes
        #   appends the job                      (never started: the future hangs forever)
        accepted: Union[WorkItem, BridgeState, None] = None
        try:
            with self._lock: accepted = accept_locked(self, job, key)  # noqa: E701 (_accept)
            if accepted is None or isinstance(accepted, WorkItem):
                if accepted is not None:  # a direct blocking job: no loop hop, as the stdlib
                    self.pool.wake_worker(accepted)
                return
        except BaseException:
            if isinstance(accepted, WorkItem):  # queued: see that a worker takes it
                self.pool.wake_worker(accepted)
            raise
        # Outside the lock: repr is user code. _broken is set with the state, before it.
        raise refusal(accepted, self._broken, self.owner_repr, self._broken_why)

    # The future was cancelled: cancel its job; tell its waiters (see _withdraw).
    cancel_job_threadsafe = cancel_job
    notify_waiters_threadsafe = notify_cancelled

    def set_max_workers_threadsafe(self, value: int, max_threads: int) -> None:
        core = self.scheduler.core

        def resize_core() -> None:
            core.max_workers = value

        # The lock on one line: see _accept.
        with self._lock: items = self._resize_locked(value, max_threads)  # noqa: E701
        for item in items:
            self.pool.submit(item)
        if not self.post_if_draining(resize_core) and self._state in ACCEPTING:
            core.max_workers = value  # no loop runs the core yet; after, its jobs are over

    def _resize_locked(self, value: int, max_threads: int) -> list[WorkItem]:
        self._slots.tuner = self.scheduler.tuner = None  # an Adaptive limit: now fixed
        self._slots.max_workers = value
        self.pool.resize(max_threads, value)  # growing starts threads for jobs waiting
        return self._fill_locked()  # growing starts backlog jobs at once

    def set_rate(self, apply: Callable[[], object], *, blocking_on_loop: bool) -> None:
        """Any thread: ``apply`` the core's new rate limit, which ``blocking_on_loop`` says
        governs blocking jobs too (they then start from the loop). Posted to a draining
        loop from other threads; else run here, under the lock: on the loop thread, or on
        a core no loop runs (not yet, or any more), which no other thread touches now."""
        # The lock on one line: see _accept.
        with self._lock: self._set_rate_locked(apply, blocking_on_loop)  # noqa: E701

    def _set_rate_locked(self, apply: Callable[[], object], blocking_on_loop: bool) -> None:
        self._blocking_on_loop = blocking_on_loop
        if self._mailbox.draining and not self.is_loop_thread():
            self._mailbox.call(apply)
        else:
            apply()

    def post_if_draining(self, fn: Callable[[], object]) -> bool:
        """Any thread: run fn() on the loop soon. False (not posted): the loop drains not.
        Checked and posted under one hold: once the loop stops draining, it never runs."""
        # The lock on one line: see _accept.
        with self._lock: return self._post_locked(fn)  # noqa: E701

    def _post_locked(self, fn: Callable[[], object]) -> bool:
        if self._mailbox.draining:
            self._mailbox.call(fn)
            return True
        return False

    def counts(self) -> ExecutorStats:
        """Counts of every job: the core's (jobs on the loop) plus the direct ones."""
        core = self.scheduler.core.stats
        # Jobs whose cancel() returned True, which the core has not ended yet.
        early = [f._job for f in self.scheduler.jobs() if f._state == CANCELLED_AND_NOTIFIED]
        # Jobs cancelled before the loop could start them, or failed as it could not:
        # Scheduler.unstarted, failed_to_start. The lock on one line: see _accept.
        unstarted, failed = self.scheduler.unstarted, self.scheduler.failed_to_start
        with self._lock: return self._slots.counts(core, unstarted, early, failed=failed)  # noqa: E701

    def request_shutdown_threadsafe(self, request: ShutdownRequest) -> int:
        """Stop accepting jobs; the loop finishes (or cancels) them, then the thread ends.

        Never waits for the loop thread: it records the request and wakes the loop. Jobs
        accepted before this call still run. A later call may only add cancellation
        (cancel_futures after a plain shutdown, or an exceptional exit), or a grace
        period that ends sooner (see LoopRun._start_grace). Jobs waiting for a slot,
        and direct jobs waiting for a worker thread, are cancelled here, before this
        returns; the few the loop holds that wait for the rate limiter or a worker thread
        are cancelled by the loop soon after.

        Returns how many waiting jobs this call cancelled.
        """
        unstarted: list[BridgeFuture[Any]] = []  # filled under the lock, whole
        try:
            # The lock on one line: see _accept.
            with self._lock: gone = self._shut_down_locked(request, unstarted)  # noqa: E701
            if gone:
                request.send_report((0, 0, 0))  # the loop has finished every job
                return 0
            return sum(future.cancel() for future in unstarted if future._state == PENDING)
        except BaseException:
            # Cut short (Ctrl-C): the jobs taken out of the backlog are cancelled all the
            # same, or their futures would stay pending for ever.
            for future in unstarted:
                future.cancel()
            raise

    def _shut_down_locked(
        self, request: ShutdownRequest, unstarted: list[BridgeFuture[Any]]
    ) -> bool:
        """Record the request; add to ``unstarted`` the waiting jobs it takes. True: the
        bridge is gone (nothing to take)."""
        if self._state in GONE:
            return True
        self._state = BridgeState.SHUTTING_DOWN
        self._mailbox.request_shutdown(request)
        if request.cancel_queued or request.cancel_running:
            self._slots.take_unstarted(unstarted)
        return False

    #
    # Worker threads
    #

    def _release_from_worker(self, item: WorkItem) -> Optional[WorkItem]:
        """A direct blocking job is done (or was skipped): free its slot or pass it on.
        Returns the item of a blocking job given the slot, for the caller (a worker) to
        run; the jobs an Adaptive limit's increase lets start too are dispatched here."""
        tuner = self._slots.tuner  # read once: set_max_workers may drop it meanwhile
        if item.outcome is None and tuner is not None:  # outside the lock
            tuner.finished_threadsafe(item.future)
        more: Sequence[WorkItem] = ()  # (a constant: the fixed limit's path allocates none)
        with self._lock:
            broken = item.outcome is not None and self._state is BridgeState.BROKEN
            if broken:
                refuse_tail_locked(self, item)  # no loop to await it (see _breaking)
            elif item.outcome is not None:
                # fn returned an awaitable: the loop awaits it, the job keeps its slot.
                self._mailbox.tail(item)
                return None
            else:
                self._slots.release(item.future)
            job = self._next_locked()
            passed_on = None if job is None else self._route_locked(job)
            slots = self._slots
            if tuner is not None and job is not None and slots.held < slots.max_workers:
                # The release read the limit this job's end may have raised: the slots
                # it added go to waiting jobs now too ("an increase starts waiting jobs
                # at once"), as the loop's _release_all does. Passed on one at a time,
                # they ran one at a time under any limit, and the limit, never half in
                # use, stopped growing.
                more = self._fill_locked()
        if broken:
            fail_tail(self, item)
        for extra in more:  # an idle worker takes each, or a new thread up to the cap
            self.pool.submit(extra)
        return passed_on

    def _post_done(self, item: WorkItem) -> None:
        with self._lock:
            if self._state is BridgeState.CLOSED or self._state is BridgeState.FORKED:
                return  # a skipped (cancelled) item after the last job: nobody waits
            self._mailbox.work_done(item)

    #
    # Loop thread
    #

    def open(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], object]) -> None:
        """Start accepting and draining: the jobs held back while STARTING get slots now."""
        with self._lock:
            if self._state is BridgeState.STARTING:
                self._state = BridgeState.RUNNING
            self._mailbox.open(loop, drain)
            self._slots.paused = False
            items = self._fill_locked()
        for item in items:
            self.pool.submit(item)

    def listen(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], object]) -> None:
        """Drain while an async initializer runs, so a shutdown request reaches the loop
        then (see LoopRun._initialize); the slots stay paused: no job starts before open."""
        with self._lock:
            self._mailbox.open(loop, drain)

    def take_batch(self) -> Batch:
        """Take everything handed off since the last drain."""
        with self._lock:
            return self._mailbox.take()

    def is_idle(self) -> bool:
        """No job holds a slot or pauses between two attempts."""
        with self._lock:
            return not self._slots.busy

    def stop_draining(self) -> None:
        """The loop is about to close: wake-ups from now on must not target it."""
        with self._lock:
            self._mailbox.stop_draining()

    # The initializer raised, or the loop could not run: fail the jobs (see _breaking).
    fail_backlog = fail_backlog

    def blocking_calls(self) -> int:
        """How many blocking calls worker threads are running now."""
        with self._lock:
            direct = sum(future._state == RUNNING for future in self._slots.direct)
        return direct + sum(future._state == RUNNING for future in self.scheduler.jobs())

    def _release_nowait(self, future: BridgeFuture[Any]) -> bool:
        """Free the slot of a job the loop ran, if that needs no waiting: False when the
        lock is busy or jobs wait for the slot (then the Scheduler calls _release_all)."""
        lock = self._lock
        if not lock.acquire(blocking=False):
            return False
        try:
            if self._slots.backlog or self._slots.keyed:
                return False
            self._slots.release(future)
            self._next_locked()  # starts nothing: the backlog is empty
            return True
        finally:
            lock.release()

    def _release_all(self, futures: list[BridgeFuture[Any]]) -> tuple[list[Job], list[WorkItem]]:
        """Free the slots of jobs the loop ran; return the jobs given them, in two lists:
        those to start on the loop (where the caller is) and the items for workers."""
        with self._lock:
            for future in futures:
                self._slots.release(future)
            # The jobs for the loop are started by the caller, on the loop already: no
            # need to hand them off through the mailbox.
            return self._grant_locked()
