"""submit()'s plain lane: the runner of the jobs it starts (the lane itself, the start
written out, is in CoroutineExecutor.submit). The one hot path written out twice: see
internals.rst, "The plain lane"; tests/test_core_lanes.py runs the same scenarios
through the lane and the general path (start_job, run_job, run_retrying, settle)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable

from . import _jobs
from ._context import job_position
from ._notes import annotate_coroutine_error
from ._pauses import retried_unpaused
from ._policy import JobKind
from ._retry import RetryPolicy
from ._runners import first_failure, job_raised, later_attempts
from ._settle import settle

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["run_in_lane"]

_set_position = job_position.set
_CancelledError = asyncio.CancelledError
_POLICY = JobKind.POLICY  # (an enum member's attribute read costs about 60 ns on 3.11)


async def run_in_lane(
    exe: Core,
    coro: Coroutine[Any, Any, Any],
    fn: Callable[..., Any] | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    policy: RetryPolicy | None = None,
) -> Any:
    """THE PLAIN LANE's runner (the one hot path written out twice: see
    CoroutineExecutor.submit, which starts the lane's jobs). run_job() and
    run_retrying() for a job submit() started in the lane, with settle()'s success path
    written out for the common case: nothing waits for a slot, for idleness or for this
    job. ``policy``: the executor's retry policy, if any: then ``fn``, ``args`` and
    ``kwargs`` are the job's call, kept for the next attempts (plain jobs pass only
    ``exe`` and ``coro``: three more arguments cost 280 instructions a job).
    tests/test_core_lanes.py runs the same scenarios through both paths."""
    if _jobs.priming:  # only under _jobs.prime(): see JobTask
        try:
            await _jobs.prime_point()
        except _CancelledError as exc:
            retried_unpaused(exe, coro)  # (a call that failed as the job started)
            coro.close()  # cancelled before its first step: the job never runs
            job_raised(exe, coro, exc, _POLICY)
            del fn, args, kwargs  # see run_retrying
            raise
        except BaseException:
            coro.close()  # closed before it became a task (GeneratorExit): submit settles
            raise
    _set_position(exe)  # see run_job
    try:
        result = await coro
    except BaseException as exc:
        if policy is None:
            if exe._annotate:
                annotate_coroutine_error(exc, coro)
            job_raised(exe, coro, exc, _POLICY)
            raise
        retrying = first_failure(
            exe, coro, _POLICY, fn, args, kwargs, policy, None, None, exc  # type: ignore[arg-type]  # a policy comes with its call
        )
        del fn, args, kwargs  # see run_retrying
        if retrying is None:
            raise
    else:
        slots = exe._slots
        if slots.backlog or exe._idle_waiters or exe._watchers:
            settle(exe, coro, None, None, _POLICY)
        else:  # settle() of an in-line success with nothing to wake, written out
            try:
                del exe._running[coro]
            except KeyError:
                pass  # never registered: see settle
            slots.free += 1  # Slots.release() written out (part of the lane's copy)
            exe._outcomes.succeeded += 1
        return result
    return await later_attempts(exe, coro, _POLICY, None, *retrying)
