"""The executor's idle signal and its closing: who waits for no job to run or wait
(shutdown() and the block's exit) is woken once the jobs' done callbacks have run, and the
executor closes, once, leaving no handle behind.

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._entries import Queued
from ._errors import refused
from ._state import State

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["check_idle", "close", "close_when_idle", "report_unretrieved"]


def check_idle(exe: Core, *, in_last_step: bool = False) -> None:
    """Wake whoever waits for the executor to be idle, once the done callbacks of the jobs
    that just ended have run.

    A job that completes in-line settles its slot during its own last step, before its
    task is done and before the task's done callbacks (the caller's own, and the copy of
    its outcome into the future submit_nowait() returned for it if it was queued) have
    run. Waking the waiters from a callback scheduled now puts their wake-up behind the
    task's done callbacks. ``in_last_step`` (called from a job's own last step, where a
    queued job's future may follow its task): the wake-up comes a turn later still,
    behind the done callbacks of that future too. So nothing of a job is still pending
    once ``async with`` or ``shutdown()`` returns.
    """
    if exe._idle_waiters and exe._idle_handle is None and not _busy(exe):
        wake = _wake_idle_next_turn if in_last_step else _wake_idle
        exe._idle_handle = exe._loop.call_soon(wake, exe)


def _busy(exe: Core) -> bool:
    """Whether a job runs or waits, other than the stranded jobs of a key= executor (see
    KeyedSlots.stranded): nothing would ever wake a wait for those."""
    if not exe._slots.busy:
        return False
    keyed = exe._keyed
    return keyed is None or not keyed.stranded


def _wake_idle_next_turn(exe: Core) -> None:
    exe._idle_handle = exe._loop.call_soon(_wake_idle, exe)


def _wake_idle(exe: Core) -> None:
    exe._idle_handle = None
    if not exe._idle_waiters:
        return
    _end_stranded(exe)
    if exe._slots.busy:
        return
    waiters, exe._idle_waiters = exe._idle_waiters, []
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _end_stranded(exe: Core) -> None:
    """Someone waits for the executor to be idle (the block's exit, shutdown()), and
    the jobs still waiting in the key lines can never start (KeyedSlots.stranded): the
    queued ones are cancelled, as a shutdown that cancels cancels queued jobs (abort),
    and a submit() still waiting raises the RuntimeError of a shut down executor (as
    refuse_submits turns it away). Left waiting, they kept the wait from ever ending.
    (Under fail-fast the key's error has done this already: abort drains the lines.)"""
    keyed = exe._keyed
    if keyed is None or not keyed.stranded:
        return
    for entry in keyed.take_line():
        if isinstance(entry, Queued):
            entry.future.cancel()  # (take_line made it leave: no drop to count)
            exe._outcomes.cancelled += 1
        else:
            exe._slots.refuse(entry, refused(exe))


def close(exe: Core) -> None:
    exe._state = State.CLOSED
    exe._slots.close()
    exe._maps.clear()
    exe._outcomes.clear()
    exe._spared = None
    for handle in (exe._deadline_handle, exe._grace_handle):
        if handle is not None:
            handle.cancel()
    # Another waiter (shutdown() and the block's exit may both wait) can have come in
    # after ours was woken: its wake-up is already scheduled and must still run.
    if exe._idle_handle is not None and not exe._idle_waiters:
        exe._idle_handle.cancel()
        exe._idle_handle = None


def close_when_idle(exe: Core) -> None:
    """Close once no job runs or waits, with nobody waiting for that (shutdown() that did
    not wait, or whose wait was cancelled), unless the block will close."""
    if exe._state is State.CLOSED:
        return
    waiter: asyncio.Future[None] = exe._loop.create_future()
    waiter.add_done_callback(lambda _: _closed_idle(exe))
    exe._idle_waiters.append(waiter)
    check_idle(exe)


def _closed_idle(exe: Core) -> None:
    in_body = exe._block is not None and exe._block.in_body
    if not in_body and exe._state is not State.CLOSED and not exe._slots.busy:
        close(exe)


def report_unretrieved(exe: Core) -> None:
    """The executor is being collected: report a job error the policy named but nobody
    was given (no block, and no shutdown() that may wait: one from a job of an unrelated
    executor does not raise it), as asyncio reports a task exception that was never
    retrieved, rather than lose it silently."""
    try:
        error = exe._outcomes.unretrieved
        if error is None:
            return
        exe._loop.call_exception_handler(
            {
                "message": "CoroutineExecutor job exception was never retrieved"
                " (no async with block, and no shutdown() that waits, raised it)",
                "exception": error,
            }
        )
    except AttributeError:  # __init__ raised before the attributes existed
        pass
