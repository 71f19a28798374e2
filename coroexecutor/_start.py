"""The start of a job: the one function that starts every job (the runners that end it in
its own last step are in _runners; settle(), where every job's slot comes back, in _settle).

Functions of the executor (the first argument), on its event loop thread. submit(),
submit_nowait(), a queued job's start and map() all start jobs through start_job().
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import types
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable

from ._context import job_position
from ._errors import not_a_task
from ._jobs import JobTask, as_coroutine, never, prime, wrapped_job
from ._lifecycle import cancel_late
from ._pauses import Pauses, cancelled_job, retried_unpaused
from ._policy import JobKind
from ._retry import INHERIT, Inherit, RetryPolicy
from ._retrying import Answered, Call, failed_call, run_attempts
from ._runners import run_job
from ._settle import failed_at_start, on_job_done
from ._state import State
from ._taking import start_failed

if TYPE_CHECKING:
    from ._core import Core
    from ._map_state import MapJobs

__all__ = ["start_job"]

_set_position = job_position.set
_CoroutineType = types.CoroutineType
_Task = asyncio.Task
_CORO_CLOSED = inspect.CORO_CLOSED
_CANCELLING = State.CANCELLING
_POLICY = JobKind.POLICY  # (an enum member's attribute read costs about 60 ns on 3.11)
# A job kept for its retries or its note keeps its call's keyword arguments, read only. An
# empty dict is kept as this one: the call's own (a new dict per submit) then goes back
# to the allocator at once, about 700 instructions a job less (callgrind, uvloop).
_NO_KWARGS: dict[str, Any] = {}


#
# Starting
#


def start_job(
    exe: Core,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str,
    kind: JobKind = JobKind.POLICY,
    index: int | None = None,
    policy: RetryPolicy | Inherit | None = INHERIT,
    owner: MapJobs | None = None,
) -> asyncio.Future[Any]:
    """Start ``fn(*args, **kwargs)`` as a job, in a slot the caller already holds.

    Every job starts here. In-line jobs (no on_job_done hook, no job_timeout) run under
    run_job(), which settles them in their own last step: one call of fn, one runner
    coroutine, one task and no done callback. Their JobTask primes the runner if it is
    cancelled before its first step; a task from the loop's task factory gets a runner
    primed now, as that task's cancel is not ours. Other jobs get a done callback, which
    settles them; one that an eager task factory ran to its end inside create_task meets
    fail-fast as its task comes back (see failed_at_start).

    If starting raises, the slot is given back and the error propagates (``where``
    names the call in the message for a coroutine object passed as ``fn``). But if
    ``fn``'s call raised an Exception (or returned no awaitable) and the job's retry
    policy retries that, the job starts as one whose first attempt failed (see
    failed_call).

    ``index``: a map job's input position, ``policy``: a map's own retry policy, and
    ``owner``: the map; they matter only once the job fails (the note on its error, its
    retries, and the map's window, which a pausing job leaves: see MapJobs).
    """
    runner: Coroutine[Any, Any, Any] | None = None
    coro: Any = None
    settled = False
    loop = exe._loop
    # A map's job runs in its own copy of the map's context (see MapJobs.context), fn's
    # call included: what a plain fn sets, and a task it starts, are the job's. (The call
    # of an async def function runs none of its code: it is made as it is, which saves
    # entering the context twice, about 1,500 instructions a job in callgrind.)
    job_context = None if owner is None else owner.context.copy()
    try:
        try:
            if owner is None or owner.runs_no_code:
                coro = fn(*args, **kwargs) if kwargs else fn(*args)
            else:  # a plain fn's own call is part of the job (a map's: no keywords)
                assert job_context is not None  # (made for every map job)
                coro = job_context.run(fn, *args)
            if type(coro) is not _CoroutineType:
                coro = as_coroutine(coro, fn, args if exe._annotate else None, kwargs)
        except Exception as exc:  # the job's first attempt failed as it started
            retried = failed_call(
                exe._retry if isinstance(policy, Inherit) else policy, fn, exc
            )
            if retried is None:
                raise
            coro, policy = retried
        # The job's retry policy. (An identity test: isinstance() costs a call a job.)
        retry: RetryPolicy | None = exe._retry if policy is INHERIT else policy  # type: ignore[assignment]  # INHERIT is the only Inherit: `is` does not narrow
        if exe._inline:
            if retry is None:  # no retries: the common case
                runner = run_job(exe, coro, index, owner)
            else:  # the call is kept until the job ends only for retries
                runner = run_job(exe, coro, index, owner, fn, args, kwargs or _NO_KWARGS, retry)
            reader = exe._task_factory_of  # None: asyncio's own loop (see factory_reader)
            if (loop._task_factory if reader is None else reader(loop)) is None:  # type: ignore[attr-defined]  # asyncio's loops have it
                # What the loop's create_task does with no task factory, minus a call.
                # (loop= costs a keyword argument, but without it the Task looks up the
                # running loop, which on CPython makes a getpid() system call.)
                if job_context is None:
                    task: asyncio.Future[Any] = JobTask(runner, loop=loop)
                else:
                    task = job_context.run(JobTask, runner, loop=loop)
                exe._running[coro] = task
                return task
            prime(runner)
            try:
                if job_context is None:
                    task = loop.create_task(runner)
                else:
                    task = job_context.run(loop.create_task, runner)
            except BaseException as exc:
                if inspect.getcoroutinestate(runner) == _CORO_CLOSED and isinstance(
                    exc, (KeyboardInterrupt, SystemExit)
                ):
                    # An eager task factory ran the job to its end inside create_task,
                    # and its KeyboardInterrupt or SystemExit came out of it, as
                    # asyncio's eager start re-raises them: the runner has settled the
                    # job (slot, counts, policy) already, so only pass the error on.
                    # (A factory that closed the runner, which then never ran, and
                    # raised its own error has settled nothing: start_failed does.)
                    settled = True
                raise
            if type(task) is not _Task and not isinstance(task, _Task):
                raise not_a_task(task)  # which nothing would run: the job fails to start
            if not task.done():  # an eager task factory may have run the job to its end
                exe._running[coro] = task
                if exe._state is _CANCELLING:  # its first step stopped us
                    cancel_late(exe, task)
            return task
        job = coro
        if retry is not None or (owner is not None and kind is _POLICY) or (
            exe._annotate and (exe._job_timeout is not None or index is not None)
        ):
            # The attempts loop does the job_timeout's wrapping too, and tells a map of
            # its job's error in the job's last step. (A job with only a hook is noted
            # from its coroutine by on_job_done: no wrapper.)
            call = Call(
                fn, args, kwargs or _NO_KWARGS, retry, exe._annotate, exe._job_timeout, index,
                owner,
            )
            job = runner = run_attempts(Pauses(exe, owner), call, coro)
        elif exe._job_timeout is not None:
            job = runner = wrapped_job(
                exe._job_timeout, coro, fn, args, kwargs or _NO_KWARGS,
                arguments=exe._annotate, cancelled=functools.partial(cancelled_job, exe),
                timing_out=exe._outcomes.timing_out,
            )
        if exe._task_factory_of is not never:  # debug mode: its thread check (factory_reader)
            exe._task_factory_of(loop)  # type: ignore[misc]  # never None unless in-line
        # The task's context, and those of the tasks it starts, know they run in a job of
        # ours (run_job does this for in-line jobs). create_task copies the current
        # context, and an eager first step runs in that copy.
        ctx = contextvars.copy_context() if job_context is None else job_context
        ctx.run(_set_position, exe)
        task = ctx.run(loop.create_task, job)
        if type(task) is not _Task and not isinstance(task, _Task):
            raise not_a_task(task)  # from the loop's task factory (see not_a_task)
    except BaseException:
        if not settled:  # else the job ran and settled itself (see above)
            start_failed(exe, fn, where, runner, coro)
        raise
    if runner is not None:
        _close_when_done(task, coro, counting=exe if type(policy) is Answered else None)
    exe._running[task] = task
    if exe._tuner is not None:
        exe._tuner.started(task)
    if owner is not None and kind is _POLICY:
        # Before the settling callback: the map stops starting its inputs before the
        # job's slot (or its key's room) goes on. Under an eager task factory, settling
        # may start the next job in the key's line at once, its first step included.
        # (A job an eager task factory ran to its end inside create_task: its map looks
        # at it as it gets it back, see _map_run and _queued.)
        task.add_done_callback(owner.on_job_done)
    # An eager task factory may have run the job to its end inside create_task: then
    # failed_at_start notes its error, and its callback does not (a note built again a
    # turn later may differ, an argument's repr: the executor's own, passed to a job that
    # submits jobs, shows its counts; the job would be named twice).
    ended = task.done()
    if runner is None and exe._annotate and not ended:
        # If it fails, it is named from its coroutine, kept here: Task.get_coro() is None
        # once an eager task has finished (and crashed CPython 3.12 before 3.12.5).
        task.add_done_callback(functools.partial(on_job_done, exe, kind, coro))
    else:
        task.add_done_callback(
            exe._on_job_done if kind is _POLICY else exe._on_result_job_done
        )
    if ended:
        # Fail-fast stops us now if it failed, not from its callback a turn later (which
        # settles it).
        failed_at_start(exe, kind, coro if runner is None and exe._annotate else None, task)
    elif exe._state is _CANCELLING:  # its first step stopped us
        cancel_late(exe, task)
    return task


def _close_when_done(
    task: asyncio.Future[Any], coro: Coroutine[Any, Any, Any], *, counting: Core | None
) -> None:
    """If a wrapper never runs (its task cancelled before its first step), close the job's
    coroutine, the one coroutine it holds: no "never awaited" warning. (A closure made
    here, not in start_job: there it would make ``coro`` a cell on every job's start.)
    ``counting``: the executor of a job whose call failed as it started, whose retry
    then counts all the same (see retried_unpaused)."""
    if counting is None:
        task.add_done_callback(lambda _: coro.close())
        return

    def count_and_close(_: object) -> None:
        retried_unpaused(counting, coro)
        coro.close()

    task.add_done_callback(count_and_close)
