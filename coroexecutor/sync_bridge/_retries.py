"""Retries on the bridge (``retry=``): a failed attempt meets the policy, the job pauses
holding no slot, and its next attempt takes a slot ahead of the jobs not started yet.

Each attempt is a run of the job as the bridge runs any job: a coroutine job or a
blocking one the loop governs is a task of the core (so ``job_timeout`` and
``max_per_second`` apply to every attempt), a direct blocking job goes to a worker
thread. The policy is asked on the loop thread, as the core asks it: a worker that sees
a blocking attempt fail leaves the error in its item (``_workers.Failed``) for the loop,
keeping the slot until then. Nothing here runs for a job that succeeds at once: its
``Attempts`` are made when an attempt first fails under a policy.

Every attempt runs in the context the job was given at submit (a copy of the submitting
thread's), as the attempt before it left that context: what one attempt sets, the next
sees, as in the one task a core's job keeps for all its attempts. Each attempt that
ends tells its Attempts where its context is, and the next one runs there. A coroutine
attempt runs in the copy its task makes, as any task does, so what it leaves is copied
from inside that task; a blocking call runs in the context its item gives the worker (a
direct job's own), and no attempt starts before the worker is out of it.

A pausing job's future is PENDING again (``cancel()`` works) and holds, in ``_job``,
the timer of its next attempt: ``cancel()`` of the future, shutdown's cancellation and a
map's ``close()`` end the pause through the same path as they cancel a running task.

Once the job is over, its Attempts let go of its call and context (``drop``), as the
future of a job never retried keeps neither: the caller may keep the future, and its
error, for as long as it likes. Whoever sees the job end drops them: the Scheduler as
it frees the slot of a job the loop ran, a worker as it sets a direct job's future, the
Slots as they count a job cancelled while it waits, ``pause`` a job cancelled instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures._base import CANCELLED_AND_NOTIFIED
from typing import Any, Callable, Optional

from .._notes import annotate_job_error, job_note
from .._retry import INHERIT, RetryPolicy
from .._retrying import Call, after_failure
from ._future import BridgeFuture
from ._job import Job
from ._slots import Slots
from ._workers import WorkItem

__all__ = ["RETRIED", "Attempts", "Retries", "cancels", "give_up"]


class _Retried:
    def __repr__(self) -> str:
        return "<the attempt failed and will be retried>"


# What a job's wrapper task returns for an attempt that will be retried: the future is
# left PENDING, and the task's end pauses the job instead of resolving it.
RETRIED: Any = _Retried()


# What Attempts hold in place of a context before an attempt has ended, and once dropped.
_NO_CONTEXT = contextvars.Context()


class Attempts(Call):
    """A job that has failed under a retry policy: its call (for the policy, the note on
    its final error and the next attempt), the context its next attempt runs in, the
    number of the attempt running or last run, and the pause before the next one."""

    __slots__ = ("attempt", "coroutine_fn", "ctx", "delay", "started")

    def __init__(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        coroutine_fn: bool,
        policy: RetryPolicy,
    ) -> None:
        super().__init__(fn, args, kwargs, policy, future._annotate, map_index=future._map_index)
        self.coroutine_fn = coroutine_fn
        self.ctx = _NO_CONTEXT  # set by every attempt that ends (see Retries.attempts_of)
        self.attempt = 1
        self.delay = 0.0
        self.started: Optional[float] = None  # its first attempt's start, under Adaptive

    def next_job(self, future: BridgeFuture[Any]) -> Job:
        """The Job that runs the next attempt, where the last one left the context."""
        return Job(future, self.fn, self.args, self.kwargs, self.ctx, self.coroutine_fn)

    def drop(self) -> None:
        """The job is over: let go of its context too (see Call.drop)."""
        super().drop()
        self.ctx = _NO_CONTEXT


class Retries:
    """The loop thread's side of the bridge's retries. Its slot work is done under the
    HandOff's lock (given here with the Slots it guards), through the callables HandOff
    gives it: ``route`` (a job that got a slot: None when the loop runs it, else the
    worker item) and ``grant`` (give every free slot away)."""

    def __init__(
        self,
        policy: Optional[RetryPolicy],
        lock: threading.Lock,
        slots: Slots,
        *,
        route: Callable[[Job], Optional[WorkItem]],
        grant: Callable[[], tuple[list[Job], list[WorkItem]]],
        start: Callable[[Job], None],
        dispatch: Callable[[WorkItem], None],
    ) -> None:
        self.policy = policy  # the executor's; a map's own is on each of its futures
        self._lock = lock
        self._slots = slots
        self._route = route
        self._grant = grant
        self._start = start
        self._dispatch = dispatch

    def attempts_of(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        coroutine_fn: bool,
        ctx: Optional[contextvars.Context] = None,
    ) -> Optional[Attempts]:
        """The job's Attempts, made now if a policy applies to it; None if none does.
        (A blocking job whose call returned an awaitable has them already, if a policy
        applies to it: made before the awaitable was awaited, see _tails.await_outcome.)

        ``ctx``: the context the attempt that ends here ran in, as it left it, where the
        next attempt runs; by default a copy of the current one (in a coroutine attempt's
        task, the attempt's own)."""
        attempts: Optional[Attempts] = future._attempts
        if attempts is None:
            policy = future._retry_policy
            if policy is INHERIT:
                policy = self.policy
            if policy is None:
                return None
            attempts = future._attempts = Attempts(future, fn, args, kwargs, coroutine_fn, policy)
        attempts.ctx = contextvars.copy_context() if ctx is None else ctx
        return attempts

    def attempt_cancelled(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        coroutine_fn: bool,
        ctx: Optional[contextvars.Context] = None,
        *,
        timed: bool,
    ) -> None:
        """An attempt of the job ``fn(*args, **kwargs)`` was cancelled, in the caller's
        ``except`` clause: by cancel() or a shutdown, or by the core for its job_timeout,
        whose JobTimeoutError then ends the attempt. Under a policy, that error is retried
        as the policy says, and noted if it ends the job (see after_attempt). Without one,
        the note is kept for resolve to add, since the error is the core's and comes after
        this frame has let go of the call; not when cancel() won, as a cancelled job gets
        no note, nor when the core has no job_timeout (``timed`` False): then the cancel
        is a shutdown's or fail-fast's, and no argument's ``__repr__`` is called for a
        note nobody adds. ``ctx``: see attempts_of."""
        attempts = self.attempts_of(future, fn, args, kwargs, coroutine_fn, ctx)
        if (
            attempts is None
            and timed
            and future._annotate
            and future._state != CANCELLED_AND_NOTIFIED
        ):
            future._timeout_note = job_note(fn, args, kwargs, map_index=future._map_index)

    def job_error(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException,
        coroutine_fn: bool,
        ctx: Optional[contextvars.Context] = None,
    ) -> Optional[BaseException]:
        """An attempt of the job ``fn(*args, **kwargs)`` raised ``exc``, in the caller's
        ``except`` clause: None when it is retried, else the job's error (noted), which may
        be the policy's own. For an awaitable a blocking call returned, ``fn(*args,
        **kwargs)`` is that call: the job is the call and its awaitable together, and its
        note names the call. ``ctx``: see attempts_of."""
        attempts = self.attempts_of(future, fn, args, kwargs, coroutine_fn, ctx)
        if attempts is None:
            if future._annotate:
                annotate_job_error(exc, fn, args, kwargs, map_index=future._map_index)
            return exc
        del fn, args, kwargs, ctx  # see decide
        return decide(attempts, exc, ask=not self.stopped(future))

    def stopped(self, future: BridgeFuture[Any]) -> bool:
        """Whether the job's attempt that just failed is its last, whatever its policy
        says, as the core's (see _retrying.stopped): a shutdown has cancelled the jobs
        that wait (cancel_futures=True, or more), the job's map was closed
        (``_last_attempt``), or cancel() won while the attempt ran (a coroutine job's).
        The job then ends with the attempt's error, as it would without ``retry=``, and
        the policy is not asked: a blocking call that began is never reported cancelled
        (its future fails; one cancel() won over stays cancelled).

        Read without the lock: a shutdown that sets ``cancelling`` after this read (a map's
        close, a cancel() too) comes while the policy decides, or after: if the policy
        retries the attempt, the retry counts and the stop cancels the job as it cancels
        any job between two attempts (see Slots.pause), as in the core, where no stop can
        come between the policy's answer and the pause."""
        return (
            self._slots.cancelling
            or future._last_attempt
            or future._state == CANCELLED_AND_NOTIFIED
        )

    def after_attempt(
        self, future: BridgeFuture[Any], task: asyncio.Future[Any], core: bool
    ) -> bool:
        """A task of a job with Attempts ended and left its future unresolved: True when
        the job pauses for another attempt (its slot is given back here), False when the
        caller resolves the future from the task as usual. ``core``: the task is the
        core's (which counted it as a success or a failure), not an awaitable's tail."""
        if task.cancelled():
            return False
        attempts: Attempts = future._attempts
        exc = task.exception()
        if exc is None:
            if task.result() is not RETRIED:
                return False
        elif future._withdrawn:
            # A blocking job's job_timeout passed while it waited for a worker thread. Its
            # item is still queued, skipped only once a worker gets to it: a retry would
            # make it PENDING again, and that worker would run the stale item.
            attempts.note(exc, attempts.attempt)
            return False
        else:
            # Not from the job (its wrapper decides those): the core's job_timeout.
            error = decide(attempts, exc, ask=not self.stopped(future))
            if error is not None:
                # The caller's resolve is then a no-op. A policy that raised CancelledError
                # cancels the future: the core's caller counts it (count_cancelled).
                give_up(future, error)
                return False
        self.pause(future, None if not core else exc is not None)
        return True

    def count_cancelled(self, task: asyncio.Future[Any]) -> None:
        """The core's task of a job has ended, not cancelled itself, and the job's future
        ended cancelled: the core counted a success or a failure, and the job counts as
        cancelled instead, as its future says (ExecutorStats: cancelled, whoever cancelled
        it). The task ended so when:

        * it returned RETRIED (a success to the core): cancel() came as its failed attempt
          met the policy, which retried it; the retry counts, as in a pause::

            caller thread                        loop thread
                                                 the attempt fails; the policy retries it
            cancel() -> True
                                                 the task ends: the future is cancelled

        * it failed with the core's JobTimeoutError, which reaches the future only after
          the task's end (see resolve): the deadline cut short the clean-up of a cancel()
          of the caller's, which is no cancel of the executor's (see _jobs._with_deadline);
          or cancel() won the future between the task's end and its done callback::

            loop thread
            the deadline's clean-up ends: the task fails with JobTimeoutError
            the grace period ends: cancel_started, future.cancel() -> True
            the task's done callback: the core counts a failure; the bridge's hook

          or the policy raised CancelledError for it (give_up cancelled the future).
        """
        failed = task.exception() is not None
        retried = not failed and task.result() is RETRIED
        with self._lock:
            self._slots.count_cancelled(core_failed=failed, retried=retried)

    def pause(self, future: BridgeFuture[Any], core_failed: Optional[bool]) -> None:
        """The job's attempt failed and is retried: give its slot to the next job in line,
        and run the next attempt after the policy's delay (see Slots.pause)."""
        attempts: Attempts = future._attempts
        tuner = self._slots.tuner
        if tuner is not None:  # before the release
            tuner.paused(future)
        loop = asyncio.get_running_loop()
        with self._lock:
            paused = self._slots.pause(future, core_failed)
            if paused:
                # Under the lock: a cancel() that finds the job pausing finds its timer.
                # The timer holds the future alone, in a context of its own: a handle keeps
                # its context even once cancelled, and a timer the closing loop never
                # cancels (a cancel posted as it stopped) keeps its arguments; the call and
                # context are in the Attempts, which a cancelled job drops.
                future._job = loop.call_later(
                    attempts.delay, self._resume, future, context=contextvars.Context()
                )
            to_start, items = self._grant()
        if not paused:
            future._set_cancelled()  # a no-op if cancel() did it
            attempts.drop()  # the job is over
        elif future._map_window is not None:
            future._map_window.paused(future)  # its map starts another input meanwhile
        self._run(to_start, items)

    def _resume(self, future: BridgeFuture[Any]) -> None:
        """The pause is over: run the next attempt in a free slot, or wait for one ahead
        of every job that has not started yet. (If cancel() took the job out of its pause
        meanwhile, its call is dropped: Slots.resume refuses it before it runs.)"""
        job = future._attempts.next_job(future)
        future._job = None
        future._attempts.attempt += 1
        if future._map_window is not None:
            future._map_window.resumed(future)  # back in its map's window
        with self._lock:
            if not self._slots.resume(job):
                return  # cancelled in its pause, or waiting for a slot
            item = self._route(job)
        self._run([job] if item is None else [], [] if item is None else [item])

    def _run(self, to_start: list[Job], items: list[WorkItem]) -> None:
        for job in to_start:
            self._start(job)
        for item in items:
            self._dispatch(item)


def cancels(error: BaseException) -> bool:
    """The job's error (the policy's own) cancels the job rather than failing it."""
    return isinstance(error, asyncio.CancelledError)


def give_up(future: BridgeFuture[Any], error: BaseException) -> None:
    """The policy gave up on the job, or failed: fail its future with ``error``, the
    job's error (decide's). A policy that raises CancelledError cancels the job
    instead, of either kind: a coroutine job that raises CancelledError ends cancelled
    (its task does, whoever raised it), so does the core's task when its policy raises
    it, and the policy is asked on the loop thread for a blocking job too. A blocking
    call that raises CancelledError itself still fails its future, as on a
    ThreadPoolExecutor: that error is the call's, not the loop's."""
    if cancels(error):
        future._set_cancelled()
    else:
        future._try_set_exception(error)


def decide(attempts: Attempts, exc: BaseException, *, ask: bool) -> Optional[BaseException]:
    """Attempt ``attempts.attempt`` raised ``exc``: None when the policy retries it (after
    ``attempts.delay``), else the job's error, noted: ``exc``, or the policy's error.
    ``ask`` false: the attempt is the job's last (see Retries.stopped), ``exc`` its error.

    The traceback of the policy's error keeps this frame, and through it (``f_back``) the
    frames that called it, with what they hold when they return: those let go of the
    job's call first (its Attempts are dropped once the job is over)."""
    try:
        delay = after_failure(attempts, attempts.attempt, exc, ask=ask)
    except BaseException as policy_error:  # the policy failed (or returned no delay)
        if policy_error.__context__ is None:
            policy_error.__context__ = exc  # as if raised while handling exc
        return policy_error
    if delay is None:
        return exc
    attempts.delay = delay
    return None
