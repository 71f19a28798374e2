"""What a cancel() asks of the HandOff: withdraw its job if it waits (for a slot, or
between two attempts) under the HandOff's lock, taken on one line so that a Ctrl-C leaves
it free (see _accept); cancel the job on the loop; tell the future's waiters from there."""

from __future__ import annotations

import threading
from typing import Any, Callable, Protocol

from ._future import BridgeFuture
from ._future_locks import lock_of, notify_waiters
from ._mailbox import Mailbox
from ._scheduler import Scheduler
from ._slots import Slots
from ._workers import WorkerPool, WorkItem

__all__ = ["cancel_job", "notify_cancelled", "withdraw_locked"]


class _HandOff(Protocol):
    """What of a HandOff this uses (not imported: HandOff imports this module)."""

    _lock: threading.Lock
    _slots: Slots
    _mailbox: Mailbox
    pool: WorkerPool
    scheduler: Scheduler

    def _fill_locked(self) -> list[WorkItem]: ...

    def is_loop_thread(self) -> bool: ...

    def post_if_draining(self, fn: Callable[[], object]) -> bool: ...


def cancel_job(handoff: _HandOff, future: BridgeFuture[Any]) -> None:
    """HandOff.cancel_job_threadsafe: the future was cancelled: cancel its job on the
    loop, if the loop has it.

    A job the loop is starting right now (``_job`` not yet set) is cancelled by
    Scheduler.start, which checks the future's state after setting ``_job``. A job
    waiting for a slot is counted as cancelled here, at once (the next ``stats`` says
    so); it stays in the backlog until its turn, then is skipped.
    """
    withdrawn = False  # taken out of the backlog: the loop never had it
    if future._in_backlog or future._attempts is not None:
        # The lock on one line: see _accept. A Ctrl-C leaves the job withdrawn and
        # counted, or not; cancel() then calls this again.
        with handoff._lock: withdrawn = withdraw_locked(handoff, future)  # noqa: E701
    if withdrawn:
        return
    if handoff.is_loop_thread():
        handoff.scheduler.cancel_job(future)
    elif future._job is not None:
        # Dropped once the loop has stopped: by then every job has finished.
        handoff.post_if_draining(lambda: handoff.scheduler.cancel_job(future))


def notify_cancelled(handoff: _HandOff, future: BridgeFuture[Any]) -> None:
    """HandOff.notify_waiters_threadsafe: tell the wait()/as_completed() waiters cancel()
    found on the future, from the loop thread (see BridgeFuture.cancel); here when this
    is the loop thread, or no loop drains (then no job runs: nobody else could)."""
    if handoff.is_loop_thread() or not handoff.post_if_draining(
        lambda: _notify_locked(future)
    ):
        _notify_locked(future)


def _notify_locked(future: BridgeFuture[Any]) -> None:
    with lock_of(future._condition): notify_waiters(future)  # noqa: E701


def withdraw_locked(handoff: _HandOff, future: BridgeFuture[Any]) -> bool:
    """With ``handoff._lock`` held, for cancel_job: count a job cancelled while it waits
    for a slot (True) or pauses between two attempts (False).

    With retries, the room it gives back (its key's, with key=; a pause's slot) may start
    the next jobs: the loop thread grants it, after this (the lock is held till then), as
    a Ctrl-C here could drop a job given a slot on its way to a worker thread. Asked for
    first: a Ctrl-C before the count leaves the job as it was, and cancel() calls
    cancel_job again, which asks again (a grant with nothing to give does nothing)."""
    slots = handoff._slots
    if future._attempts is not None and (future._in_backlog or future in slots.pausing):
        handoff._mailbox.call(lambda: _grant(handoff))
    if future._in_backlog:
        return slots.withdraw(future)  # False: it left the backlog
    if future._attempts is not None and slots.withdraw_pausing(future) and not slots.busy:
        handoff._mailbox.wake()  # a shutdown may wait for the last pause
    return False


def _grant(handoff: _HandOff) -> None:
    """Loop thread: give every free slot away, as a release does."""
    with handoff._lock:
        items = handoff._fill_locked()
    for item in items:
        handoff.pool.submit(item)
