"""The end of a job: the runner coroutines an in-line job's task runs, which settle the
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

__all__ = ["first_failure", "job_raised", "later_attempts", "run_job", "run_retrying"]

_set_position = job_position.set
_get_position = job_position.get
_current_task = asyncio.current_task
_CancelledError = asyncio.CancelledError
_CANCELLING = State.CANCELLING


async def run_job(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    kind: JobKind,
    index: int | None = None,
    owner: MapJobs | None = None,
) -> Any:
    """The coroutine an in-line job's task runs: it settles the job's slot, counts and
    policy in the job's own last step, so no done callback (and no extra turn of the
    loop) is needed per job. ``index``: a map job's input position, for the note on its
    error (the job itself is named from its coroutine: see describe_coroutine);
    ``owner``: its map, told of its error (see MapJobs.job_failed)."""
    if _jobs.priming:  # only under _jobs.prime(): see JobTask
        try:
            await _jobs.prime_point()
        except _CancelledError as exc:
            coro.close()  # cancelled before its first step: the job never runs
            job_raised(exe, coro, exc, kind, owner)
            raise
        except BaseException:
            coro.close()  # closed before it became a task (GeneratorExit): start_job settles
            raise
    # The job's context (its task's own copy) and every task started inside the job
    # know they run in a job of ours: see _lifecycle.may_wait. Not before priming, which
    # runs in the submitter's context. A map's job starts marked (see MapJobs.context).
    if _get_position() is not exe:
        _set_position(exe)
    try:
        result = await coro
    except BaseException as exc:
        if exe._annotate:
            annotate_coroutine_error(exc, coro, map_index=index)
        job_raised(exe, coro, exc, kind, owner)
        raise
    settle(exe, coro, None, None, kind)
    return result


async def run_retrying(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    kind: JobKind,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    index: int | None,
    policy: RetryPolicy,
    owner: MapJobs | None,
) -> Any:
    """run_job() for a job with a retry policy: on a failure the policy may ask for more
    attempts (see _retrying), which keep the job's task, key and settling. ``owner``:
    the map the job belongs to, if any (its pauses leave the map's window)."""
    if _jobs.priming:  # only under _jobs.prime(): see JobTask
        try:
            await _jobs.prime_point()
        except _CancelledError as exc:
            retried_unpaused(exe, coro)  # (a call that failed as the job started)
            coro.close()
            job_raised(exe, coro, exc, kind, owner)
            del fn, args, kwargs  # see below
            raise
        except BaseException:
            coro.close()
            raise
    if _get_position() is not exe:  # (see run_job)
        _set_position(exe)
    try:
        result = await coro
    except BaseException as exc:
        retrying = first_failure(exe, coro, kind, fn, args, kwargs, policy, index, owner, exc)
        # From here the job's call is in ``retrying`` alone: the traceback of the job's
        # error (or of a cancelled task's CancelledError) keeps this frame for as long as
        # the caller keeps the task.
        del fn, args, kwargs
        if retrying is None:
            raise
    else:
        settle(exe, coro, None, None, kind)
        return result
    return await later_attempts(exe, coro, kind, owner, *retrying)


def first_failure(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    kind: JobKind,
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
    caller re-raises it). The policy's own error ends the job in its place, raised here."""
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
    kind: JobKind,
    owner: MapJobs | None,
    call: Call,
    delay: float,
) -> Any:
    """The attempts after the first (which failed: see first_failure), then the job's end:
    its outcome is the last attempt's."""
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
