"""The end of a bridge's hand-off: once its loop has stopped, or in a forked child.

Functions of the HandOff (the first argument), which they close for good: after these,
nothing may be handed off, and no future it accepted is left pending.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Optional

from .._key_limits import report_key_lost
from ._future import BridgeFuture
from ._handoff import HandOff
from ._lifecycle import FORK_MESSAGE, BridgeState, refusal
from ._options import ExitReport

__all__ = ["after_fork_in_child", "close"]


def close(
    handoff: HandOff, crash: Optional[BaseException], loop: Optional[asyncio.AbstractEventLoop]
) -> None:
    """The loop has stopped (``loop``, closed; None: none was made, no job ran). Nothing
    may be handed off any more."""
    with handoff._lock:
        if handoff._state is not BridgeState.BROKEN:
            handoff._state = BridgeState.CLOSED
        orphans = _orphans_locked(handoff)
        request = handoff._mailbox.shutdown
        broken, why = handoff._broken, handoff._broken_why
        keys_lost, handoff.keys_lost = handoff.keys_lost, []
    if request is not None:
        request.send_report(ExitReport())  # asked for after the loop's last drain
    if loop is not None:  # (with none, no job ran: no key broke)
        for exc in keys_lost:  # as the loop drained no more: it could not run (HandOff)
            report_key_lost(loop, exc)
    # Only after a crash of this package, or (a safety net: _breaking fails the jobs it
    # knows of) once the loop could not run: never strand a future.
    for future in orphans:
        if future.done():
            continue
        if broken is not None:
            error = refusal(BridgeState.BROKEN, broken, handoff.owner_repr, why)
        else:
            error = RuntimeError(f"{handoff.owner_repr} stopped unexpectedly: {crash!r}")
            error.__cause__ = crash
        future._try_set_exception(error)


def after_fork_in_child(handoff: HandOff) -> None:
    # Only the forking thread exists here, so a lock held by a parent thread at the
    # fork would never be released: replace the locks instead of taking them.
    handoff._lock = threading.Lock()
    handoff._state = BridgeState.FORKED
    handoff.pool.forget_threads()
    for future in _orphans_locked(handoff):
        future._condition = threading.Condition()
        future._try_set_exception(RuntimeError(FORK_MESSAGE.format(name=handoff.owner_repr)))


def _orphans_locked(handoff: HandOff) -> list[BridgeFuture[Any]]:
    futures = [job.future for job in handoff._slots.drain()] + handoff._mailbox.close()
    futures += [*handoff._slots.direct, *handoff._slots.pausing, *handoff.scheduler.orphans()]
    handoff._slots.direct.clear()
    return futures
