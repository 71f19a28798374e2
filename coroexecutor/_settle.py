"""settle(), where every job's slot comes back and its outcome meets the policy, and the
done callback of the jobs that do not settle in their own last step.

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ._idle import check_idle
from ._key_limits import report_key_lost
from ._lifecycle import (
    abort,
    admit,
    fail,
    fail_as_loop_ends,
    interrupted,
    tearing_down,
)
from ._map_state import follow_limit
from ._notes import annotate_coroutine_error
from ._policy import Cause, JobKind, error_of, loop_going_down, retrieve
from ._state import State

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["failed_at_start", "on_job_done", "settle"]

_current_task = asyncio.current_task
_CANCELLING = State.CANCELLING


def on_job_done(
    exe: Core, kind: JobKind, coro: Coroutine[Any, Any, Any] | None, task: asyncio.Future[Any]
) -> None:
    """Done callback of a job that does not complete in-line (an on_job_done hook, a
    job_timeout, an adaptive limit). Reading its error is also what stops asyncio logging
    "Task exception was never retrieved" for jobs whose handle was dropped.

    ``coro``: the job's own coroutine when it runs as its task's and errors are noted
    (else the attempts loop noted them, failed_at_start did, or notes are off): the note
    names it."""
    error = error_of(task)
    if error is not None and coro is not None:
        annotate_coroutine_error(error, coro)
    settle(exe, task, task, error, kind)
    if exe._outcomes.hook is not None:
        exe._outcomes.call_hook(task, exe._loop)


def failed_at_start(
    exe: Core, kind: JobKind, coro: Coroutine[Any, Any, Any] | None, task: asyncio.Future[Any]
) -> None:
    """A job that settles from its done callback (see on_job_done) is over as its start
    returns (an eager task factory ran it to its end inside create_task): if it failed
    and fail-fast must stop the executor, stop it now. The next submit(), submit_nowait()
    or map start is then refused and no queued job starts after it, as when an in-line
    job fails in its first step; a producer that submits without yielding to the loop,
    every slot free, was otherwise accepted until its first wait (brk14 finding 1: 1,999
    jobs after the first had failed), as the callback runs a turn later.

    Only the verdict comes early (Outcomes.stops, and abort). The job still settles from
    its callback, which counts it, gives its slot (and its key's room) back and calls the
    hook: settling here, inside a start, would start the backlog nested in it (see
    _admit_after_job), and the hook needs what the caller of start_job records once it
    has returned (a queued job's QueuedFuture; the bridge, the task submit_nowait()
    gave it). Its error gets its note here (``coro``: as for on_job_done), before abort
    tells anyone of it, and only here: start_job gives such a job a callback that names
    nothing (built twice, the note came twice if an argument's repr changed between)."""
    error = error_of(task)
    if error is None:
        return
    if coro is not None:
        annotate_coroutine_error(error, coro)
    outcomes = exe._outcomes
    ours = bool(outcomes.our_cancels) and task in outcomes.our_cancels  # (left for decide)
    if outcomes.stops(error, kind, exe._state is _CANCELLING, ours=ours) and not (
        loop_going_down(task)  # asyncio.run() ending: settle sees to it (fail_as_loop_ends)
    ):
        abort(exe, Cause.JOB_ERROR, error, ended=task)


def settle(
    exe: Core,
    key: object,
    task: asyncio.Future[Any] | None,
    error: BaseException | None,
    kind: JobKind,
) -> None:
    """The one place a finished job gives its slot back (and its key's room, with key=)
    and meets the policy.

    ``key``: the job's entry in the running jobs. An in-line job's is its coroutine, and
    it settles in its own last step (see _admit_after_job); other jobs' key is their
    task, and they settle from its done callback, by the task that freed the slot.
    ``task``: the job's task (None for an in-line success, which has no need of it unless
    a map waits on it); ``error``: None for success.
    """
    try:
        del exe._running[key]  # (no pop(): a method call per job)
    except KeyError:
        pass  # never registered: an eager task factory ran it to its end in create_task
    slots = exe._slots
    if error is not None or task is not None:
        # (Adaptive jobs settle from a done callback.) A map's default window is the limit.
        tuner = exe._tuner
        if tuner is not None and tuner.tune(slots, exe._loop, key, error) and exe._maps:
            follow_limit(exe._maps, slots.limit)
        slots.release_job(task)
        outcomes = exe._outcomes
        if outcomes.decide(task, error, kind, exe._state is _CANCELLING):
            # asyncio.run() ending cancels every task: a job's cancel then is no failure;
            # an error it answers with is one, but stops nothing (see fail_as_loop_ends).
            if task is None or not loop_going_down(task):
                abort(exe, Cause.JOB_ERROR, error)
            elif error is not None and not isinstance(error, asyncio.CancelledError):
                fail_as_loop_ends(exe, error)
        elif error is not None and exe._state is not _CANCELLING:
            interrupted(exe, error)
    else:
        slots.release()
        exe._outcomes.succeeded += 1
    keyed = exe._keyed
    if keyed is not None:  # key=: its room goes back (an in-line job's task is current)
        try:
            keyed.end(_current_task(exe._loop) if task is None else task)
        except Exception as exc:  # the key's __hash__ or __eq__ (the rest must still run)
            _key_lost(exe, exc, task, in_last_step=key is not task)
    if slots.backlog or (keyed is not None and keyed.line.waiting):
        if key is not task:  # in-line: in the job's own last step
            ending = exe._ending
            exe._ending = _current_task(exe._loop)  # a queued job failing to start aborts
            try:
                _admit_after_job(exe)
            except BaseException as exc:
                if error is None:
                    _backlog_failed(exe, exc)
                raise
            finally:
                exe._ending = ending
        else:
            admit(exe, task)
    if exe._idle_waiters:
        check_idle(exe, in_last_step=key is not task)
    if exe._watchers:
        if task is None:
            task = _current_task(exe._loop)
        wake = exe._watchers.pop(task, None) if task is not None else None
        if wake is not None and not wake.done():
            wake.set_result(None)


def _key_lost(
    exe: Core, exc: Exception, task: asyncio.Future[Any] | None, *, in_last_step: bool
) -> None:
    """A settled job's key could not be found to give its room back: its ``__hash__`` or
    ``__eq__`` raised ``exc`` as the job ended (a key that changed while its job ran: not
    supported, see semantics.rst). Its room stays taken and the key active, so the jobs
    waiting in its line may never start.

    The job keeps its own outcome, as its task and the counts have it. ``exc`` once ended
    an in-line job's task in their place, after the job was counted a success; fail-fast
    never heard of it, nothing woke the block's exit waiting for the job (it hung), and
    asyncio logged "Task exception was never retrieved". It is a job error now, as the
    error of a backlog start in a job's last step is (_backlog_failed): under fail-fast
    it stops the executor and the block raises it; when the policy would not raise it
    (``suppress_task_errors``, or an error already named) it goes to the loop's exception
    handler, as an error in a done callback does, rather than nowhere."""
    loop, outcomes = exe._loop, exe._outcomes
    if outcomes.suppress or not outcomes.names(exe._state is _CANCELLING):
        report_key_lost(loop, exc)
    elif task is not None and loop_going_down(task):
        fail_as_loop_ends(exe, exc)  # as settle does for a job's own error then
    else:
        ending = exe._ending
        if in_last_step:  # a job's last step: its waiters are cancelled after it (abort)
            exe._ending = _current_task(loop)
        try:
            abort(exe, Cause.JOB_ERROR, exc)
        finally:
            exe._ending = ending


def _admit_after_job(exe: Core) -> None:
    """Admit the backlog from a job's own last step (in-line completion).

    With no task factory, a job's task takes its first step in a later turn of the loop,
    so admitting here is safe and costs nothing. A task factory (an eager one runs the
    first step inside create_task) would run the next job's first step nested inside
    this one's last step: each job completing in-line would start the next one deeper in
    the stack (a RecursionError with a long backlog) and keep this job's frame, and its
    result, alive meanwhile. So then admit from a wake-up instead."""
    loop, reader = exe._loop, exe._task_factory_of
    factory = loop._task_factory if reader is None else reader(loop)  # type: ignore[attr-defined]  # as in start_job
    if factory is None:
        admit(exe)
    elif not tearing_down(exe, None):  # asked now, in the job's own last step
        exe._slots.schedule_wake()


def _backlog_failed(exe: Core, exc: BaseException) -> None:
    """Starting the backlog raised in a job's last step, after the job succeeded and was
    counted. Its task ends with ``exc``, which a queued job's future takes over as
    retrieved: without this the error would reach nobody (a RecursionError once did so,
    leaving the block waiting for ever). Report it and treat it as a job error, so the
    policy decides and the block raises it."""
    exe._loop.call_exception_handler(
        {"message": "starting queued jobs raised in a job's last step", "exception": exc}
    )
    task = _current_task(exe._loop)
    if task is not None:
        task.add_done_callback(retrieve)  # reported once, here
    fail(exe, exc)
