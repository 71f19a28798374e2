"""Queued jobs: submit_nowait() with every slot taken queues the job; it starts through
start_job() once a slot comes free, and its future follows it.

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any, Callable

from ._entries import Queued, Requeued
from ._following import QueuedFuture
from ._idle import check_idle
from ._lifecycle import fail, interrupted
from ._notes import annotate_job_error
from ._policy import JobKind
from ._retry import INHERIT, Inherit, RetryPolicy
from ._start import start_job
from ._startup import check_accepting
from ._state import State

if TYPE_CHECKING:
    from ._core import Core
    from ._map_state import MapJobs

__all__ = [
    "failed_to_start", "map_start_failed", "on_queued_dropped", "queue_job", "queue_map_job",
    "start_queued", "submit_again_nowait", "wake_watcher",
]

_RUNNING = State.RUNNING

_NO_KWARGS: dict[str, Any] = {}  # map jobs take positional arguments only; never mutated


def queue_job(
    exe: Core, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    """Queue a job for the next free slot; returns the future that follows it."""
    future = QueuedFuture(loop=exe._loop, on_drop=exe._on_queued_dropped)
    exe._slots.queue(Queued(future, fn, args, kwargs, exe._start_queued))
    exe._outcomes.hook_when_done(future, exe._loop)
    return future


def queue_map_job(
    exe: Core, jobs: MapJobs, args: tuple[Any, ...], index: int
) -> asyncio.Future[Any]:
    """A map's next input while every slot is taken and its window is wider than the
    limit (a buffersize above max_workers), whether or not the map has jobs in flight:
    it waits in the slots' line as a queued job (FIFO with the other producers), holding
    its place in the map's window, and starts as soon as a slot and a start token are
    free, while the map's consumer waits for a result. Returns the future that follows
    it; a consumer waiting on it is woken as it ends (see _map_run._wait). (The first
    input too: had the map waited in line for its slot itself, it would have read no
    further until it got one, and producers arriving meanwhile would have gone ahead of
    the rest of its window.)

    A window within the limit (the default one is the limit) never comes here: its map
    waits for a result and starts the input itself in its next step (its own jobs can
    hold every slot only once its window is full), or, with none of its jobs in flight,
    waits in line for a slot itself (take_slot). Queueing there too stalled an Adaptive
    limit (CI, Python 3.12 and 3.13, eager task factory: 24 of 64; reverted in 8a533dc):
    a queued job starts when the backlog is admitted, under a task factory a turn after
    its slot frees (see _settle._admit_after_job), not in the step the map is woken in,
    and the tuner saw the slots idle."""
    future = QueuedFuture(loop=exe._loop, on_drop=exe._on_queued_dropped)
    start = functools.partial(
        start_queued, exe, where=jobs.where, kind=jobs.kind, index=index, policy=jobs.policy,
        owner=jobs,
    )
    exe._slots.queue(Queued(future, jobs.fn, args, _NO_KWARGS, start))
    future.add_done_callback(functools.partial(wake_watcher, exe))
    exe._outcomes.hook_when_done(future, exe._loop)
    return future


def wake_watcher(exe: Core, future: asyncio.Future[Any]) -> None:
    """A map's queued job's future is done (the done callback of every such future)."""
    wake = exe._watchers.pop(future, None)  # a map waits for it (see _map_run._wait)
    if wake is not None and not wake.done():
        wake.set_result(None)


def start_queued(
    exe: Core,
    entry: Queued,
    where: str = "submit_nowait",
    kind: JobKind = JobKind.POLICY,
    index: int | None = None,
    policy: RetryPolicy | Inherit | None = INHERIT,
    owner: MapJobs | None = None,
) -> asyncio.Future[Any] | None:
    """A queued job got its slot (Slots.admit calls this in the job's context). Returns
    its task, or None if it failed to start. The other arguments: see start_job."""
    future = entry.future
    outcomes = exe._outcomes
    counted = outcomes.succeeded + outcomes.failed + outcomes.cancelled
    try:
        task = start_job(
            exe, entry.fn, entry.args, entry.kwargs, where, kind, index, policy, owner
        )
    except (KeyboardInterrupt, SystemExit) as exc:
        # From an eager first step (the job ran and settled itself) or from fn(). Its
        # future carries it, and it leaves the event loop from a callback of its own, as
        # asyncio lets it leave from a task: not from here, which may be the last step
        # of another job, whose outcome it is not.
        future.settle_exception(exc)
        if outcomes.succeeded + outcomes.failed + outcomes.cancelled == counted:
            # From fn(): the job failed before it began, and nothing counted it. As for
            # a job raising it, fail-fast then starts no queued job after it.
            outcomes.failed += 1
            fail(exe, exc)
            interrupted(exe, exc)  # with suppress_task_errors too
        exe._loop.call_soon(_raise, exc)
        return None
    except BaseException as exc:
        # fn() raised (any other BaseException too: an ordinary job error) or returned a
        # non-awaitable: the job failed before it began.
        failed_to_start(exe, future, entry.fn, entry.args, entry.kwargs, exc, kind, index, owner)
        return None
    future.follow(task)
    exe._outcomes.started(task, future)
    if owner is not None and not exe._inline and task.done():
        # An eager task factory ran the map's job to its end inside create_task: its
        # map learns of its error now, not from the done callback a turn later, so the
        # slots left in this admission start none of its other queued inputs. (Once
        # the future follows the task: the map's cancels spare it.)
        owner.on_job_done(task)
    return task


def failed_to_start(
    exe: Core,
    future: QueuedFuture,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: BaseException,
    kind: JobKind = JobKind.POLICY,
    index: int | None = None,
    owner: MapJobs | None = None,
) -> None:
    """The call ``fn(*args, **kwargs)`` of a job starting raised ``exc`` (or returned no
    awaitable): the job failed before it began. ``future``, the job's, ends with the
    error, which is counted, noted and meets the policy as a job's error does (with
    return_exceptions=True, kind RESULT, it is the map's result: no fail-fast); a map
    (``owner``) ends at once, as for any error of its jobs. For a queued job, and for a
    map's input however its job starts (see map_start_failed)."""
    if exe._annotate:
        annotate_job_error(exc, fn, args, kwargs, map_index=index)
    future.settle_exception(exc)
    exe._outcomes.failed += 1
    if kind is JobKind.POLICY:
        fail(exe, exc)
    if owner is not None:
        owner.job_failed(future, exc)


def map_start_failed(
    exe: Core, jobs: MapJobs, args: tuple[Any, ...], index: int, exc: BaseException
) -> asyncio.Future[Any]:
    """A map started input ``index``'s job itself and ``fn(*args)`` raised ``exc``
    before it returned an awaitable (a plain function that raises, a coroutine function
    given the wrong arguments; or it returned no awaitable; or, rarer, the job's task
    could not be made), its slot given back, and no retry policy retried it (see
    start_job). That is the input's job error, as when the job starts from a line
    (start_queued): the map's calls of ``fn`` all happen as its jobs start, not in the
    consumer's code. Returns the job's future, failed, which takes the input's place in
    the map. KeyboardInterrupt and SystemExit are raised again: they leave through the
    map (an eager first step may have raised them, the job settled already)."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    future = QueuedFuture(loop=exe._loop)
    exe._outcomes.hook_when_done(future, exe._loop)
    failed_to_start(exe, future, jobs.fn, args, _NO_KWARGS, exc, jobs.kind, index, jobs)
    return future


def on_queued_dropped(exe: Core, future: QueuedFuture) -> None:
    """A queued job's future was cancelled before the job started (from its cancel(): see
    QueuedFuture.on_drop). Its entry stays in the backlog, done, until admit() skips it."""
    exe._slots.unqueue()
    exe._outcomes.cancelled += 1
    check_idle(exe)


def _raise(exc: BaseException) -> None:
    raise exc


def submit_again_nowait(
    exe: Core, fn: Callable[..., Any], args: tuple[Any, ...]
) -> asyncio.Future[Any]:
    """submit_nowait() for the next attempt of a job that has run before, which the
    caller makes a job of its own (the bridge's retry=: each attempt is a job of its
    core): started now if a slot and a start token are free and nobody waits, else
    queued ahead of every job never started, behind the attempts queued so before it
    (Slots.queue_again), as a job of ours resumes after its pause (Pauses.resume).
    Without key= (the bridge holds its keys itself)."""
    if exe._state is not _RUNNING:
        check_accepting(exe)
    if exe._slots.take_nowait():
        return start_job(exe, fn, args, _NO_KWARGS, "submit_nowait")
    future = QueuedFuture(loop=exe._loop, on_drop=exe._on_queued_dropped)
    exe._slots.queue_again(Requeued(future, fn, args, _NO_KWARGS, exe._start_queued))
    exe._outcomes.hook_when_done(future, exe._loop)
    return future
