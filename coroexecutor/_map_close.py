"""Closing a map: abandon(), which closes a map early (its jobs cancelled, its reading
stopped), still_closing(), what every aclose() waits for, cancel_again() for an aclose()
whose wait was cancelled, and retire(), the executor's close of a map that its own job's
error has ended."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import refused
from ._following import QueuedFuture
from ._map_reader import INTERRUPTS, cancel_readers, drop_reader, report_closing, start_reader
from ._map_state import MapJobs
from ._policy import loop_going_down, retrieve

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["abandon", "cancel_again", "retire", "still_closing"]


def _stop_reading(exe: Core, jobs: MapJobs, cancel: bool = True) -> asyncio.Task[Any] | None:
    """Stop the map's reading, so that its async inputs get closed however early the map
    is closed; returns the reader task still to wait for, if any. Its outcome is
    retrieved (nobody is left to read it).

    A reader that runs is cancelled: it closes the inputs as it ends. One that has not
    taken its first step is not (cancelled then, its coroutine would end without running
    a line, and close nothing): it starts, finds the map closed and only closes them.
    With no reader yet (the map closed before its first read), one is started for that;
    if the loop's task factory refuses it, the map goes to ``exe._unread`` instead."""
    reader = jobs.reader
    sources, jobs.sources = jobs.sources, ()
    jobs.reader = None
    if reader is None:
        if not sources or asyncio._get_running_loop() is not exe._loop:
            return None  # sync inputs only, or read out; or dropped off the loop
        jobs.sources = sources
        try:
            reader = start_reader(exe, jobs)  # the map is closed: it only closes the inputs
        except BaseException as exc:
            # The loop's task factory refused it. Raised here, the error would cut short
            # whoever closes the map (the block's exit, before it waits for the jobs;
            # abort(), in a callback; the collector, which prints and drops it), and
            # nothing would close the inputs: they wait in jobs.unread for the map's
            # aclose(), else the block's exit or shutdown(), to close in its own task
            # (see close_unread), which then raises a KeyboardInterrupt or SystemExit.
            jobs.refusal = exc
            sources = ()  # in jobs.unread alone (the error's traceback keeps this frame)
            exe._unread.add(jobs)
            if exe._block is None:
                # No exit will come, and maybe no shutdown(): ask again a turn later.
                exe._loop.call_soon(_close_unread_soon, exe, jobs)
            return None
        jobs.reader = None
        reader.add_done_callback(retrieve)
        return None if reader.done() else reader  # (done: an eager task factory ran it)
    if reader.done():
        drop_reader(jobs, reader)  # its outcome, not taken: an error closing the inputs is reported
        return None
    if reader is not asyncio.current_task(reader.get_loop()):
        if cancel:  # (not when the loop's end has cancelled it: see abandon)
            cancel_readers((reader,), None)
        reader.add_done_callback(retrieve)
        return reader
    # The input itself closes the map (calls shutdown(), say): it is in its own step.
    reader.add_done_callback(retrieve)
    return None


def _close_unread_soon(exe: Core, jobs: MapJobs) -> None:
    """A map closed with no block had its reader refused by the loop's task factory a turn
    ago (see _stop_reading). Unless its aclose() or shutdown() has taken its inputs
    since, start a reader to close them now, as asyncio's own finaliser of a dropped
    async generator asks for a task to close it in a later callback: else they would
    wait for a shutdown() that may never come. shutdown() and the map's aclose() wait
    for that reader, as for any. The factory's error, which nobody has received, goes to
    the loop's exception handler; a KeyboardInterrupt or SystemExit is raised instead
    (out of the loop, as asyncio lets them out of a callback), once that reader has
    closed the inputs (see _raise_when_closed).

    Refused again, nothing can close the inputs: they are let go, to asyncio's finaliser
    of an async generator, and its shutdown_asyncgens() as the loop ends, as any async
    generator nobody closed; both errors are raised or reported (see _raise_or_report)."""
    if jobs not in exe._unread:
        return  # taken meanwhile: by the map's aclose(), or shutdown()
    exe._unread.discard(jobs)
    refusal, jobs.refusal = jobs.refusal, None
    jobs.sources, jobs.unread = jobs.unread, ()
    again: BaseException | None = None
    try:
        try:
            reader = start_reader(exe, jobs)
        except BaseException as exc:
            jobs.unread = ()  # let go (see above)
            again = exc
        else:
            jobs.reader = None
            reader.add_done_callback(retrieve)
            if not reader.done():  # (done: an eager task factory ran it)
                exe._readers.add(reader)
                reader.add_done_callback(exe._readers.discard)
                _closing(jobs, (reader,))
                if isinstance(refusal, INTERRUPTS):
                    reader.add_done_callback(partial(_raise_when_closed, refusal))
                    return
        _raise_or_report(exe._loop, refusal, again)
    finally:
        refusal = again = None  # no cycle through this frame


