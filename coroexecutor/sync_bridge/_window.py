"""MapWindow: how many jobs a buffered ``map()`` under ``retry=`` may hold, as its jobs
pause between attempts.

The core's rule (see _map_state.MapJobs): a job pausing between two attempts holds no
slot, and leaves its map's window, so the map starts another input in its place and
keeps its slots busy meanwhile; up to ``buffersize`` pausing jobs count so, which bounds
the map at twice its window. The bridge's map reads its inputs in the consumer's thread
(as the standard library's does) and tops its window up as ``next()`` is called; this
object wakes a ``next()`` that waits for a result when a job of the map pauses, so that
it reads and submits the next input then.

Threading: the loop thread calls ``paused`` and ``resumed``; the consumer's thread, in
``next()`` (one at a time), calls ``size`` and ``wait``. The pausing jobs are guarded by
the window's own lock, taken on one line (see _accept: a Ctrl-C in the consumer's thread
leaves it free) for a few steps, with no call under it. The consumer waits on the
condition of the result it waits for (as ``result()`` would), which the loop thread
notifies when a job pauses; the flag ``_grew`` is set before that notify and read under
that condition's lock, so no wake-up is lost.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Optional

from .._typing import final
from ._future import BridgeFuture
from ._future_locks import DONE_STATES, SIGNAL_CHECK_SECONDS, lock_of

__all__ = ["MapWindow"]


@final
class MapWindow:
    """The window of one buffered map whose jobs may be retried."""

    __slots__ = ("_buffersize", "_grew", "_lock", "_pausing", "_watched")

    def __init__(self, buffersize: int) -> None:
        self._buffersize = buffersize
        self._lock = threading.Lock()
        self._pausing: set[Future[Any]] = set()  # the map's jobs between attempts (_lock)
        # A job paused since the consumer last sized the window: set by the loop thread,
        # cleared by the consumer (single writes, no lock: see the module's docstring).
        self._grew = False
        # The result the consumer waits for (set by it, read by the loop thread).
        self._watched: Optional[Future[Any]] = None

    def paused(self, future: Future[Any]) -> None:
        """Loop thread: a job of the map pauses between attempts, holding no slot: wake
        a consumer waiting for a result, to start another input."""
        with self._lock: self._pausing.add(future)  # noqa: E701
        self._grew = True
        head = self._watched
        if head is not None:
            condition = head._condition
            with lock_of(condition): condition.notify_all()  # noqa: E701

    def resumed(self, future: Future[Any]) -> None:
        """Loop thread: the job's pause is over (its next attempt takes or waits for a
        slot): it counts against the window again."""
        with self._lock: self._pausing.discard(future)  # noqa: E701

    def size(self) -> int:
        """How many jobs the map may hold while ``next()`` waits for a result: the
        ``buffersize`` ahead of that result, the one that ``next()`` submits, and one per
        pausing job, up to ``buffersize`` of them."""
        self._grew = False  # before the count: a pause after it wakes the next wait
        with self._lock: pausing = _count_locked(self._pausing)  # noqa: E701
        return self._buffersize + 1 + min(pausing, self._buffersize)

    def wait(self, head: Future[Any], end_time: Optional[float]) -> bool:
        """Wait until ``head`` is done (False) or a job of the map has paused since the
        last ``size()`` (True: size the window again). False too once ``end_time`` (a
        ``time.monotonic()`` value) has passed: ``head.result()`` then times out.

        Raises RuntimeError on the executor's loop thread while ``head`` is not done, as
        ``head.result()`` does: the jobs need that thread, so the wait would never end."""
        if isinstance(head, BridgeFuture):  # always (see _map._Policy): for the typing
            head._check_not_loop_thread()
        self._watched = head  # before the first look at _grew
        condition = head._condition
        try:
            # The condition's own lock, on one line (see _accept and lock_of).
            with lock_of(condition): _wait_locked(self, head, condition, end_time)  # noqa: E701
        finally:
            self._watched = None
        return self._grew and head._state not in DONE_STATES

    def close(self) -> None:
        """The map is closed: hold none of its futures (they hold this window)."""
        with self._lock: self._pausing.clear()  # noqa: E701


def _count_locked(pausing: set[Future[Any]]) -> int:
    """Under the window's lock: how many of its jobs pause. One cancelled in its pause
    (done) counts no more."""
    for future in [future for future in pausing if future._state in DONE_STATES]:
        pausing.discard(future)
    return len(pausing)


def _wait_locked(
    window: MapWindow,
    head: Future[Any],
    condition: threading.Condition,
    end_time: Optional[float],
) -> None:
    """Under ``head``'s lock: wait for it to be done, or for a job of the map to pause,
    or for ``end_time``. As _future_locks.wait_locked: the main thread waits in slices
    of SIGNAL_CHECK_SECONDS, and a Ctrl-C leaves the lock held once, as the caller's
    ``with`` expects."""
    main = threading.current_thread() is threading.main_thread()
    try:
        while head._state not in DONE_STATES and not window._grew:
            left: Optional[float] = None
            if end_time is not None:
                left = end_time - time.monotonic()
                if left <= 0:
                    return
                left = min(left, threading.TIMEOUT_MAX)
            if main:
                left = SIGNAL_CHECK_SECONDS if left is None else min(left, SIGNAL_CHECK_SECONDS)
            condition.wait(left)
    except BaseException:
        if not condition._is_owned(): lock_of(condition).acquire()  # type: ignore[attr-defined]  # noqa: E701
        raise
