"""HandOff: the bridge's one lock, and everything it guards on a job's way between threads.

Who calls what. Any thread: ``submit_threadsafe``, ``cancel_job_threadsafe`` and
``notify_waiters_threadsafe`` (in ``_withdraw``),
``request_shutdown_threadsafe``, ``set_max_workers_threadsafe``, ``set_rate``,
``post_if_draining``, ``counts``. Worker threads: ``_release_from_worker`` (a direct
blocking job is done), ``_post_done`` (a blocking job the loop runs is done). The loop
thread: ``listen``, ``open``, ``take_batch``, ``idle_at_shutdown``, ``stop_draining``,
``fail_backlog``, ``blocking_calls``, the Scheduler's ``_release_nowait`` and
``_release_all``; once the loop has stopped, ``_closing.close``.

``_slots`` counts the jobs holding one of the ``max_workers`` slots; the others wait in
its backlog (FIFO, both kinds; per key with ``key=``). Whoever frees a slot hands it to
the next job under ``_lock``: a blocking job goes straight to a worker thread, a job that
needs the loop goes to ``_mailbox``, whose first post of a batch wakes the loop (one
``call_soon_threadsafe`` of the drain given to ``open``, which takes it with
``take_batch``). No user code and no future callback runs while ``_lock`` is held, but
for the ``__hash__`` and ``__eq__`` of a job's key (``key=``; see _keyed_slots). The
releases and the grants are HandOff's base, SlotGrants (``_slot_grants``).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from typing import Any, Callable, Optional, Union

from .._key_limits import report_key_lost
from .._stats import ExecutorStats
from ._accept import accept_locked
from ._breaking import fail_backlog
from ._future import BridgeFuture
from ._job import Job
from ._keyed_slots import key_of, make_slots
from ._lifecycle import ACCEPTING, GONE, INITIALIZER_FAILED, BridgeState, refusal
from ._mailbox import Batch, Mailbox
from ._options import CoreOptions, ExitReport, ShutdownRequest
from ._retries import Retries
from ._scheduler import Scheduler
from ._slot_grants import SlotGrants
from ._withdraw import cancel_job, notify_cancelled
from ._workers import WorkerPool, WorkItem

__all__ = ["HandOff"]


class HandOff(SlotGrants):
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
        # Errors of keys that broke as their jobs ended, which no loop drained to report
        # (see _key_lost_locked); guarded by _lock.
        self.keys_lost: list[Exception] = []
        # guarded by _lock:
        self._slots = make_slots(core, self.scheduler.tuner, self._key_lost_locked)
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
        core = self.scheduler.core._counts()  # unchecked: the caller may not be the loop thread
        jobs = self.scheduler.jobs()
        # Jobs whose cancel() returned True, which the core has not ended yet.
        early = [f._job for f in jobs if f._state == CANCELLED_AND_NOTIFIED]
        unbegun = sum(map(_unbegun, jobs))
        # Jobs cancelled before the loop could start them, or failed as it could not:
        # Scheduler.unstarted, failed_to_start. The lock on one line: see _accept.
        unstarted, failed = self.scheduler.unstarted, self.scheduler.failed_to_start
        with self._lock: return self._slots.counts(core, unstarted, early, failed=failed, unbegun=unbegun)  # noqa: E501, E701

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
                request.send_report(ExitReport())  # the loop has finished every job
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

    def _key_lost_locked(self, exc: Exception) -> None:
        """With the lock held (any thread): a job's key raised ``exc`` as its room was
        given back (KeyedSlots._lose_room); the job keeps its own outcome. The error goes
        to the loop's exception handler, as the core reports such an error when its
        policy does not raise it, and the bridge's core never raises a job's error: it
        fails only that job's future (stdlib). Posted, as no user code runs under the
        lock, and the loop's handler runs on the loop. If no loop drains (it could not
        run), close() reports it."""
        if not self._post_locked(lambda: report_key_lost(asyncio.get_running_loop(), exc)):
            self.keys_lost.append(exc)

    #
    # Worker threads
    #

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

    def idle_at_shutdown(self) -> bool:
        """At shutdown: True when no job holds a slot or pauses between two attempts.
        Then a job that still waits for a slot will never get one, as what holds it back
        is its key's room, lost by a job whose key broke (KeyedSlots._lose_room), or
        taken by one whose key changed: it is cancelled here, as a waiting job is by
        ``shutdown(cancel_futures=True)``. (Left waiting, it was failed with "stopped
        unexpectedly" once the loop had stopped.)"""
        stranded: list[BridgeFuture[Any]] = []
        with self._lock:
            if self._slots.busy:
                return False
            if self._slots.waiting():
                self._slots.take_unstarted(stranded)
        for future in stranded:
            future.cancel()  # counted as cancelled already (take_unstarted)
        return True

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


def _unbegun(future: BridgeFuture[Any]) -> bool:
    """Whether the core counts the job as running though it has not begun: a blocking
    job that waits for a worker thread (job_timeout, max_per_second: slots outnumber
    threads with max_workers=None), or a task whose first step is still to come. Such a
    job counts as queued, as ``future.running()`` says (a job the core's rate limit
    holds, ``task`` None, the core counts as queued itself)."""
    if future._state != PENDING or future._started:
        return False
    job = future._job
    return isinstance(job, asyncio.Task) or getattr(job, "task", None) is not None
