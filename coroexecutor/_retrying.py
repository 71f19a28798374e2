"""A job's attempts under a retry policy, and the note on its final error.

The first attempt is the job's own coroutine, made when it was submitted; its runner
calls :func:`after_failure` when it raises, in its ``except`` clause: nothing here runs
for a job that succeeds. When the policy asks for another attempt, the runner awaits
:func:`more_attempts`, which gives the slot back for the pause and takes one again for
each further attempt (a fresh call ``fn(*args, **kwargs)``, with the executor's
``job_timeout`` around it) through the executor's :class:`AttemptSlots`. The job's task
stays the same from the first attempt to the last, so cancelling it, or the executor
cancelling its jobs, reaches the pause too.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol, cast

from ._jobs import as_coroutine, wrapped_job
from ._notes import CALL_KEEPERS, annotate_coroutine_error, annotate_job_error, safe_repr
from ._retry import RetryPolicy, next_delay

if TYPE_CHECKING:
    from ._map_state import MapJobs

__all__ = [
    "Answered", "AttemptSlots", "Call", "after_failure", "failed_call", "more_attempts",
    "run_attempts", "stopped", "unrun_failed_call",
]

_sleep = asyncio.sleep
_CancelledError = asyncio.CancelledError


class AttemptSlots(Protocol):
    """What the attempts of a job need from their executor (on its loop thread)."""

    def pause(self) -> None:
        """An attempt failed and another one follows: give the job's slot back (the
        next job in line takes it before the job's own next step, so even after a pause
        of 0 seconds), count the job as waiting, and count one retry."""

    async def resume(self) -> None:
        """Wait for a slot for the next attempt, ahead of every job that has not started
        yet, and for a start token under a rate limit. Returns holding the slot, the job
        counted as running again. If cancelled, leaves the line (a slot granted meanwhile
        goes to the next in line) and raises."""

    def abandon(self) -> None:
        """The job is cancelled in its pause or while waiting for a slot: it ends holding
        none, so its end must give back no slot (it counts as waiting until then)."""

    def failed(self, error: BaseException) -> None:
        """The job ends with ``error`` (its last attempt's, or its cancellation), in its
        own last step: its map, if any, learns of it before another task runs."""

    def stopping(self) -> bool:
        """Whether the executor cancels its jobs (fail-fast, shutdown(wait=False), the
        deadline, ...): no attempt starts after that, so a failed attempt is the last."""

    def cancelled(self, task: asyncio.Task[Any]) -> bool:
        """Whether the executor has cancelled ``task``, the job's (with all its jobs, or
        alone: its map closed): a job_timeout that passes then leaves its clean-up be."""

    @property
    def timing_out(self) -> set[asyncio.Future[Any]]:
        """The tasks a job_timeout has cancelled, until that attempt ends (see wrapped_job)."""


class Call:
    """A job's call and how its failures are handled: what a runner needs only once the
    job has failed."""

    __slots__ = (
        "annotate", "args", "fn", "job_timeout", "kwargs", "map_index", "owner", "policy"
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy | None,
        annotate: bool,
        job_timeout: float | None = None,
        map_index: int | None = None,
        owner: MapJobs | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.policy = policy
        self.annotate = annotate
        self.job_timeout = job_timeout
        self.map_index = map_index
        self.owner = owner  # the job's map, if any: a map left early retries nothing

    def note(
        self,
        exc: BaseException,
        attempts: int,
        first: Coroutine[Any, Any, Any] | None = None,
    ) -> None:
        """Note on ``exc`` which job failed with it (if annotate_errors says so).

        A job with a retry policy is named from its call as it was made. A job without
        one comes here only for its job_timeout, hook, map or Adaptive limit, and is
        named as the same job is in-line (see run_job): from ``first``, its coroutine,
        by its frame (see describe_coroutine), unless that is the executor's wrapper of
        a function's awaitable that is no coroutine, named from its call. Naming every
        job here from its call made the note depend on those options (brk20 finding 2)."""
        if not self.annotate:
            return
        if (
            self.policy is None
            and first is not None
            and getattr(first, "cr_code", None) not in CALL_KEEPERS
        ):
            annotate_coroutine_error(exc, first, map_index=self.map_index)
        else:
            annotate_job_error(
                exc, self.fn, self.args, self.kwargs, attempts=attempts, map_index=self.map_index
            )

    def drop(self) -> None:
        """The job is over: let go of its function and arguments. The frames that hold
        this call (its runner's, the policy's) are kept by the traceback of the job's
        error, or of its CancelledError in a cancelled task, for as long as the caller
        keeps the task or the future; a stdlib future keeps no job's arguments."""
        self.fn = _dropped
        self.args = ()
        self.kwargs = _NO_KWARGS
        self.owner = None  # the map's state: its function, its jobs


