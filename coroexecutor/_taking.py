"""The one wait for a slot (the slow path of submit() and map()), turning away the
submit() calls still waiting as the executor stops accepting jobs, and giving back a slot
taken for a job that will not start. Functions of the executor, on its loop thread."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable

from ._context import inside_a_job_of
from ._entries import SentBack, Submitting
from ._errors import check_job_fn, refused
from ._idle import check_idle
from ._lifecycle import admit
from ._startup import check_accepting, check_not_initializer
from ._state import State
from ._typing import TypeGuard

if TYPE_CHECKING:
    from ._core import Core

__all__ = [
    "give_back", "refuse_submits", "start_failed", "submitting", "take_slot", "turned_away",
]

_CancelledError = asyncio.CancelledError
_CANCELLING = State.CANCELLING


def give_back(exe: Core) -> None:
    """Give back a slot the caller holds but will not start a job in. The backlog moves
    in a later turn: we may be inside another job's start."""
    slots = exe._slots
    slots.release()
    if slots.startable:  # (with key=, also a job of the key whose room came back)
        slots.schedule_wake()
    check_idle(exe)


async def take_slot(exe: Core, where: str, waiter: asyncio.Future[None] | None = None) -> None:
    """Wait in line for a slot: the slow path of submit() and map(). ``waiter``: the
    caller's place in line, which may be turned away while it waits (a submit()'s, see
    submitting; a map's, see MapJobs.taking), else a new one (see Slots.take)."""
    if exe._startup.task is not None:
        check_not_initializer(exe, f"{where}()")
    try:
        await exe._slots.take(waiter)
    except BaseException:  # cancelled, or turned away (see refuse_submits)
        admit(exe)  # a slot granted meanwhile, given back, goes to the next in line
        check_idle(exe)
        raise
    if turned_away(exe):
        give_back(exe)  # granted just before an abort
        check_accepting(exe)  # raises


def submitting(exe: Core) -> Submitting:
    """The place in line of a submit() about to wait (see refuse_submits)."""
    waiter = Submitting(loop=exe._loop)
    waiter.in_job = inside_a_job_of(exe)
    return waiter


def turned_away(exe: Core) -> bool:
    """Whether a caller just granted a slot must not start its job: the executor cancels
    its jobs. (One that shutdown() or the block's exit turns away, granted a slot or not,
    raises as it resumes: see refuse_submits and Slots.refuse.)"""
    return exe._state is _CANCELLING


def refuse_submits(exe: Core, *, in_jobs: bool) -> None:
    """The executor stops accepting jobs: every submit() still waiting for a slot (for its
    key's room, for a start token) raises the RuntimeError of a shut down executor and
    starts nothing, as a map waiting then does. Those inside the executor's jobs too
    (``in_jobs``: shutdown() began), or not (the block exits: its jobs may still submit
    jobs, and the exit waits for them). A job already accepted (queued by
    submit_nowait()) is no waiter: it runs as the shutdown promises."""
    slots = exe._slots
    for entry in slots.live_waiters():  # (granted a slot and not resumed yet included)
        # (A submit() that a shrink sent back waits as a SentBack: see SlotLine.place_of.)
        first = entry.first if type(entry) is SentBack else entry
        if _turns_away(first, in_jobs=in_jobs):
            slots.refuse(entry, refused(exe))
    if exe._keyed is not None:
        line = exe._keyed.line
        for ticket in line.live():
            item = ticket.item
            if _turns_away(item, in_jobs=in_jobs) and not item.done():
                slots.refuse(item, refused(exe))
                line.discard(ticket)  # now: the key's next job may be startable
    if slots.startable:  # a slot free for what waited behind them: it moves next turn
        slots.schedule_wake()
    check_idle(exe)


def _turns_away(first: object, *, in_jobs: bool) -> TypeGuard[Submitting]:
    """Whether the caller that lined up as ``first`` is a submit() to turn away."""
    return type(first) is Submitting and (in_jobs or not first.in_job)


def start_failed(
    exe: Core,
    fn: Callable[..., Any],
    where: str,
    runner: Coroutine[Any, Any, Any] | None,
    coro: Coroutine[Any, Any, Any] | None,
) -> None:
    """Starting a job raised: give its slot back (the caller re-raises)."""
    if runner is not None:  # made, but never became a task
        runner.close()
    if inspect.iscoroutine(coro):  # (not what fn returned that is no awaitable)
        # Never ran: no "never awaited" warning. (Also when it was handed to the loop's
        # task factory itself, which raised, or made no task, without closing it.)
        coro.close()
    give_back(exe)
    if not callable(fn):
        try:
            check_job_fn(fn, where)  # the clearer error for a coroutine object
        except TypeError as clearer:
            # Not "during handling of" the failed call's own TypeError: the mistake is
            # the argument, as when submit() finds it before it calls (slot busy).
            raise clearer from None
