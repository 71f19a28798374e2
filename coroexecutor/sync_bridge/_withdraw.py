"""Withdrawing a cancelled job that waits (for a slot, or between two attempts) under
HandOff's lock, taken on one line so that a Ctrl-C leaves it free (see _accept)."""

from __future__ import annotations

from typing import Any, Protocol

from ._future import BridgeFuture
from ._mailbox import Mailbox
from ._slots import Slots
from ._workers import WorkItem

__all__ = ["withdraw_locked"]


class _HandOff(Protocol):
    """What of a HandOff this uses (not imported: HandOff imports this module)."""

    _slots: Slots
    _mailbox: Mailbox

    def _fill_locked(self) -> list[WorkItem]: ...


def withdraw_locked(handoff: _HandOff, future: BridgeFuture[Any], items: list[WorkItem]) -> bool:
    """With ``handoff._lock`` held, for cancel_job_threadsafe: count a job cancelled while
    it waits for a slot (True) or pauses between two attempts (False), and add to
    ``items`` the blocking jobs its room starts (with retries: key=, a pause's slot).

    Added to the caller's list (one ``+=``), not returned: a Ctrl-C at the ``return``
    line would lose the jobs just given slots. One before the count leaves the job as it
    was; cancel() then calls cancel_job_threadsafe again."""
    slots = handoff._slots
    if future._in_backlog:
        withdrawn = slots.withdraw(future)  # False: it left the backlog
        if withdrawn and future._attempts is not None:
            items += handoff._fill_locked()  # key=: a retry gives its key's room back
        return withdrawn
    if future._attempts is not None and slots.withdraw_pausing(future):
        # With key=, its key's room came back: a job waiting for it may start.
        items += handoff._fill_locked()
        if not slots.busy:
            handoff._mailbox.wake()  # a shutdown may wait for the last pause
    return False
