"""The locking of a BridgeFuture: its condition, made on first use, and its lock, taken so
that a Ctrl-C (KeyboardInterrupt) anywhere in the caller's thread leaves it free."""

from __future__ import annotations

import os
import threading
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ._future import BridgeFuture

__all__ = [
    "CANCELLING", "DONE_STATES", "finish_first", "first_use_lock", "lock_of",
    "made_condition", "notify_cancelled", "wait_locked",
]

DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

# Guards the first use of every BridgeFuture's condition, and the resolving of a future
# that has none yet (see BridgeFuture._finish). Held for a few attribute reads and writes
# only: no future is waited on and no callback runs under it.
first_use_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global first_use_lock
    first_use_lock = threading.Lock()  # a parent thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# cancel(): the state it leaves a future in, by the state it finds.
CANCELLING = {
    PENDING: CANCELLED_AND_NOTIFIED,
    RUNNING: RUNNING,
    CANCELLED: CANCELLED,
    CANCELLED_AND_NOTIFIED: CANCELLED_AND_NOTIFIED,
    FINISHED: FINISHED,
}


def lock_of(condition: threading.Condition) -> Any:
    """The RLock of a future's condition, to hold in a ``with`` in place of the condition.

    Condition.__enter__ and __exit__ are Python functions: a signal's handler can run on
    entering them and as the lock's own call returns inside them, so a plain Ctrl-C there
    leaves the lock taken (or the block never entered) and every later use of the future
    wedged, the loop's _finish first. The RLock's are C calls, with nothing run between
    the taking and the ``with`` block's handler. Holding it is holding the condition."""
    return condition._lock  # type: ignore[attr-defined]  # not in typeshed; 3.9 to 3.13 have it


def notify_cancelled(future: BridgeFuture[Any]) -> None:
    """Under the future's lock: tell its waiters that cancel() has cancelled it."""
    for waiter in future._lazy_waiters or ():
        waiter.add_cancelled(future)
    future._condition.notify_all()


def wait_locked(
    future: BridgeFuture[Any], condition: threading.Condition, timeout: Optional[float]
) -> None:
    """Under the future's lock: wait once for it to be done (result())."""
    if future._state not in DONE_STATES:
        condition.wait(timeout)  # one wait, then the outcome or a timeout


def made_condition(future: BridgeFuture[Any]) -> threading.Condition:
    """Under first_use_lock: the future's first condition."""
    condition = future._lazy_condition = threading.Condition()
    return condition


def finish_first(
    future: BridgeFuture[Any], result: Any, exc: Optional[BaseException]
) -> Optional[bool]:
    """Under first_use_lock: resolve a future that has no condition yet (True), unless
    it is done already (False). None: it has one now, and is resolved through it."""
    if future._lazy_condition is not None:
        return None
    # No thread has locked, waited on or attached to the future yet, so there is nobody
    # to notify and no callback to run. One that comes later makes the condition first,
    # under this lock, then sees the outcome: set_result() would only have made a
    # condition for nothing.
    if future._state != PENDING:  # anything else went through _condition
        return False
    future._result = result
    future._exception = exc
    future._state = FINISHED
    return True
