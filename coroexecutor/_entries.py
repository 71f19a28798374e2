"""The entries of the executor's backlog (see :class:`~coroexecutor._slots.Slots`): a queued
job, the place in line of a slot waiter sent back by a shrink, and that of a job back from
its pause between two attempts (retry=).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable

from ._following import STARTING, QueuedFuture

__all__ = ["FIRST", "Queued", "Requeued", "Resuming", "SentBack", "Submitting"]


class Queued:
    """A job waiting in the backlog: accepted by submit_nowait(), or a map's input, while
    every slot was taken. ``start(entry)`` is called in ``ctx`` once the job has a slot: it
    must start the job in that slot (or give the slot back through :meth:`Slots.release`)."""

    __slots__ = ("args", "ctx", "fn", "future", "kwargs", "start")

    def __init__(
        self,
        future: QueuedFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: Callable[[Queued], object],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.start = start
        # The job runs in a copy of the submitter's context, as asyncio.create_task()
        # would have given it had it started at once.
        self.ctx = contextvars.copy_context()

    def done(self) -> bool:
        """Whether the job left the line before it started (its future was cancelled)."""
        return self.future.done()

    def leave(self) -> None:
        """drain() took the job (uncounted, for its caller to end at once): a cancel of
        its future from now on drops nothing from the line (see QueuedFuture.on_drop)."""
        self.future.on_drop = None

    def leave_to_start(self) -> None:
        """A slot was handed to the job, which starts now: a cancel of its future from
        now on drops nothing from the line, and until its task is known it is recorded
        for that task (see QueuedFuture.cancel)."""
        self.future.on_drop = STARTING


class SentBack(asyncio.Future[None]):
    """The place in the backlog of a waiter whose slot went back because the limit shrank
    between the grant and its resumption (see SlotLine._must_wait_again). ``first``: the
    place it had first (a Submitting, a map's, see SlotLine.place_of); None for a
    Resuming one."""

    __slots__ = ("first",)

    first: asyncio.Future[None] | None


class Resuming(SentBack):
    """The place in the backlog of a job back from its pause between two attempts
    (retry=): ahead of every waiter and queued job never granted a slot, in line with the
    SentBack ones, but never ahead of a waiter granted a slot before it lined up (that
    slot was given away, the pausing job's own among them: see SlotLine._must_wait_again)."""

    __slots__ = ()


class Requeued(Queued):
    """A queued job that is the next attempt of a job that has run before: the bridge's
    retry=, where each attempt is a job of its core (see Slots.queue_again). It lines up
    as a Resuming waiter does: ahead of every entry never granted a slot, behind the
    SentBack, Resuming and Requeued ones there before it."""

    __slots__ = ()


class Submitting(asyncio.Future[None]):
    """The place in line of a submit() waiting for a slot (for its key's room, for a start
    token): turned away as shutdown() begins, and as the block exits unless it was made
    inside one of the executor's jobs (``in_job``), which may still submit (see
    _taking.refuse_submits). Not accepted yet: nothing of it runs."""

    __slots__ = ("in_job",)

    in_job: bool


# The entries that go first: together they are a prefix of the backlog, in FIFO order.
FIRST = (SentBack, Requeued)
