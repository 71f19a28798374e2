"""SlotGrants: where a slot the HandOff gave comes back, and goes to the next job.

A job that holds a slot gives it back when it ends: from the loop thread, through the
Scheduler (``_release_nowait``, ``_release_all``), or from the worker thread that ran a
direct blocking job (``_release_from_worker``). Each freed slot is granted under
``_lock`` to the next live job in the backlog (``_next_locked``), which goes to a worker
thread or to the loop (``_to_worker_locked``, ``_route_locked``, ``_grant_locked``,
``_fill_locked``). SlotGrants is the base of HandOff (``_handoff``, where the threading
model is): it holds nothing, reads the HandOff's fields declared below, and calls
nothing of the HandOff's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Optional

from ._breaking import fail_tail, refuse_tail_locked
from ._future import BridgeFuture
from ._job import Job
from ._lifecycle import BridgeState
from ._mailbox import Mailbox
from ._slots import Slots
from ._workers import WorkerPool, WorkItem

__all__ = ["SlotGrants"]


class SlotGrants:
    """The releases and grants of HandOff, its base (see the module)."""

    # Set by HandOff.__init__ (see there).
    owner_repr: str
    pool: WorkerPool
    _lock: threading.Lock
    _state: BridgeState  # guarded by _lock
    _slots: Slots  # guarded by _lock
    _mailbox: Mailbox  # guarded by _lock
    _blocking_on_loop: bool  # guarded by _lock
    _broken: Optional[BaseException]  # guarded by _lock
    _broken_why: str  # guarded by _lock; with _broken

    #
    # Grants (every method here is called with _lock held)
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
    # Releases: from a worker thread, from the loop thread
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
