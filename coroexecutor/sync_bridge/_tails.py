"""Tails: a direct blocking job whose call returned an awaitable (``lambda: fetch(url)``).
The loop awaits the awaitable in a task of its own, the job's tail, then frees the job's
slot. Functions of the Scheduler (the first argument), on the loop thread.

(A blocking job the core governs, under job_timeout or max_per_second, awaits what its
call returned in its own wrapper task: see Scheduler._run_blocking.)
"""

from __future__ import annotations

import asyncio
import inspect
from asyncio import Task
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED
from typing import TYPE_CHECKING, Any

from .._errors import not_a_task
from ._outcome import resolve
from ._retries import give_up
from ._work_item import Failed, WorkItem, await_returned, cancel_if_stopped

if TYPE_CHECKING:
    from ._future import BridgeFuture
    from ._scheduler import Scheduler

__all__ = ["await_outcome", "cancel_tails"]


def await_outcome(scheduler: Scheduler, item: WorkItem) -> None:
    """A direct blocking job returned an awaitable: await it here, then free its slot."""
    loop = scheduler._loop or asyncio.get_running_loop()
    scheduler._loop = loop
    future = item.future
    retries = scheduler.retries
    # The worker ran the call in the job's own context: a next attempt runs there too
    # (or in what the awaitable's task leaves of a copy of it).
    args = (item.fn, item.args, item.kwargs, False, item.ctx)
    if type(item.outcome) is Failed:  # the call raised; a retry policy applies
        error = retries.job_error(future, *args[:3], item.outcome.error, False, item.ctx)
        item.outcome = None
        item.forget_call()
        del args, item  # see decide
        if error is None:
            retries.pause(future, None)
        else:
            give_up(future, error)
            scheduler._release(future)
        return
    retries.attempts_of(future, *args)  # the awaitable's errors: the job's
    cancel_if_stopped(future)  # its map was left as the call ran: cancelled below
    outcome, item.outcome = item.outcome, None
    coro = scheduler._run_coroutine(future, await_returned, (outcome, *args[:3]), {})
    try:
        task = item.ctx.run(loop.create_task, coro)
        if type(task) is not Task and not isinstance(task, Task):
            raise not_a_task(task)
    except BaseException as exc:
        # The loop's task factory raised, or made no task: the job fails with that
        # error, as one whose task it could not make (see Scheduler.start), and nothing
        # is left never awaited.
        coro.close()
        if inspect.iscoroutine(outcome):
            outcome.close()
        future._try_set_exception(exc)
        scheduler._release(future)  # counted by the slots as a direct job that failed
        return
    scheduler._tails.add(task)
    # cancel() cancels the job's task from now on, as a coroutine job's (Scheduler.cancel_job).
    future._job = task
    task.add_done_callback(lambda t: _on_tail_done(scheduler, t, item.future))
    if inspect.iscoroutine(outcome):
        # Cancelled before its first step (below, or by cancel_tails), the wrapper never
        # awaits it: close it then, no "never awaited" warning (a no-op else).
        task.add_done_callback(lambda _: outcome.close())
    if scheduler._running_cancelled or future._state == CANCELLED_AND_NOTIFIED:
        # The running jobs were cancelled (an exception leaving the block, the end of a
        # grace period) before this awaitable arrived, in this drain or an earlier one:
        # it is cancelled as they were, or it would be awaited with nobody left to cancel
        # it. Or cancel() returned True since the call returned (see WorkItem.returned),
        # in another thread before _job was set, so it left the task to us:
        #   caller thread                        loop thread
        #   cancel() -> True; _job is None:
        #   nothing to post
        #                                        sets _job; the task would run on
        # (The wrapper's first step sees the state too, if it comes first: eager tasks.)
        task.cancel()


def cancel_tails(scheduler: Scheduler) -> int:
    """A shutdown request cancels the running jobs: cancel the tails awaited now, and
    those still on their way (see await_outcome). Returns how many were cancelled now."""
    scheduler._running_cancelled = True
    return sum(task.cancel() for task in list(scheduler._tails))


def _on_tail_done(
    scheduler: Scheduler, task: asyncio.Future[Any], future: BridgeFuture[Any]
) -> None:
    scheduler._tails.discard(task)
    future._job = None  # before a retry's pause sets its timer there; see on_core_job_done
    if future._state != FINISHED and future._state != CANCELLED_AND_NOTIFIED:
        if future._attempts is not None and scheduler.retries.after_attempt(
            future, task, core=False
        ):
            return
        resolve(future, task)
    elif not task.cancelled():
        task.exception()  # the future has it: no "exception was never retrieved"
    scheduler._release(future)
