"""Mailbox: what other threads hand to the loop thread, and the one wake-up per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

from ._future import BridgeFuture
from ._job import Job
from ._options import ShutdownRequest
from ._workers import WorkItem

__all__ = ["Batch", "Mailbox"]


class Batch(NamedTuple):
    """What the loop thread takes from the mailbox in one drain."""

    to_start: Sequence[Job]  # jobs holding a slot, for Scheduler.start
    calls: Sequence[Callable[[], object]]  # functions other threads want run on the loop
    done_items: Sequence[WorkItem]  # blocking jobs the loop runs, done by a worker
    tails: Sequence[WorkItem]  # direct blocking jobs whose call returned an awaitable
    shutdown: Optional[ShutdownRequest]  # a new or changed shutdown request


class Mailbox:
    """The lists the loop thread drains, and the wake-up that makes it drain them.

    Not locked by itself: every field and method is guarded by (used with) the owning
    HandOff's lock. Work crosses into the loop thread only through here: the first post
    of a batch wakes the loop with one ``call_soon_threadsafe`` of the drain given to
    ``open``, and that drain takes the whole batch with ``take``.

    Invariant: while ``_wake_pending`` is True, a drain is scheduled that has not taken
    the batch yet; it is only set while open (``_loop`` set). The converse may fail for a
    while: a drain can be scheduled with it False (see ``wake``); that drain takes a batch
    early, or an empty one, which does no harm.
    """

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # set while the loop drains
        self._drain: Callable[[], object] = _not_open
        self._wake_pending = False
        self._to_start: list[Job] = []
        self._calls: list[Callable[[], object]] = []
        self._done_items: list[WorkItem] = []
        self._tails: list[WorkItem] = []
        # Every request so far, joined; but for a grace period the loop has taken (take).
        self.shutdown: Optional[ShutdownRequest] = None
        self._shutdown_changed = False

    @property
    def draining(self) -> bool:
        """The loop drains the mailbox: what is posted now is run (unless it stops first)."""
        return self._loop is not None

    def open(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], object]) -> None:
        """Loop thread: start draining, with a first drain for what came before."""
        self._loop, self._drain = loop, drain
        self._wake_pending = True
        loop.call_soon(drain)

    def stop_draining(self) -> None:
        """The loop is about to close: wake-ups from now on must not target it."""
        self._loop = None

    def wake(self) -> None:
        """Schedule a drain, unless one is scheduled already (or the loop is not open)."""
        loop = self._loop
        if loop is not None and not self._wake_pending:
            # Set only once the call has returned. A KeyboardInterrupt (Ctrl-C) can cut
            # call_soon_threadsafe short in the main thread, with the drain scheduled or
            # not, the loop woken or not; set before, the flag would then say "on its way"
            # forever, and no later post would wake the loop again. Left False, the next
            # post wakes it (at worst once more than needed).
            loop.call_soon_threadsafe(self._drain)
            self._wake_pending = True

    def start(self, job: Job) -> None:
        self._to_start.append(job)  # (withdraw() takes it back)
        if not self._wake_pending:  # the hot path: under load a drain is mostly on its way
            self.wake()

    def withdraw(self, job: Job) -> None:
        """Take back a job ``start`` was given, if it still holds it: that start was cut
        short (see HandOff.submit_threadsafe). The batch has not been taken: the lock has
        been held since, so it is the last one put."""
        to_start = self._to_start
        if to_start and to_start[-1] is job:
            to_start.pop()

    def call(self, fn: Callable[[], object]) -> None:
        self._calls.append(fn)
        self.wake()

    def work_done(self, item: WorkItem) -> None:
        self._done_items.append(item)
        self.wake()

    def tail(self, item: WorkItem) -> None:
        self._tails.append(item)
        self.wake()

    def request_shutdown(self, request: ShutdownRequest) -> ShutdownRequest:
        """Record a shutdown request (joined to any earlier one); return what stands."""
        if self.shutdown is not None:
            request = self.shutdown.joined(request)
        self.shutdown = request
        self._shutdown_changed = True
        self.wake()
        return request

    def take(self) -> Batch:
        """Loop thread: take everything posted since the last drain."""
        self._wake_pending = False
        to_start, self._to_start = self._to_start, []
        # Usually there are only jobs to start: the other lists are swapped only if needed.
        calls: Sequence[Callable[[], object]] = ()
        done_items: Sequence[WorkItem] = ()
        tails: Sequence[WorkItem] = ()
        if self._calls or self._done_items or self._tails:
            calls, self._calls = self._calls, []
            done_items, self._done_items = self._done_items, []
            tails, self._tails = self._tails, []
        request = self.shutdown if self._shutdown_changed else None
        self._shutdown_changed = False
        if request is not None and request.grace is not None:
            # The loop starts the grace period now: a later request, joined to this one,
            # must not start it again (the end of it asks to cancel all, which would then
            # start it anew), only a grace period of its own.
            self.shutdown = request._replace(grace=None)
        return Batch(to_start, calls, done_items, tails, request)

    def break_off(self) -> tuple[list[BridgeFuture[Any]], list[WorkItem]]:
        """Loop thread, which could not run the loop: stop draining; return the jobs given
        to ``start`` and the tails, which it never will run. The drain scheduled already
        runs while the loop is shut down: it takes only the calls (their posters may wait
        for them), and no shutdown is left to act on."""
        self._loop = None
        futures = [job.future for job in self._to_start]
        self._to_start.clear()
        tails, self._tails = self._tails, []
        self._shutdown_changed = False  # kept in ``shutdown``, for its report
        return futures, tails

    def close(self) -> list[BridgeFuture[Any]]:
        """Drop everything posted: the loop has stopped. Returns the jobs never started."""
        self._loop = None
        futures = [job.future for job in self._to_start]
        self._to_start.clear()
        self._calls.clear()
        self._done_items.clear()
        self._tails.clear()
        return futures


def _not_open() -> None:
    raise AssertionError("the mailbox woke the loop before open()")  # wake() checks _loop