def _raise_when_closed(interrupt: BaseException, reader: asyncio.Task[Any]) -> NoReturn:
    """Done callback of the reader _close_unread_soon made after an interrupt refused the
    one before: raise that interrupt, out of the loop, now that the inputs are closed.
    Raised as the reader is made, it would end asyncio.run(), whose end cancels every
    task: the reader, cancelled before its first step, would close nothing. (The
    reader's own outcome is retrieved by its other callbacks: an error closing an input
    is reported, as the map is closed.)"""
    try:
        raise interrupt
    finally:
        del interrupt  # no cycle through this frame


def _raise_or_report(
    loop: asyncio.AbstractEventLoop, refusal: BaseException | None, again: BaseException | None
) -> None:
    """The factory's errors as _close_unread_soon ends, ``refusal`` (the first reader's)
    and ``again`` (the one asked for a turn later, if refused too): an error goes to the
    loop's exception handler, nobody being left to receive it, but a KeyboardInterrupt
    or SystemExit is raised, never reported in its place. Both interrupts (Ctrl-C
    pressed again, a factory that refuses every task with one): ``again`` is raised,
    with ``refusal`` as its ``__context__``, as for an error raised while another was
    handled, which is what it is."""
    interrupt: BaseException | None = None
    try:
        for error in (refusal, again):
            if isinstance(error, INTERRUPTS):
                if interrupt is not None and error is not interrupt and error.__context__ is None:
                    error.__context__ = interrupt
                interrupt = error
            elif error is not None:
                report_closing(loop, error)
        if interrupt is not None:
            raise interrupt
    finally:
        interrupt = error = None  # no cycle through this frame


def retire(exe: Core, jobs: MapJobs) -> None:
    """The executor closes its maps (its block's exit, shutdown(), its own stop): a map
    that one of its own jobs' errors has ended (see MapJobs.job_failed) is not cut
    short. It starts nothing and has cancelled its other jobs already, so its consumer
    still gets the results that were ready before the error, then the error, as it
    would have without the close. Only its input reading stops (the block's exit and
    shutdown() wait for it, as for a closed map's)."""
    exe._maps.discard(jobs)
    reader = _stop_reading(exe, jobs)
    if reader is not None:
        exe._readers.add(reader)
        reader.add_done_callback(exe._readers.discard)
        _closing(jobs, (reader,))  # an aclose() of the map waits for it too


def abandon(exe: Core, jobs: MapJobs) -> None:
    """Close the map: cancel its unfinished jobs (as the executor's own cancellations, not
    job errors), stop its reader and wake a consumer waiting in it. What was cancelled
    is kept in ``jobs.closing`` until it ends, for every aclose() to wait for (see
    still_closing): the first close clears the map's buffers, so a later one (another
    task's aclose(), the ``async with`` exit after it) would find nothing left to wait
    for in them.

    A map that its own job's error ended has cancelled its jobs already: they are waited
    for, not cancelled again. A job of the map that closes it (calling ``shutdown()``,
    say) is neither cancelled nor waited for: it is in its own step (the executor's
    canceller still reaches it, among the running jobs). Only that task is spared: a job
    in which some other task closes the map (a TaskGroup's, say) is cancelled, whichever
    task factory the loop has (see _cancel_started_meanwhile)."""
    jobs.closed = True
    exe._maps.discard(jobs)
    live = [job for job in (*jobs.pending, *jobs.in_flight) if not job.done()]
    jobs.pending.clear()
    jobs.in_flight.clear()
    jobs.finished.clear()
    current = asyncio.current_task(exe._loop)
    if current is not None and current in live:
        live.remove(current)
    if not exe._loop.is_closed():
        wake = jobs.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        taking = jobs.taking
        place = None if taking is None else exe._slots.place_of(taking)
        if place is not None:
            # Its consumer waits in line for a slot: turned away now, not once a slot
            # frees (a job of another producer's may hold it for long).
            exe._slots.refuse(place, refused(exe))
        # Closed as asyncio.run() ends (see loop_going_down): the jobs and the reader
        # have its cancel pending, and one more would interrupt their clean-up, which
        # the loop waits for. Asked of the task closing the map (a consumer the end
        # cancelled), or, closed in no task (the collector reclaiming a map left in a
        # cycle, in a callback), of the map's own tasks.
        probe = current if current is not None else _a_task_of(jobs, live)
        again = probe is None or not loop_going_down(probe)
        # (Outcomes.cancel cancels each job once: those its own job's error cancelled
        # already, see MapJobs.job_failed, are left to their clean-up.)
        if again:
            for job in live:
                exe._outcomes.cancel(job)
        if again and current is not None and exe._loop.get_task_factory() is not None:
            exe._loop.call_soon(_cancel_started_meanwhile, exe, jobs, current)
        reader = _stop_reading(exe, jobs, again)
        if reader is not None:
            live.append(reader)  # aclose() waits for it too (and the inputs' aclose())
            # So do the block's exit and shutdown(), however the map was closed.
            exe._readers.add(reader)
            reader.add_done_callback(exe._readers.discard)
    _closing(jobs, live)


