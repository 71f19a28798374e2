"""The locking of a BridgeFuture: its condition, made on first use (LazyFuture, its base),
and its lock, taken so that a Ctrl-C (KeyboardInterrupt) anywhere in the caller's thread
leaves it free."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from concurrent.futures._base import _STATE_TO_DESCRIPTION_MAP as _DESCRIPTIONS
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

if TYPE_CHECKING:
    from concurrent.futures._base import _Waiter


__all__ = [
    "CANCELLED_STATES", "CANCELLING", "DONE_STATES", "SIGNAL_CHECK_SECONDS", "LazyFuture",
    "add_callback_locked", "finish_first",
    "first_use_lock", "lock_of", "made_condition", "notify_waiters", "repr_unlocked",
    "wait_locked",
]

T = TypeVar("T")

# The main thread's waits never block for longer than this at a time. A Ctrl-C does not
# interrupt a lock wait that it reaches too early: in the instants after the interpreter
# last checked for signals and before the wait starts, or when the kernel hands SIGINT to
# another thread, the C handler runs and returns, and the wait sees no EINTR. The main
# thread then raises the KeyboardInterrupt when it next runs Python code: waking up this
# often bounds how late.
SIGNAL_CHECK_SECONDS = 0.1

DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)

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


def notify_waiters(future: LazyFuture[Any]) -> None:
    """Under the future's lock, on a thread no Ctrl-C reaches (the loop's, see
    BridgeFuture.cancel): tell the wait()/as_completed() waiters that cancel() found on
    the future, once, those still waiting on it."""
    waiters, future._unnotified = future._unnotified, None  # one step: told once
    installed = future._lazy_waiters or ()
    for waiter in waiters or ():
        if waiter in installed:  # (one whose wait() has returned meanwhile is not)
            waiter.add_cancelled(future)


def add_callback_locked(future: LazyFuture[Any], fn: Callable[[Any], object]) -> bool:
    """Under the future's lock: keep ``fn`` for when the future is done (True), unless it
    is done already (False: the caller calls it, unlocked)."""
    if future._state in DONE_STATES:
        return False
    future._done_callbacks.append(fn)  # the last step: nothing to undo after it
    return True


def wait_locked(
    future: LazyFuture[Any], condition: threading.Condition, timeout: Optional[float]
) -> None:
    """Under the future's lock: wait for it to be done (result(), exception()), or for
    ``timeout``. The main thread waits in slices of SIGNAL_CHECK_SECONDS, so no Ctrl-C is
    lost to the wait (the stdlib's waits for ever when SIGINT goes to another thread)."""
    if future._state not in DONE_STATES:
        try:
            if threading.current_thread() is not threading.main_thread() or (
                timeout is not None and not 0 <= timeout <= threading.TIMEOUT_MAX
            ):  # (a timeout the lock refuses, or nan: as the stdlib's wait does)
                condition.wait(timeout)  # one wait, then the outcome or a timeout
                return
            deadline = None if timeout is None else time.monotonic() + timeout
            while future._state not in DONE_STATES:
                left = SIGNAL_CHECK_SECONDS
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        return
                condition.wait(left)
        except BaseException:
            # Condition.wait is Python: a Ctrl-C as its _release_save() returns comes out
            # before its ``try:``, with the lock given up and not taken back. The caller's
            # ``with`` would then raise "cannot release un-acquired lock" in place of the
            # KeyboardInterrupt: take it back, once (the caller held it once).
            if not condition._is_owned(): lock_of(condition).acquire()  # type: ignore[attr-defined]  # noqa: E701
            raise


def repr_unlocked(future: LazyFuture[Any]) -> str:
    """The stdlib's repr of a future, from one read of its state, unlocked: FINISHED is
    final, and the outcome is written before it."""
    state = future._state
    name = f"{type(future).__name__} at {id(future):#x} state={_DESCRIPTIONS[state]}"
    if state != FINISHED:
        return f"<{name}>"
    if future._exception:
        return f"<{name} raised {type(future._exception).__name__}>"
    return f"<{name} returned {type(future._result).__name__}>"


def made_condition(future: LazyFuture[Any]) -> threading.Condition:
    """Under first_use_lock: the future's first condition."""
    condition = future._lazy_condition = threading.Condition()
    return condition


def finish_first(
    future: LazyFuture[Any], result: Any, exc: Optional[BaseException]
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


class LazyFuture(concurrent.futures.Future[T]):
    """A concurrent.futures.Future whose condition and two lists are made on first use
    (the base of BridgeFuture, which sets the three ``_lazy_`` fields to None and reads
    them directly where it must not make them).

    Most futures of a busy executor are resolved before any thread waits on them, and a
    Condition is eight objects (itself, an RLock, a deque, five bound methods) that the
    garbage collector would traverse for as long as the caller keeps the future (see
    ``BridgeFuture._finish``).
    """

    _lazy_condition: Optional[threading.Condition]  # see _condition
    _lazy_waiters: Optional[list[_Waiter]]  # guarded by _condition
    _lazy_callbacks: Optional[list[Callable[[Any], object]]]  # guarded by _condition
    # The wait()/as_completed() waiters BridgeFuture.cancel() found on the future, until
    # they are told (guarded by _condition; see notify_waiters). Set by BridgeFuture.
    _unnotified: Optional[list[_Waiter]]

    @property
    def _condition(self) -> threading.Condition:
        # Every thread that locks, waits on or attaches to the future comes through here
        # (the stdlib's wait() and as_completed() too); BridgeFuture._finish sees the result.
        condition = self._lazy_condition
        if condition is None:
            # The lock on one line: see _accept (a Ctrl-C out of a tracer at the exit of a
            # longer with block would leave it held, and every future wedged).
            with first_use_lock: condition = self._lazy_condition or made_condition(self)  # noqa: E701
        return condition

    # A property where the stock future has a plain attribute (made here on first use).
    @_condition.setter
    def _condition(self, condition: threading.Condition) -> None:  # pyright: ignore[reportIncompatibleVariableOverride]
        self._lazy_condition = condition

    @property
    def _waiters(self) -> list[_Waiter]:
        # Used only with _condition held (by the stdlib too), so made only once.
        waiters = self._lazy_waiters
        if waiters is None:
            waiters = self._lazy_waiters = []
        return waiters

    # A property where the stock future has a plain attribute (made here on first use).
    @_waiters.setter
    def _waiters(self, waiters: list[_Waiter]) -> None:  # pyright: ignore[reportIncompatibleVariableOverride]
        self._lazy_waiters = waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:
        callbacks = self._lazy_callbacks
        if callbacks is None:
            callbacks = self._lazy_callbacks = []
        return callbacks

    @_done_callbacks.setter
    def _done_callbacks(self, callbacks: list[Callable[[Any], object]]) -> None:
        self._lazy_callbacks = callbacks

