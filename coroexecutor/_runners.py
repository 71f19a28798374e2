"""The end of a job: the runner coroutine every in-line job's task runs, which settles the
job in its own last step (started by _start.start_job; settle() is in _settle).

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable

from . import _jobs
from ._context import job_position
from ._notes import annotate_coroutine_error
from ._pauses import Pauses, retried_unpaused
from ._policy import JobKind, retrieve
from ._retry import RetryPolicy
from ._retrying import Call, after_failure, more_attempts, stopped
from ._settle import settle
from ._state import State

if TYPE_CHECKING:
    from ._core import Core
    from ._map_state import MapJobs

__all__ = ["job_raised", "run_job"]

_set_position = job_position.set
_current_task = asyncio.current_task
_CancelledError = asyncio.CancelledError
_CANCELLING = State.CANCELLING
_POLICY = JobKind.POLICY  # (an enum member's attribute read costs about 60 ns on 3.11)


async def run_job(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    index: int | None = None,
    owner: MapJobs | None = None,
    fn: Callable[..., Any] | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    policy: RetryPolicy | None = None,
) -> Any:
    """The coroutine an in-line job's task runs (every in-line job's, submit()'s plain
    lane included): it settles the job's slot, counts and policy in the job's own last
    step, so no done callback (and no extra turn of the loop) is needed per job.

    ``index``: a map job's input position, for the note on its error (the job itself is
    named from its coroutine: see describe_coroutine); ``owner``: its map, told of its
    error (see MapJobs.job_failed), whose kind is the job's (a return_exceptions map's
    jobs are RESULT; every other job is POLICY). ``policy``: the job's retry policy, if
    it has one, and ``fn``, ``args`` and ``kwargs`` its call, kept for the attempts the
    policy may ask for (see _retrying), which keep the job's task, key and settling.
    (One runner for every in-line job: a job that retries nothing passes none of these,
    yet pays for their places in its frame, about 280 instructions. A tuple of them
    instead, made for a job with a policy, cost such a job 3 % of its time: one more
    object for the collector per job.)

    Part of THE PLAIN LANE (the one hot path written out twice, see
    CoroutineExecutor.submit): a success with nothing waiting for a slot, for idleness or
    for this job, and no key=, is settled here, settle()'s success path written out
    (about 1,100 instructions a job; internals.rst, "The plain lane").
    tests/test_core_lanes.py runs the same scenarios through the lane and the general
    path (``_plain`` off: every job settles in settle())."""
    if _jobs.priming:  # only under _jobs.prime(): see JobTask
        try:
            await _jobs.prime_point()
        except _CancelledError as exc:
            retried_unpaused(exe, coro)  # (a call that failed as the job started)
            coro.close()  # cancelled before its first step: the job never runs
            job_raised(exe, coro, exc, _POLICY if owner is None else owner.kind, owner)
            del fn, args, kwargs  # see below
            raise
        except BaseException:
            coro.close()  # closed before it became a task (GeneratorExit): start_job settles
            raise
    # The job's context (its task's own copy) and every task started inside the job
    # know they run in a job of ours: see _lifecycle.may_wait. Not before priming, which
    # runs in the submitter's context. A map's job starts marked (see MapJobs.context).
    if owner is None:
        _set_position(exe)
    try:
        result = await coro
    except BaseException as exc:
        if policy is None:
            if exe._annotate:
                annotate_coroutine_error(exc, coro, map_index=index)
            job_raised(exe, coro, exc, _POLICY if owner is None else owner.kind, owner)
            raise
        retrying = first_failure(
            exe, coro, fn, args, kwargs, policy, index, owner, exc  # type: ignore[arg-type]  # a policy comes with its call
        )
        # From here the job's call is in ``retrying`` alone: the traceback of the job's
        # error (or of a cancelled task's CancelledError) keeps this frame for as long as
        # the caller keeps the task.
        del fn, args, kwargs
        if retrying is None:
            raise
    else:
        # (No local for the slots, nor for the job's kind: every local of this frame, which
        # every in-line job has, costs each job.)
        if exe._slots.backlog or not exe._plain or exe._idle_waiters or exe._watchers:
            settle(exe, coro, None, None, _POLICY if owner is None else owner.kind)
        else:  # settle() of an in-line success with nothing to wake, written out
            try:
                del exe._running[coro]
            except KeyError:
                pass  # never registered: see settle
            exe._slots.free += 1  # Slots.release() written out (part of the lane's copy)
            exe._outcomes.succeeded += 1
        return result
    return await later_attempts(exe, coro, owner, *retrying)


def first_failure(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    index: int | None,
    owner: MapJobs | None,
    exc: BaseException,
) -> tuple[Call, float] | None:
    """The first attempt of a job with a retry policy ended with ``exc``: its call and the
    pause before the next attempt, or None if ``exc`` ends the job (settled here: the
    caller re-raises it). The policy's own error ends the job in its place, raised here.
    (The job's kind is its map's, or POLICY: see run_job.)"""
    kind = _POLICY if owner is None else owner.kind
    call = Call(fn, args, kwargs, policy, exe._annotate, None, index, owner)
    try:
        delay = after_failure(call, 1, exc, ask=not stopped(call, exe._state is _CANCELLING))
    except BaseException as policy_error:  # the policy failed: the job fails so
        call.drop()
        job_raised(exe, coro, policy_error, kind, owner)
        raise
    if delay is None:
        call.drop()
        job_raised(exe, coro, exc, kind, owner)
        return None
    return call, delay


async def later_attempts(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    owner: MapJobs | None,
    call: Call,
    delay: float,
) -> Any:
    """The attempts after the first (which failed: see first_failure), then the job's end:
    its outcome is the last attempt's."""
    kind = _POLICY if owner is None else owner.kind
    try:
        result = await more_attempts(Pauses(exe, owner), call, delay)
    except BaseException as exc:
        call.drop()
        job_raised(exe, coro, exc, kind, owner)
        raise
    settle(exe, coro, None, None, kind)
    return result


def job_raised(
    exe: Core, coro: object, exc: BaseException, kind: JobKind, owner: MapJobs | None = None
) -> None:
    """An in-line job ends with ``exc`` (its task is not done yet). ``owner``: its map,
    told of its error or cancellation (see MapJobs.job_failed)."""
    task = _current_task(exe._loop)
    if task is not None and not isinstance(exc, _CancelledError):
        task.add_done_callback(retrieve)
    if owner is not None and task is not None:
        owner.job_failed(task, exc)  # first, as from a done callback (see start_job)
    exe._ending = task  # an abort now waits for the end of this step (see abort)
    try:
        settle(exe, coro, task, exc, kind)
    finally:
        exe._ending = None
