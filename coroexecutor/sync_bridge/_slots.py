"""Slots: the bridge's ``max_workers`` slots, the FIFO backlog waiting for one, the counts."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, Callable, Optional

from .._stats import ExecutorStats
from ._future import BridgeFuture
from ._job import Job
from ._tuning import BridgeTuner

__all__ = ["Slots"]


class Slots:
    """Who holds which of the ``max_workers`` slots, who waits for one, and the counts.

    Not locked by itself: every field and method is guarded by (used with) the owning
    HandOff's lock, the bridge's one lock. It calls nothing outside this module but
    Attempts.drop (see _drop_call); the HandOff decides where a job that got a slot goes
    (a worker thread or the loop).

    Invariants: ``held`` counts the jobs holding a slot: the direct blocking jobs in
    ``direct``, plus the jobs on their way to (or run by) the loop. ``backlog`` is empty
    whenever ``held < max_workers``, except while ``paused`` (the initializer runs).
    The jobs in ``pausing`` (between two attempts, retry=) hold no slot.
    """

    def __init__(self, max_workers: int, tuner: Optional[BridgeTuner] = None) -> None:
        self.keyed = False  # KeyedSlots (key=): jobs wait per key (see _keyed_slots)
        # max_workers=Adaptive: the limit follows the tuner (the core and the pool are
        # sized for Adaptive.max); see BridgeTuner.
        self.tuner = tuner
        self.max_workers = max_workers if tuner is None else tuner.limit
        self.held = 0
        self.paused = True  # no job gets a slot until the loop is open
        self.backlog: collections.deque[Job] = collections.deque()
        self.direct: set[BridgeFuture[Any]] = set()  # running in (or queued for) a worker
        # Counts beyond the core's: see counts().
        self.submitted = self.direct_ok = self.direct_failed = self.cancelled = 0
        self.refused = 0  # failed in the backlog: the initializer broke the executor
        # retry=: jobs between two attempts (no slot, no thread), the attempts that failed
        # and were given another try (see ExecutorStats.retried), and those the core
        # counted as a success or a failure (see pause()).
        self.pausing: set[BridgeFuture[Any]] = set()
        self.cancelling = False  # a shutdown cancelled what waits: no job may pause now
        self.retried = self.core_ok_retried = self.core_failed_retried = 0

    @property
    def busy(self) -> bool:
        """A job holds a slot, or pauses between two attempts."""
        return self.held > 0 or bool(self.pausing)

    def take_nowait(self) -> bool:
        """Give a new job a slot at once: True if one is free and no job waits for one."""
        if self.held < self.max_workers and not self.backlog and not self.paused:
            self.held += 1
            return True
        return False

    def undo_submit(
        self, job: Job, submitted: int, held: int, unstart: Callable[[Job], None]
    ) -> None:
        """Put back what a ``submit()`` that raised midway had changed (a KeyboardInterrupt
        can be raised at any call in the main thread): ``submitted`` and ``held`` are the
        counts it found, under the same hold of the lock; ``unstart`` takes the job back
        from the mailbox. Looks at what it finds, so it undoes any prefix of the steps: the
        count, the slot, the backlog entry, the post to the loop."""
        future = job.future
        unstart(job)
        self.submitted = submitted
        if self.held != held:  # it took a slot
            self.held = held
            self.direct.discard(future)
            if self.tuner is not None:
                self.tuner.release(future)  # forgets its start, if it was recorded
            self.cancelled_waiting(future)  # KeyedSlots: its key's room, if it took it
        elif future._in_backlog:
            future._in_backlog = False
            backlog = self.backlog
            if backlog and backlog[-1] is job:
                backlog.pop()
            self.withdraw_waiting(future)

    def withdraw_waiting(self, future: BridgeFuture[Any]) -> None:
        """KeyedSlots: take a job that never was accepted out of its key's line."""

    def queue(self, job: Job) -> None:
        """The job waits in the backlog for a slot (FIFO)."""
        job.future._in_backlog = True
        self.backlog.append(job)

    def next_job(self) -> Optional[Job]:
        """Give a free slot to the next live job in the backlog, if any."""
        if self.held >= self.max_workers or self.paused:
            return None
        backlog = self.backlog
        while backlog:
            job = backlog.popleft()
            future = job.future
            in_backlog, future._in_backlog = future._in_backlog, False
            if future._state == PENDING:
                self.held += 1
                if self.tuner is not None:
                    self.tuner.started(future)
                return job
            if in_backlog:
                # Cancelled while it waited, and not counted yet: cancel() changes the
                # state before HandOff.cancel_job_threadsafe counts it (under the lock).
                self.cancelled += 1
                self.cancelled_waiting(future)
                _drop_call(future)
        return None

    def cancelled_waiting(self, future: BridgeFuture[Any]) -> None:
        """A job cancelled while it waited in the backlog leaves it (KeyedSlots: a retry
        waiting after its pause gives its key's room back)."""

    def release(self, future: BridgeFuture[Any]) -> None:
        """A job holding a slot is done (or was given back unstarted): free the slot."""
        if future in self.direct:
            self.count_direct(future)  # a direct job's awaitable tail
        self.held -= 1
        if self.tuner is not None:  # the limit the finished jobs have moved it to
            self.max_workers = self.tuner.release(future)

    def count_direct(self, future: BridgeFuture[Any]) -> None:
        """A direct blocking job is over: count its outcome (the slot is freed apart)."""
        self.direct.discard(future)
        if future._state != FINISHED:
            self.cancelled += 1
        elif future._exception is None:
            self.direct_ok += 1
        else:
            self.direct_failed += 1

    def pause(self, future: BridgeFuture[Any], core_failed: Optional[bool]) -> bool:
        """A job's failed attempt is retried: free its slot. True when the job now pauses;
        False when it was cancelled meanwhile, or a shutdown has cancelled the jobs that
        wait (or its map was closed: ``_last_attempt``) since the policy was asked, so it
        is cancelled as a pausing job would be (counted here; the caller cancels it). Either
        way the policy gave the attempt another try, and the retry counts, as it does for
        a job cancelled in its pause (the core's rule: ExecutorStats.retried). (An attempt
        that fails after those is not retried: Retries.stopped.)

        ``core_failed``: the attempt was a task of the core, which counted it as a failure
        (True: the job_timeout) or a success (False: its wrapper returned RETRIED); None:
        a direct blocking job, counted by nobody yet."""
        if core_failed is None:
            self.direct.discard(future)
        elif core_failed:
            self.core_failed_retried += 1
        else:
            self.core_ok_retried += 1
        self.held -= 1
        if self.tuner is not None:
            self.max_workers = self.tuner.release(future)
        self.retried += 1
        if self.cancelling or future._last_attempt or not future._back_to_pending():
            self.cancelled += 1
            return False
        self.pausing.add(future)
        return True

    def count_cancelled(self, *, core_failed: bool, retried: bool) -> None:
        """A job the core counted as a failure (``core_failed``: its job_timeout's
        JobTimeoutError) or a success ended with its future cancelled: it counts as
        cancelled, as its future says (see Retries.count_cancelled). ``retried``: that
        success was a failed attempt the policy retried (RETRIED), and its retry counts,
        as it does for a job cancelled in its pause (see pause)."""
        if core_failed:
            self.core_failed_retried += 1
        else:
            self.core_ok_retried += 1
        if retried:
            self.retried += 1
        self.cancelled += 1

    def resume(self, job: Job) -> bool:
        """A pause is over: True when the job takes a free slot now. Otherwise it waits in
        the backlog, ahead of every job that has not started yet (behind earlier retries),
        or it was cancelled in its pause and counted then (withdraw_pausing)."""
        future = job.future
        if future not in self.pausing:
            return False
        self.pausing.discard(future)
        if self.held < self.max_workers and not self.paused:
            self.held += 1
            if self.tuner is not None:
                self.tuner.started(future)
            return True
        backlog = self.backlog
        ahead = 0
        while ahead < len(backlog) and backlog[ahead].future._attempts is not None:
            ahead += 1
        future._in_backlog = True
        backlog.insert(ahead, job)
        return False

    def withdraw_pausing(self, future: BridgeFuture[Any]) -> bool:
        """cancel() of a job in its pause: count it now. False if it is not pausing."""
        if future not in self.pausing:
            return False
        cancelled = self.cancelled
        try:
            self.pausing.discard(future)
            self.cancelled = cancelled + 1
            _drop_call(future)
        except BaseException:
            # A KeyboardInterrupt as discard() returned: out of pausing, so counted.
            self.cancelled = cancelled + (future not in self.pausing)
            raise
        return True

    def withdraw(self, future: BridgeFuture[Any]) -> bool:
        """cancel() of a job still in the backlog: count it now. False if it left already."""
        if not future._in_backlog:
            return False
        # Out and counted in one step (one line, no call): a Ctrl-C leaves both or neither.
        future._in_backlog, self.cancelled = False, self.cancelled + 1
        self.cancelled_waiting(future)
        _drop_call(future)
        return True

    def drain(self) -> list[Job]:
        """Empty the backlog and return its jobs, for the caller to fail or cancel."""
        jobs = list(self.backlog)
        self.backlog.clear()
        return jobs

    def fail_backlog(self) -> list[Job]:
        """The initializer failed: empty the backlog. Its live jobs count as failed and are
        returned for the caller to fail; those cancelled meanwhile count as cancelled."""
        failed = []
        for job in self.drain():
            future = job.future
            if not future._in_backlog:
                continue  # counted already (withdraw)
            future._in_backlog = False
            if future._state == PENDING:
                self.refused += 1
                failed.append(job)
            else:
                self.cancelled += 1
        return failed

    def take_unstarted(self, futures: list[BridgeFuture[Any]]) -> None:
        """Add to ``futures`` those shutdown(cancel_futures=True) cancels that are not the
        loop's, for the caller to cancel. From now on a job whose attempt fails is
        cancelled rather than paused. Added in one step, before the backlog is emptied: a
        Ctrl-C leaves each job in the list (cancel() withdraws it) or in the backlog."""
        self.cancelling = True
        # Direct jobs waiting for a busy worker thread: the worker skips them and frees
        # their slot. One that got a thread when submitted counts as started: it runs.
        # So does one whose call has returned an awaitable (PENDING again, and started).
        direct = [f for f in self.direct if f._queued and f._state == PENDING and not f._started]
        futures += self.waiting() + direct + list(self.pausing)  # pausing: see cancel()
        for job in self.drain():
            self.withdraw(job.future)  # counted as cancelled now, unless cancel() did already

    def waiting(self) -> list[BridgeFuture[Any]]:
        """The futures of the jobs waiting for a slot."""
        return [job.future for job in self.backlog]

    def counts(
        self,
        core: ExecutorStats,
        unstarted: int,
        early: Sequence[object] = (),
        *,
        failed: int = 0,
        unbegun: int = 0,
    ) -> ExecutorStats:
        """Every job's count: the core's (``unstarted``: given back before reaching it,
        cancelled; ``failed``: given back as the loop could not make its task) plus the
        direct jobs and the ones cancelled while waiting here. ``early``: the core's tasks
        (or queued futures) of jobs whose cancel() returned True, which count as cancelled
        from then on, though the core counts them only once they end. ``unbegun``: the
        core's jobs it counts as running that have not begun (see _handoff._unbegun),
        which count as queued."""
        submitted = self.submitted
        # Direct jobs cancelled while they waited for a worker thread (counted when a
        # worker skips them), and direct jobs whose worker has set their future but not
        # yet given their slot back (counted then): count them by their future's state,
        # as whoever that future woke may read stats now. A direct job whose call has not
        # begun (it holds a slot and waits for a worker thread: max_workers=None has more
        # slots than threads) is queued, as future.running() says, and as a job that
        # holds a slot and waits for a start token is. At most max_workers to look at;
        # not the hot path.
        skipped = ok = raised = 0
        for future in self.direct:
            state = future._state
            if state == PENDING:
                if not future._started:  # (started: its call returned an awaitable)
                    unbegun += 1
            elif state == CANCELLED_AND_NOTIFIED:
                skipped += 1
            elif state == FINISHED:
                if future._exception is None:
                    ok += 1
                else:
                    raised += 1
        early_queued = sum(getattr(job, "task", 0) is None for job in early)  # not started
        early_running = len(early) - early_queued
        running = (
            core.running - early_running + len(self.direct) - skipped - ok - raised - unbegun
        )
        # The core counted each attempt it ran; only a job's last one is its outcome.
        succeeded = core.succeeded - self.core_ok_retried + self.direct_ok + ok
        failed += (
            core.failed - self.core_failed_retried + self.direct_failed + self.refused + raised
        )
        cancelled = (
            core.cancelled + self.cancelled + unstarted + skipped + early_running + early_queued
        )
        return ExecutorStats(
            submitted=submitted,
            queued=submitted - running - succeeded - failed - cancelled,
            running=running,
            succeeded=succeeded,
            failed=failed,
            cancelled=cancelled,
            retried=self.retried,
            max_workers=self.max_workers,
        )


def _drop_call(future: BridgeFuture[Any]) -> None:
    """A job cancelled while it waits, for a slot or for its next attempt, is over: if it
    was retried, its Attempts let go of its call and context (see _retries). The Job
    that waits (in the backlog, or in the pause's timer) holds them still, so nothing is
    freed here, under the lock: no user code (a __del__) runs."""
    attempts = future._attempts
    if attempts is not None:
        attempts.drop()