_NO_KWARGS: dict[str, Any] = {}  # never mutated


def _dropped(*args: Any, **kwargs: Any) -> NoReturn:
    """The function of a Call whose job is over (see Call.drop): never called."""
    raise RuntimeError("the job is over: its call was dropped")


def after_failure(
    call: Call,
    attempt: int,
    exc: BaseException,
    *,
    ask: bool = True,
    first: Coroutine[Any, Any, Any] | None = None,
) -> float | None:
    """Attempt number ``attempt`` raised ``exc``: the delay before the next attempt, or
    None when the job ends with ``exc`` (then noted, if the call says so: the caller
    re-raises it with a bare ``raise``, so its traceback stays as the job left it).
    ``ask`` false: the policy is not asked (the core's job was stopped: see stopped).
    ``first``: the job's coroutine, which names a job with no policy (see Call.note).

    Called in the caller's ``except`` clause, so an error of the policy's (which this
    raises, noted) has ``exc`` as its ``__context__``."""
    policy = call.policy
    if policy is not None and ask:
        try:
            delay = next_delay(policy, attempt, exc)
        except BaseException as policy_error:
            call.note(policy_error, attempt)
            raise
        if delay is not None:
            return delay
    call.note(exc, attempt, first)
    return None


def stopped(call: Call, cancelling: bool) -> bool:
    """Whether the core's job was stopped while its attempt ran: its executor cancels its
    jobs (``cancelling``: fail-fast, shutdown(wait=False), the deadline, ...), its map was
    left early, or (Python 3.11+, where a task counts the cancels asked of it) its task
    was cancelled. An attempt that caught that CancelledError and raised another error
    is then not retried: the job ends with that error, as a task would. (Before 3.11 a
    cancel of the job's own task alone cannot be told.) Not for the bridge's jobs, whose
    core task a job_timeout cancels while a blocking call it cannot interrupt runs on:
    that call's own outcome is the attempt's (see sync_bridge._retries)."""
    if cancelling or (call.owner is not None and call.owner.closed):
        return True
    if sys.version_info >= (3, 11):
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop runs: the attempts are driven by hand (tests)
            return False
        return task is not None and task.cancelling() > 0
    return False


def failed_call(
    policy: RetryPolicy | None, fn: Callable[..., Any], exc: Exception
) -> tuple[Coroutine[Any, Any, Any], RetryPolicy] | None:
    """As its job started, ``fn(*args, **kwargs)`` raised ``exc`` before it returned an
    awaitable (or returned none): the job's first attempt has failed, and ``policy`` is
    asked about it now, once. Returns None if it gives up (or there is none): ``exc``
    then goes where it goes without retries (out of submit(), or the job error of a
    queued job or a map's input), and the policy's own error, raised here, goes there
    in its place. Else the job starts all the same, with what its runner needs to go on
    as for any first attempt that failed (its slot given back for the pause, the retry
    counted, the attempts in the note, one hook call at the end): a first attempt that
    fails with ``exc`` in the job's first step, and the policy to run it under, which
    gives the answer it gave here when the runner asks about that failure.

    (Only a callable ``fn``: a coroutine object passed as ``fn`` is a mistake, reported
    as such by the caller, never retried.)"""
    if policy is None or not callable(fn):
        return None
    delay = next_delay(policy, 1, exc)
    if delay is None:
        return None
    return _failing(exc), Answered(policy, delay)


async def _failing(exc: BaseException) -> NoReturn:
    try:
        raise exc
    finally:
        del exc  # no cycle: the error's traceback holds this frame


_FAILING = _failing.__code__


