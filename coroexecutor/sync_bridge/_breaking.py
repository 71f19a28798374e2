"""A bridge broken before its loop ran a job: its initializer raised, or its loop could
not start its first task (see LoopThread._run). Functions of the HandOff (the first
argument), as in _withdraw: they fail the jobs that wait for the loop, now and later."""

from __future__ import annotations

import inspect
import threading
from concurrent.futures._base import PENDING
from typing import Optional, Protocol

from ._lifecycle import INITIALIZER_FAILED, BridgeState, refusal
from ._mailbox import Mailbox
from ._slots import Slots
from ._workers import WorkItem

__all__ = ["fail_backlog", "fail_tail", "refuse_tail_locked"]


class _HandOff(Protocol):
    """What of a HandOff this uses (not imported: HandOff imports this module)."""

    _lock: threading.Lock
    _state: BridgeState
    _slots: Slots
    _mailbox: Mailbox
    _broken: Optional[BaseException]
    _broken_why: str
    owner_repr: str


def fail_backlog(handoff: _HandOff, error: BaseException, why: str = INITIALIZER_FAILED) -> None:
    """HandOff.fail_backlog, loop thread: the initializer raised, or the loop could not
    run (``why``: which, see refusal). Fail every job accepted so far that waits for the
    loop, and every later one. Nothing is drained after this."""
    with handoff._lock:
        handoff._state = BridgeState.BROKEN
        handoff._broken, handoff._broken_why = error, why
        slots = handoff._slots
        jobs = slots.fail_backlog()
        # Without an initializer the mailbox opens before the loop runs: the jobs given a
        # slot meanwhile wait in it (with one, it opens after: it holds nothing).
        given, tails = handoff._mailbox.break_off()
        sent = [future for future in given if future._state == PENDING]
        slots.refused += len(sent)
        slots.cancelled += len(given) - len(sent)  # as Scheduler.start would count them
        for item in tails:
            refuse_tail_locked(handoff, item)
    for future in [job.future for job in jobs] + sent:
        future._try_set_exception(refusal(BridgeState.BROKEN, error, handoff.owner_repr, why))
    for item in tails:
        fail_tail(handoff, item)


def refuse_tail_locked(handoff: _HandOff, item: WorkItem) -> None:
    """With the lock held: a broken loop will never await what a direct blocking call
    returned (nor decide on its error, with retry=). Count the job as refused; free its
    slot. Then fail_tail, unlocked."""
    slots = handoff._slots
    slots.direct.discard(item.future)
    slots.refused += 1
    slots.release(item.future)


def fail_tail(handoff: _HandOff, item: WorkItem) -> None:
    """Close the awaitable (or "coroutine ... was never awaited"); fail the job."""
    outcome, item.outcome = item.outcome, None
    if inspect.iscoroutine(outcome):
        outcome.close()
    error = refusal(BridgeState.BROKEN, handoff._broken, handoff.owner_repr, handoff._broken_why)
    item.future._try_set_exception(error)
