"""The attempts of a job under a retry policy: run, and between attempts, give the slot back.

A job with a policy runs this coroutine as its task's body instead of the job's own
coroutine. Each attempt is a fresh call ``fn(*args, **kwargs)`` (the first one was made
when the job was submitted), with the executor's ``job_timeout`` around it. When an
attempt fails and the policy asks for another one, the job gives its slot back for the
pause and waits for a slot again afterwards, through the executor's
:class:`AttemptSlots`. The job's task stays the same from the first attempt to the last,
so cancelling it, or the executor cancelling its jobs, reaches the pause too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Callable, Protocol

from ._jobs import as_coroutine, wrapped_job
from ._notes import annotate_job_error
from ._retry import RetryPolicy, next_delay

__all__ = ["AttemptSlots", "run_attempts"]

_sleep = asyncio.sleep
_CancelledError = asyncio.CancelledError


class AttemptSlots(Protocol):
    """What the attempts of a job need from their executor (on its loop thread)."""

    def pause(self) -> None:
        """An attempt failed and another one follows: give the job's slot back (a
        waiting job may start in it), count the job as waiting, and count one retry."""

    async def resume(self) -> None:
        """Wait for a slot for the next attempt, ahead of every job that has not started
        yet, and for a start token under a rate limit. Returns holding the slot, the job
        counted as running again. If cancelled, leaves the line (a slot granted meanwhile
        goes to the next in line) and raises."""

    def abandon(self) -> None:
        """The job is cancelled in its pause or while waiting for a slot: it ends holding
        none. Settle the counts so that the job's end, which gives back one slot as for
        any job, leaves them right."""


async def run_attempts(
    slots: AttemptSlots,
    policy: RetryPolicy,
    first: Coroutine[Any, Any, Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_timeout: float | None,
    annotate: bool,
    map_index: int | None = None,
) -> Any:
    """Run ``first``, then as many further attempts as ``policy`` asks for; return the
    first result, or raise the last attempt's error (noted with the attempt count when
    ``annotate``).

    Only ``Exception`` ends an attempt in a retry: cancellation, ``KeyboardInterrupt``
    and ``SystemExit`` propagate at once. A policy that raises, or returns what is no
    delay, fails the job with that error (the attempt's error as its ``__context__``).

    Cancellation: in an attempt, as for any job; in a pause or the wait for a slot
    after it, the wait ends at once, no further attempt starts, and the job ends
    cancelled holding no slot (see AttemptSlots.abandon).
    """
    attempt = 1
    coro: Coroutine[Any, Any, Any] | None = first
    while True:
        try:
            if coro is None:
                result = fn(*args, **kwargs)
                coro = as_coroutine(result, fn)
                del result
            if job_timeout is not None:
                return await wrapped_job(job_timeout, coro, fn, args, kwargs)
            return await coro
        except Exception as exc:
            coro = None  # the failed attempt's coroutine, finished: let it go now
            try:
                delay = next_delay(policy, attempt, exc)
            except BaseException as policy_error:
                if annotate:
                    annotate_job_error(
                        policy_error, fn, args, kwargs, attempts=attempt, map_index=map_index
                    )
                raise
            if delay is None:
                if annotate:
                    annotate_job_error(exc, fn, args, kwargs, attempts=attempt, map_index=map_index)
                raise
            # Out of the except block before the pause: the error and its traceback (the
            # frames of the failed attempt) are not kept alive while the job waits.
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit (never retried) or a cancellation (no note).
            if annotate:
                annotate_job_error(exc, fn, args, kwargs, attempts=attempt, map_index=map_index)
            raise
        slots.pause()
        try:
            if delay > 0:
                await _sleep(delay)
            await slots.resume()
        except _CancelledError:
            slots.abandon()
            raise
        attempt += 1
