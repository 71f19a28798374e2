"""Pauses: the executor's side of a job's pauses between attempts (retry=)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._errors import refused_by
from ._lifecycle import admit
from ._retrying import unrun_failed_call
from ._state import State

if TYPE_CHECKING:
    from ._core import Core
    from ._map_state import MapJobs

__all__ = ["Pauses", "cancelled_job", "retried_unpaused"]


def cancelled_job(exe: Core, task: asyncio.Future[Any]) -> bool:
    """Whether the executor has cancelled ``task``, a job's: with all its jobs (fail-fast,
    shutdown(), the block's exit on an error or its deadline; not the job that called
    shutdown(wait=False), which abort spares), or alone (its map closed or failed:
    Outcomes.cancel). The job_timeout of a job cancelled so sends nothing while it
    cleans up (see _jobs._with_deadline). Asked as a deadline passes, and by a
    DaskExecutor worker's blocking job that a cancel reaches (distributed._blocking)."""
    if exe._state is State.CANCELLING and task is not exe._spared:
        return True
    return task in exe._outcomes.our_cancels


class Pauses:
    """What a job's attempts need from the executor (the AttemptSlots of _retrying).

    Made only once a job has failed and will be retried. A pausing job holds no slot
    and is counted in ``Slots.pausing`` (``stats.queued``); it stays among the running
    jobs' tasks, so every cancellation of the executor's jobs reaches its pause. A map's
    job (``owner``: its map) also leaves the map's window until it holds a slot again,
    so the map starts another input meanwhile (see MapJobs), and learns of the job's
    final error in the job's own last step (``failed``)."""

    __slots__ = ("_exe", "_owner")

    def __init__(self, exe: Core, owner: MapJobs | None = None) -> None:
        self._exe = exe
        self._owner = owner

    def pause(self) -> None:
        exe = self._exe
        slots = exe._slots
        slots.pause()  # the next in line gets our slot first thing in the next turn
        exe._outcomes.retried += 1
        if self._owner is not None:
            self._owner.paused()  # wakes the map: it resumes in a later turn

    async def resume(self) -> None:
        exe = self._exe
        try:
            await exe._slots.take_again()
        except asyncio.CancelledError:
            admit(exe)  # a slot granted just as we were cancelled goes to the next in line
            raise
        except RuntimeError as exc:
            if not refused_by(exc, exe):
                raise
            # The executor is cancelling its jobs, and turned away the slot waiters before
            # this job's cancel arrived (in a failing job's last step, the cancel of a
            # task that waits comes after the step): it ends cancelled, as they all do,
            # not with the refusal meant for new jobs.
            raise asyncio.CancelledError from None
        exe._slots.resumed()
        if self._owner is not None:
            self._owner.resumed()

    def abandon(self) -> None:
        exe = self._exe
        exe._slots.abandon(asyncio.current_task(exe._loop))
        if self._owner is not None:
            self._owner.resumed()

    def failed(self, error: BaseException) -> None:
        # As an in-line job tells its map (_runners.job_raised): a map that a job's error
        # ends cancels its other jobs now, before those started with it take their first
        # step; its done callback, a turn later, would let them run.
        owner = self._owner
        if owner is not None:
            task = asyncio.current_task(self._exe._loop)
            if task is not None:
                owner.job_failed(task, error)

    def stopping(self) -> bool:
        return self._exe._state is State.CANCELLING

    def cancelled(self, task: asyncio.Task[Any]) -> bool:
        return cancelled_job(self._exe, task)

    @property
    def timing_out(self) -> set[asyncio.Future[Any]]:
        return self._exe._outcomes.timing_out


def retried_unpaused(exe: Core, first: object) -> None:
    """A job's task ends before its first step (cancelled then), ``first`` its first
    attempt. If that is a call that failed as the job started (see failed_call), the
    policy gave it another try then: it counts as retried (``ExecutorStats.retried``), as
    a first attempt that failed in its task counts once its job is cancelled in the pause
    after it. Pauses.pause() would have counted it in the step that never ran."""
    if unrun_failed_call(first):
        exe._outcomes.retried += 1
