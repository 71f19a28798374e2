"""The executor's lifecycle on its loop: the one canceller (abort), the async-with block it
may interrupt, admitting the backlog and resizing it (the idle signal and closing are in
``_idle``).

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._errors import refused
from ._idle import check_idle
from ._map_reader import cancel_readers
from ._map_state import follow_limit
from ._policy import Cause, cancelling, loop_going_down
from ._state import State

if TYPE_CHECKING:
    from ._core import Block, Core

__all__ = [
    "abort", "abort_again", "admit", "cancel_again", "cancel_late", "interrupted",
    "fail", "fail_as_loop_ends", "refusal", "set_limit", "tearing_down",
]

_current_task = asyncio.current_task


def refusal(exe: Core) -> RuntimeError:
    """The error for a slot waiter turned away because the executor cancels its jobs."""
    return refused(exe, f"{exe!r} is cancelling its jobs")


#
# The canceller
#


def fail(exe: Core, exc: BaseException) -> None:
    """A job failed outside settle() (before it began, or its backlog start raised)."""
    outcomes = exe._outcomes
    if not outcomes.suppress and outcomes.names(exe._state is State.CANCELLING):
        abort(exe, Cause.JOB_ERROR, exc)


def fail_as_loop_ends(exe: Core, error: BaseException) -> None:
    """A job answered the cancel of the loop going down (see loop_going_down) with
    ``error``, under fail-fast: it is the first error, which asyncio itself reports as
    the run ends ("unhandled exception during asyncio.run() shutdown"), so the executor
    does not report it again when it is collected.

    asyncio's own end of the loop runs us (loop_going_down asks), so fail-fast has nothing
    left to stop: asyncio has cancelled every task on the loop, the other jobs and the
    block's task among them, and waits for their clean-up. Cancelling them again would
    interrupt that clean-up (another job's ``finally: await conn.close()``) at its next
    await. So only what waits for a slot is dropped, as for the loop's end itself. (A
    loop that other code ends by cancelling every task is a program that goes on: its
    jobs' errors never come here, and fail-fast acts as ever.)"""
    outcomes = exe._outcomes
    outcomes.stop(Cause.JOB_ERROR, error)  # the first error, as abort() records it
    abort(exe, Cause.LOOP_END)  # cancels nothing the loop's end has cancelled
    if outcomes.first_error is error:
        outcomes.loop_reports = True


def interrupted(exe: Core, exc: BaseException) -> None:
    """A job raised ``exc``: KeyboardInterrupt or SystemExit ends the event loop whatever
    the error policy says (asyncio re-raises them out of it), so, with the policy not
    stopping us (suppress_task_errors), stop here: no queued job starts meanwhile."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        abort(exe, Cause.INTERRUPT)


def abort(
    exe: Core,
    cause: Cause,
    error: BaseException | None = None,
    *,
    ended: asyncio.Future[Any] | None = None,
) -> None:
    """Cancel every running and queued job. Idempotent; the first cause wins (but one
    with something to raise takes the place of shutdown(): see Outcomes.stop).

    The only place that cancels jobs in bulk: fail-fast, the deadline, an error or a
    cancellation of the block's body, shutdown(wait=False), its grace period, a
    cancelled shutdown(), and the loop going down all come here. Each job is cancelled
    through Outcomes.cancel, so once: a job the executor has cancelled before (a map's
    job its map's error or close cancelled) is not cancelled again, and its clean-up
    runs to its end (only cancel_again, for a wait for the jobs that is cancelled
    itself, cancels again).

    ``ended``: the task of the failed job when abort runs outside it, in the task that
    started it (a job an eager task factory ran to its end inside its start: see
    _settle.failed_at_start). It stands for the current task below: that one only
    started the job, is in no job's last step and asked for no stop, so it is not
    spared: a job of ours is cancelled as every other job is (as when the failed job's
    done callback, which runs in no task, was what stopped us)."""
    took_over = exe._outcomes.stop(cause, error)
    if exe._state is State.CANCELLING:
        if took_over and cause is Cause.JOB_ERROR:
            _job_error_after_shutdown(exe, ended)
        return
    if exe._state is State.CLOSED:
        return
    exe._state = State.CANCELLING
    if exe._deadline_handle is not None:
        exe._deadline_handle.cancel()
    # A job of ours running this is either in its last step (it failed, or it succeeded
    # and a queued job it started failed: a cancel now would turn its success into a
    # cancellation) or the caller of shutdown(wait=False), which goes on. Either way it
    # is not cancelled now; cancel_again cancels it if the wait for the jobs is
    # cancelled, so it cannot keep a cancelled block waiting.
    current = exe._spared = _current_task(exe._loop) if ended is None else ended
    # In a job's own last step its task is not done yet, and cancelling a task that
    # awaits it (the body, another job; directly, through the future submit_nowait()
    # returned, or a gather) passes the cancel on to it: its outcome would become a
    # cancellation. So there, a task that waits for a future is cancelled once the step
    # is over (it cannot run before: what it awaits is pending), the way
    # asyncio.TaskGroup cancels from a done callback; every other one now.
    at_end = current is not None and current is exe._ending
    # The loop going down (see tearing_down) has cancelled every task unfinished on it,
    # the jobs and the readers among them: one more cancel would interrupt their
    # clean-up (a ``finally: await ...``), which asyncio waits for. So a task with a
    # cancellation pending is left to it; only what has not started is dropped.
    going_down = cause is Cause.LOOP_END
    outcomes = exe._outcomes
    later: list[asyncio.Future[Any]] = []
    for task in list(exe._running.values()):
        if task is not current and not (going_down and cancelling(task)):
            if at_end and _awaits(task):
                later.append(task)
            else:
                outcomes.cancel(task)  # (not one it has cancelled already)
    # The readers of maps closed before, still closing their inputs, are cancelled again
    # as their jobs would be: an input's clean-up that waits cannot outlast the deadline,
    # a job's error or the block's error.
    if exe._readers:
        readers = [r for r in exe._readers if not (going_down and cancelling(r))]
        cancel_readers(readers, current)
    for queued in exe._slots.drain(lambda: refusal(exe)):  # uncounted by drain()
        queued.future.cancel()  # (drain() made it leave: no drop to count)
        exe._outcomes.cancelled += 1
    # A job error or the deadline also interrupts the block's body.
    block = exe._block if cause is Cause.JOB_ERROR or cause is Cause.DEADLINE else None
    if block is not None and _interrupt(block, at_end):
        block = None
    # Then the open maps are closed: nothing starts their jobs any more, so a consumer
    # waiting in one (for a result, or for the next item of an async input) would wait
    # for ever without a block whose exit closes them, or would meet a job we cancelled
    # as a bare CancelledError nobody sent its task. Closing a map wakes its consumer,
    # so it comes after the cancels: a consumer abort cancels (the body, a job) meets
    # its cancellation, not the closed map. In a job's last step, where cancels are
    # held back, the maps wait for them (_cancel_after_step).
    if at_end:  # the only place cancels are held back
        if later or block is not None or exe._maps:
            exe._loop.call_soon(_cancel_after_step, exe, later, block)
    elif exe._maps:
        exe._close_maps()
    check_idle(exe, in_last_step=at_end)


def _job_error_after_shutdown(exe: Core, ended: asyncio.Future[Any] | None) -> None:
    """A job error became the first error while shutdown() had the jobs cancelled already
    (see Outcomes.names): it does what it does under fail-fast at any other time. The jobs
    are cancelled but the one abort spared (it called shutdown(wait=False) and goes on,
    unless it is the one failing now); the body is interrupted. In a job's last step,
    as in abort (``ended``: as there)."""
    current = _current_task(exe._loop) if ended is None else ended
    at_end = current is not None and current is exe._ending
    spared, exe._spared = exe._spared, None
    later: list[asyncio.Future[Any]] = []
    # (The spared task may be no job of ours: the body, or a task of the caller's.)
    if spared is not None and spared is not current and spared in exe._running.values():
        if at_end and _awaits(spared):
            later.append(spared)
        else:
            exe._outcomes.cancel(spared)
    block = exe._block
    if block is not None and _interrupt(block, at_end):
        block = None
    if later or block is not None:
        exe._loop.call_soon(_cancel_after_step, exe, later, block)


def _interrupt(block: Block, at_end: bool) -> bool:
    """Interrupt the block's body now, unless a job is in its last step (``at_end``) and
    the body waits for a future, maybe that job's (see abort): False if it must wait
    for the end of the step."""
    if at_end and block.parent is not None and _awaits(block.parent):
        return False
    block.interrupt()
    return True


def _awaits(task: asyncio.Future[Any]) -> bool:
    """Whether ``task`` waits for a pending future, which its cancel would cancel too
    (``_fut_waiter``, in the C and the Python asyncio.Task alike; a task of another
    class is taken not to)."""
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


def _cancel_after_step(
    exe: Core, tasks: list[asyncio.Future[Any]], block: Block | None
) -> None:
    """abort()'s cancels held back from a job's last step, then the closing of the maps
    (see abort)."""
    for task in tasks:
        if not cancelling(task):
            exe._outcomes.cancel(task)
    if block is not None:
        block.interrupt()
    if exe._maps:
        exe._close_maps()


def cancel_again(exe: Core) -> None:
    """Cancel every job still running, the one abort spared included, and those cancelled
    before (the one exception to a cancel per job: the wait for the jobs was cancelled
    itself): a cancellation we cause, so not an error (the state is CANCELLING)."""
    exe._spared = None
    for task in list(exe._running.values()):
        exe._outcomes.cancel_again(task)


def abort_again(exe: Core, cause: Cause) -> None:
    """A wait for the jobs (the block's exit, shutdown()) was cancelled before anything
    cancelled them in bulk: abort(), and cancel again the jobs the executor has cancelled
    one by one before (a map's, for its error or its close), which abort() leaves alone.
    As in cancel_again, a cancelled wait is where a job is cancelled a second time."""
    outcomes = exe._outcomes
    before = [
        t for t in exe._running.values() if t in outcomes.our_cancels or t in outcomes.timing_out
    ]
    abort(exe, cause)
    for task in before:
        outcomes.cancel_again(task)


def cancel_late(exe: Core, task: asyncio.Future[Any]) -> None:
    """A job registered after abort ran (an eager task factory ran its first step inside
    create_task, and abort could not see it yet): cancel it as abort would have, unless
    it is the task abort spared."""
    if task is not exe._spared:
        exe._outcomes.cancel(task)


def admit(exe: Core, freed_by: asyncio.Future[Any] | None = None) -> None:
    """Start queued jobs and grant slot waiters while slots last, unless the loop is
    going down. ``freed_by``: the task of the job whose end freed the slot, when that is
    not the current task (a done callback settled it)."""
    if exe._slots.startable and tearing_down(exe, freed_by):
        return  # every queued job was cancelled instead
    exe._slots.admit()


def set_limit(exe: Core, limit: int) -> None:
    """``max_workers`` set by hand: an Adaptive limit is given up for good, the maps with
    a default window follow the new limit, and growing it starts waiting jobs at once."""
    if exe._tuner is not None:  # (its overload predicate may be what sets it: see tune)
        exe._tuner.retired = True
    exe._tuner = None
    exe._slots.resize(limit)
    follow_limit(exe._maps, limit)
    if exe._bound:  # jobs may start
        admit(exe)


def tearing_down(exe: Core, freed_by: asyncio.Future[Any] | None) -> bool:
    """Whether the loop is going down. Asked before queued jobs start, and where a cancel
    of the current task would cancel the jobs (the exit of a block whose body was
    cancelled, a cancelled wait for the jobs): if so, drop the queued jobs and the slot
    waiters (not an error) and say so, so that no job starts as a new task. The running
    jobs are not cancelled again: the loop's end has cancelled them, and waits for their
    clean-up.

    ``asyncio.run()`` ends by cancelling every task on the loop and waiting for those
    tasks only: a queued job started then (the slot of a job it cancelled, or of one
    that swallowed the cancel, coming free) is a task it never waits for, destroyed
    pending. So when the task freeing the slot has a cancellation pending, and so has
    every other unfinished task on the loop, nobody is left to want new jobs. Only that
    task (``freed_by``, else the current task) is looked at on the way to starting
    queued jobs; the scan of the loop's tasks happens only when it is being cancelled.
    (Python 3.11+: before, a task's pending cancellations cannot be counted.)

    But an ordinary cancel can look the same: the only task left, waiting in
    ``submit()`` under ``asyncio.timeout``, cancelled as the slot it was granted comes
    free; or a body awaiting a job's task under a timeout, which passes its cancel on to
    that job. The timeout takes its cancel back a few turns later, and the program goes
    on, waiting for the jobs queued behind. So the picture is taken for the loop's end
    only when asyncio's own end of the loop is running it: asyncio.run(), an
    asyncio.Runner (uvloop.run and unittest's IsolatedAsyncioTestCase use one) closing,
    found on the stack (in_asyncio_teardown, which loop_going_down asks). A loop ended
    by other code that cancels every task is a program that goes on: its queued jobs
    start, unless a running job's cancel stopped the executor (fail-fast).
    """
    current = freed_by if freed_by is not None else _current_task(exe._loop)
    if current is None or not loop_going_down(current):  # (in_asyncio_teardown too)
        return False
    abort(exe, Cause.LOOP_END)  # cancels nothing the loop's end has cancelled
    return True