def unrun_failed_call(first: object) -> bool:
    """Whether ``first``, a job's first attempt, is the one failed_call() made and has not
    run: the job's task ended (it was cancelled) before its first step, the step that
    would have failed that attempt and paused the job for its retry."""
    return getattr(first, "cr_code", None) is _FAILING and (
        inspect.getcoroutinestate(cast("Coroutine[Any, Any, Any]", first)) == inspect.CORO_CREATED
    )


class Answered:
    """A job's retry policy, asked about its first attempt as the job started (see
    failed_call): that answer for attempt 1, the policy's own for the others."""

    __slots__ = ("delay", "policy")

    def __init__(self, policy: RetryPolicy, delay: float) -> None:
        self.policy = policy
        self.delay = delay

    def __call__(self, attempt: int, exc: BaseException) -> float | None:
        return self.delay if attempt == 1 else self.policy(attempt, exc)

    def __repr__(self) -> str:
        return safe_repr(self.policy)  # as messages about the policy name it: never raises


async def more_attempts(slots: AttemptSlots, call: Call, delay: float) -> Any:
    """Attempt 1 failed and the policy asked for another one after ``delay`` seconds:
    pause without the slot, then run attempts 2, 3, ... as the policy asks. Returns the
    first result, or raises the last attempt's error.

    Cancellation: in a pause or the wait for a slot after it, the wait ends at once, no
    further attempt starts, and the job ends cancelled holding no slot (see
    AttemptSlots.abandon); in an attempt, as for any job.

    The job's call is read from ``call`` alone, which the runner drops when the job ends
    by an error: this frame, kept by its traceback, holds nothing else of the job's.
    """
    attempt = 1
    while True:
        slots.pause()
        try:
            # A pause of 0 seconds yields too: the slot just given back goes to the next
            # in line before this step (see AttemptSlots.pause), and only then does the job
            # line up again ahead of those that have not started.
            await _sleep(delay)
            await slots.resume()
        except BaseException:  # cancelled, or refused a slot (the executor is cancelling)
            slots.abandon()
            raise
        attempt += 1
        try:
            # (The note names the job by its call. A value returned instead of an
            # awaitable shows in the TypeError as on the first attempt: by its type only
            # under annotate_errors=False.)
            coro = as_coroutine(
                call.fn(*call.args, **call.kwargs), call.fn,
                call.args if call.annotate else None, call.kwargs, keep_call=False,
            )
            if call.job_timeout is not None:
                coro = wrapped_job(
                    call.job_timeout, coro, call.fn, call.args, call.kwargs,
                    arguments=call.annotate, cancelled=slots.cancelled,
                    timing_out=slots.timing_out,
                )
            return await coro
        except BaseException as exc:
            # Only an Exception is retried: next_delay declines the rest (cancellation,
            # KeyboardInterrupt, SystemExit), and cancellation gets no note.
            next_one = after_failure(
                call, attempt, exc, ask=not stopped(call, slots.stopping())
            )
            if next_one is None:
                raise
            delay = next_one
        # Out of the except clause before the pause: the error and its traceback (the
        # frames of the failed attempt) are not kept alive while the job waits.


async def run_attempts(slots: AttemptSlots, call: Call, first: Coroutine[Any, Any, Any]) -> Any:
    """Run a job's first attempt, ``first``, then as many more as its policy asks for.

    The runner of a job that does not settle in-line (a hook, a ``job_timeout``, an
    Adaptive limit): what an in-line runner does around its own ``await``, the map told
    of the job's error in the job's last step included (see AttemptSlots.failed)."""
    try:
        try:
            if call.job_timeout is None:
                return await first
            # (``first`` stays the job's own coroutine: a job with no policy is named
            # from it if it fails, see Call.note.)
            return await wrapped_job(
                call.job_timeout, first, call.fn, call.args, call.kwargs,
                arguments=call.annotate, cancelled=slots.cancelled,
                timing_out=slots.timing_out,
            )
        except BaseException as exc:
            delay = after_failure(
                call, 1, exc, ask=not stopped(call, slots.stopping()), first=first
            )
            if delay is None:
                raise
        return await more_attempts(slots, call, delay)
    except BaseException as exc:
        call.drop()  # see more_attempts
        slots.failed(exc)
        raise