def _cancel_started_meanwhile(exe: Core, jobs: MapJobs, spared: asyncio.Task[Any]) -> None:
    """Cancel the jobs the map took in after ``abandon`` closed it, as it would have.

    Only a task factory lets that happen: an eager one runs a job's first step inside its
    start, before the map has it in its buffers, and that step (or a task it starts, a
    TaskGroup's, run eagerly too) may close the map (call shutdown(), say). The map puts
    the job in its buffers as the start returns, in that same step of its consumer: so
    one callback, scheduled then, runs before that job's next step and finds it there.
    ``spared``: the task that closed the map, not cancelled (a job that called shutdown()
    in its first step goes on, as without the factory). The map's close path pays for
    this callback, no job's start does."""
    if exe._loop.is_closed():
        return
    late = [
        job
        for job in (*jobs.pending, *jobs.in_flight)
        if not job.done()
        and job is not spared
        and not (type(job) is QueuedFuture and job.task is spared)
    ]
    for job in late:
        exe._outcomes.cancel(job)
    _closing(jobs, late)


def _closing(jobs: MapJobs, tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Keep ``tasks``, which closing the map cancelled, in ``jobs.closing`` until each has
    ended and its done callbacks have run: a queued job, dropped from the line as it is
    cancelled, is done at once, but the executor counts it as cancelled in a callback,
    which aclose() waits for too."""
    closing = jobs.closing
    for task in tasks:
        if task not in closing:
            closing.add(task)
            task.add_done_callback(closing.discard)  # (scheduled at once if done)


def still_closing(jobs: MapJobs) -> list[asyncio.Future[Any]]:
    """What an aclose() of the closed map waits for: its jobs still cancelling and its
    reader still closing the inputs, however the map was closed and however many
    aclose() calls came before. Nothing for a task among them (a job of the map, or its
    reader, closing the map in its own clean-up): it would wait for itself, and two such
    jobs for each other; whoever closed the map waits for them."""
    current = asyncio.current_task()
    closing = jobs.closing
    if current in closing or any(
        type(task) is QueuedFuture and task.task is current for task in closing
    ):
        return []
    return list(closing)


def _a_task_of(jobs: MapJobs, live: list[asyncio.Future[Any]]) -> asyncio.Future[Any] | None:
    """One of the map's unfinished tasks (its reader, or a job's), if it has one."""
    if jobs.reader is not None and not jobs.reader.done():
        return jobs.reader
    for job in live:
        task = job.task if type(job) is QueuedFuture else job
        if task is not None and not task.done():
            return task
    return None


def cancel_again(exe: Core, live: list[asyncio.Future[Any]]) -> None:
    """aclose() of a map was cancelled while it waited for what abandon() cancelled (an
    outer timeout): cancel those again, as shutdown() does its jobs and readers, so an
    input whose clean-up waits (its ``finally``) is interrupted there and cannot hold
    the caller, or the block's exit after it, for ever."""
    cancel_readers([task for task in live if task in exe._readers], None)
    for task in live:
        if task not in exe._readers:
            exe._outcomes.cancel_again(task)  # still the executor's own cancellation
