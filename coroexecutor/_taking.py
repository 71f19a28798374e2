"""The one wait for a slot (the slow path of submit() and map()), and giving back a slot
taken for a job that will not start. Functions of the executor, on its loop thread."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable

from ._errors import check_job_fn
from ._lifecycle import admit, check_idle
from ._startup import check_accepting, check_not_initializer
from ._state import State

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["give_back", "start_failed", "take_slot"]

_CancelledError = asyncio.CancelledError
_CANCELLING = State.CANCELLING


def give_back(exe: Core) -> None:
    """Give back a slot the caller holds but will not start a job in. The backlog moves
    in a later turn: we may be inside another job's start."""
    slots = exe._slots
    slots.release()
    if slots.backlog:
        slots.schedule_wake()
    check_idle(exe)


async def take_slot(exe: Core, where: str) -> None:
    """Wait in line for a slot: the slow path of submit() and map() (see Slots.take)."""
    if exe._startup.task is not None:
        check_not_initializer(exe, f"{where}()")
    try:
        await exe._slots.take()
    except _CancelledError:
        admit(exe)  # a slot granted just as we were cancelled goes to the next in line
        check_idle(exe)
        raise
    if exe._state is _CANCELLING:
        give_back(exe)  # granted just before an abort
        check_accepting(exe)  # raises


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
