"""Accepting a job under HandOff's lock, so that a Ctrl-C anywhere leaves the lock free.

Why the lock is taken on one line. From Python 3.11 on, a ``with`` block's exit runs code
on the ``with`` line, after the block's last line, and outside the block's exception
handler; so do the no-op instructions of a ``try:`` or ``return`` line inside it. A trace
function runs at each new line, and an exception it raises there leaves ``__exit__``
uncalled: the lock stays held, and every later submit(), the loop's drain and the
shutdown then wait for it for ever. A Ctrl-C comes out of a trace function whenever a
Python tracer is active (a debugger, coverage's Python tracer): the signal's handler runs
inside the tracer. ``with lock: x = f()`` on one line has no new line between the lock's
``__enter__`` and ``__exit__``: whatever ``f`` raises passes through the block's handler,
which releases the lock. (Python 3.9 and 3.10 cover all of these; 3.11 to 3.13 checked.)
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Union

from ._job import Job
from ._lifecycle import ACCEPTING, BridgeState
from ._mailbox import Mailbox
from ._slots import Slots
from ._workers import WorkerPool, WorkItem

__all__ = ["accept_locked"]


class _HandOff(Protocol):
    """What of a HandOff this uses (not imported: HandOff imports this module)."""

    _state: BridgeState
    _slots: Slots
    _mailbox: Mailbox
    pool: WorkerPool

    def _route_locked(self, job: Job) -> Optional[WorkItem]: ...


def accept_locked(
    handoff: _HandOff, job: Job, key: Optional[tuple[Any, int]]
) -> Union[WorkItem, BridgeState, None]:
    """With ``handoff._lock`` held: accept ``job`` whole, or change nothing and raise.

    Returns None once the job waits for a slot or has gone to the loop, the WorkItem of
    a direct blocking job once it is in the pool's queue (the caller wakes a worker), or
    the state that refuses it. An exception from any line leaves no part of the job behind
    (``undo_submit``), except once the job has been handed off whole (from a ``return``
    line, or as the pool's put returns): it runs.
    """
    state = handoff._state
    if state not in ACCEPTING:
        return state
    slots = handoff._slots
    submitted, held = slots.submitted, slots.held  # for undo_submit
    queued: Optional[WorkItem] = None  # in the pool's queue: nothing to undo
    try:
        slots.submitted = submitted + 1
        if not slots.take_nowait():
            if key is None:
                slots.queue(job)
                return None
            if not slots.take_key(job, *key):  # type: ignore[attr-defined]  # KeyedSlots
                return None
        if slots.tuner is not None:
            slots.tuner.started(job.future)
        if job.coroutine_fn:
            handoff._mailbox.start(job)  # as _route_locked would, one call less
            return None
        item = handoff._route_locked(job)
        if item is None:
            return None  # handed to the loop
        # Marked, queued and returned on one line. A KeyboardInterrupt at the line's start
        # (a tracer's) finds it unmarked and not queued; one raised as the put returns (a
        # signal's), marked and queued. Nothing can be raised between the two.
        return handoff.pool.put_new(queued := item) or item
    except BaseException:
        if queued is None:
            slots.undo_submit(job, submitted, held, handoff._mailbox.withdraw)
        raise
