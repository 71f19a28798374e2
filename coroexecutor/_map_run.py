"""The async generator behind a MapIterator, which starts the map's jobs as the window
allows and yields their results (closing a map is in _map_close, its reader task in
_map_reader)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._chains import left_by, put_back, stop_as_error
from ._following import QueuedFuture
from ._keying import start_or_queue
from ._map_close import abandon
from ._map_ends import (
    check_map_accepting,
    cut_short,
    ended,
    raise_closed,
    reraise_failed,
    reraise_first,
)
from ._map_reader import open_reader
from ._map_state import EXHAUSTED, MapJobs
from ._policy import JobKind
from ._queued import map_start_failed, queue_map_job
from ._retry import Inherit, RetryPolicy
from ._start import start_job
from ._startup import check_loop, check_not_initializer
from ._state import State
from ._taking import give_back, take_slot

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["results"]

_RUNNING = State.RUNNING
_NO_KWARGS: dict[str, Any] = {}  # map jobs take positional arguments only; never mutated
_READY: Any = object()  # a result is ready before the next input item: yield it first
_CLOSED: Any = object()  # the map was closed while we waited


async def results(
    exe: Core, jobs: MapJobs, feed: Iterator[tuple[Any, ...]] | None
) -> AsyncGenerator[Any, None]:
    """Start jobs while the window has room, then yield the next result; until the inputs
    and the window are empty. ``feed``: the zip of sync inputs (None: the reader task
    reads ``jobs.sources``, some of them async).

    Runs once per result, so the state it touches per job lives in locals. Every await
    is followed by a check of ``jobs.closed``: aclose() from another task, or the
    iterator dropped, abandons the map while its consumer waits in here.
    """
    loop = exe._loop
    slots = exe._slots
    fn, where, kind = jobs.fn, jobs.where, jobs.kind
    ordered = jobs.ordered
    returns_errors = kind is JobKind.RESULT  # return_exceptions=True (a local: an enum
    # member's attribute read costs about 60 ns on Python 3.11)
    pending, in_flight, finished = jobs.pending, jobs.in_flight, jobs.finished
    on_done = jobs.on_unordered_done
    policy = jobs.policy
    # In-line jobs tell the map of their errors themselves; others settle from a done
    # callback, and the map looks at each as it gets it back (see _start_and_look).
    start = start_job if exe._inline else _start_and_look
    index = 0  # the next job's input position (named in the note on its error)
    count = 0  # jobs started and not yet yielded: the window's fill (jobs.window moves)
    args: Any = None  # read from the inputs, not started yet
    job: asyncio.Future[Any] | None = None
    more = True  # the inputs may hold more
    try:
        yield EXHAUSTED  # the priming stop (see MapIterator.__init__)
        while True:
            retry = None  # seconds until a start-rate token arrives, if one is all we lack
            while more:
                # (Not `while more and count < jobs.window`: on 3.11 a comparison followed
                # by a long jump, as to the end of this loop, is never specialised, and it
                # runs twice a result: about 120 instructions a job.)
                if count >= jobs.window:
                    break
                if args is None:
                    if feed is not None:
                        args = next(feed, EXHAUSTED)
                    else:
                        args = await _next_item(exe, jobs, count)
                        if args is _CLOSED:
                            ended(exe, jobs)
                            return
                        if args is _READY or jobs.failed is not None:
                            args = None
                            break  # yield the ready result first; the read goes on
                    if args is EXHAUSTED:
                        more = False
                        args = None
                        break
                if exe._state is not _RUNNING:
                    await _interruption(exe)
                    check_map_accepting(exe)
                if slots.take_nowait():
                    try:
                        job = start(exe, fn, args, _NO_KWARGS, where, kind, index, policy, jobs)
                    except BaseException as exc:  # fn(*args) raised: see map_start_failed
                        job = map_start_failed(exe, jobs, args, index, exc)
                elif (keyed := exe._keyed) is not None:  # key=: it starts, or waits in line
                    if exe._startup.task is not None:
                        check_not_initializer(exe, "map()")  # it would wait for itself
                    job = start_or_queue(exe, keyed, fn, args, where, kind, index, policy, jobs)
                    if start is not start_job and job.done():
                        jobs.on_job_done(job)  # (see _start_and_look)
                elif jobs.base > slots.limit:
                    # A buffersize above the limit: the map's own jobs can take every
                    # slot while its window has room, and while we wait for a result
                    # (an ordered map's slow head) nobody would start this input in a
                    # slot they free. So it waits in line as a queued job and starts as
                    # a slot frees; the first input too, so that the window's inputs
                    # line up in input order ahead of later producers. (Not with a
                    # window within the limit, the default's: see queue_map_job.)
                    if exe._startup.task is not None:
                        check_not_initializer(exe, "map()")  # it would wait for itself
                    job = queue_map_job(exe, jobs, args, index)
                else:
                    if count:
                        # A job of ours is in flight: yield its result, start this later.
                        # If only a rate token is missing, also come back when it
                        # arrives: the rate bounds starts per second, not running jobs.
                        retry = slots.token_delay()
                        break
                    taking = jobs.taking = loop.create_future()
                    try:
                        await take_slot(exe, "map", taking)  # FIFO behind other producers
                    except RuntimeError:
                        if jobs.closed:  # turned away by the map's close (see abandon)
                            ended(exe, jobs)
                            return
                        check_map_accepting(exe)  # the executor is cancelling its jobs
                        raise
                    finally:
                        jobs.taking = None
                    if jobs.closed:
                        give_back(exe)
                        ended(exe, jobs)
                        return
                    try:
                        job = start(exe, fn, args, _NO_KWARGS, where, kind, index, policy, jobs)
                    except BaseException as exc:
                        job = map_start_failed(exe, jobs, args, index, exc)
                index += 1
                args = None
                count += 1
                if ordered:
                    pending.append(job)
                else:
                    in_flight.add(job)
                    job.add_done_callback(on_done)
            if ordered:
                if not pending:
                    return
                job = pending.popleft()  # (not pending[0]: a generic subscript a result)
                if not job.done():
                    pending.appendleft(job)  # still in flight: abandon() looks in pending
                    # The executor resolves the wake-up as it settles the job, in the
                    # job's own last step; its task is done before we resume.
                    await _wait(exe, jobs, job, retry)
                    if jobs.closed:
                        ended(exe, jobs)
                        return
                    if not job.done():
                        continue  # woken for the token: start more, then wait again
                    pending.popleft()
            else:
                if not finished:
                    if not in_flight:
                        return
                    await _wait(exe, jobs, None, retry)  # resolved by on_unordered_done
                    if jobs.closed:
                        ended(exe, jobs)
                        return
                    if not finished:
                        continue  # woken for the token: start more, then wait again
                job = finished.popleft()
            count -= 1
            left = None
            if returns_errors and not job.cancelled():
                # return_exceptions: a job's error is yielded as its job left it. Raised by
                # job.result() below (inside the consumer's ``except`` clause, if it is in
                # one), it would get that clause's exception as its __context__, and this
                # frame in its traceback: take them first (asyncio.gather does not raise).
                error = job.exception()
                if error is not None:
                    left = left_by(error)
            try:
                result = job.result()
            except BaseException as exc:
                unsettled = _unsettled(exe, job)
                if unsettled is not None:
                    # An eager task factory ran it to its end as we started it, and its
                    # done callback has not settled it yet: let its error meet the
                    # policy first (under fail-fast, the body's interruption).
                    await _wait(exe, jobs, unsettled, None)
                    if jobs.closed:
                        ended(exe, jobs)
                        return
                if exe._outcomes.cause is not None:
                    await _interruption(exe)
                if not returns_errors:
                    outcomes = exe._outcomes
                    if job.cancelled():
                        # Cancelled because another job failed (fail-fast, or one of
                        # this map's: see MapJobs.job_failed): report that error, not a
                        # CancelledError this consumer never asked for, and leave the
                        # error's chain as its job left it.
                        if outcomes.first_error is not None:
                            reraise_first(outcomes)
                        if jobs.failed is not None:
                            reraise_failed(jobs)
                    # The job's own error. job.result() raised it inside this consumer's
                    # `except` clause, if it is in one, which made that clause's
                    # exception its __context__: for us and for the block, shutdown()
                    # and every other consumer after us. The policy and the map took it
                    # as its job left it (see left_by): raise it so. (An error that is
                    # neither, of a job that failed as the map's cancel reached it, is
                    # raised as it is; a StopAsyncIteration as a RuntimeError, as
                    # reraise_first and reraise_failed raise one: see stop_as_error.)
                    elif exc is outcomes.first_error:
                        reraise_first(outcomes)
                    elif exc is jobs.failed:
                        reraise_failed(jobs)
                    if isinstance(exc, StopAsyncIteration):
                        raise stop_as_error(exc) from exc
                    raise
                if job.cancelled() and exe._outcomes.cause is not None:
                    # The executor's own stop cancelled it (fail-fast, the deadline,
                    # shutdown): no result of the map's, which was cut short.
                    raise_closed(exe)
                if left is not None:
                    put_back(exc, left)
                result = exc
            yield result
    except BaseException as stop:
        # A job error, the consumer cancelled while it waited, a refused start, or
        # GeneratorExit (closed at a yield, or dropped): cancel what is still in flight,
        # unless the map was closed already and cancelled it then.
        if not jobs.closed:
            if asyncio._get_running_loop() is loop:
                abandon(exe, jobs)
                if isinstance(stop, asyncio.CancelledError):
                    cut_short(exe, jobs, stop)  # a later __anext__() must not end quietly
            elif not loop.is_closed():  # dropped on another thread: the loop's thread cancels
                loop.call_soon_threadsafe(abandon, exe, jobs)
        raise
    finally:
        jobs.closed = True
        exe._maps.discard(jobs)
        # Drop the inputs (and the last job) here rather than as the frame is torn down:
        # their finalisers may run Python code (an async generator input's finaliser
        # hook does), and on CPython 3.13.0 code that walks the stack while a generator's
        # frame is being cleared can crash the interpreter (seen with uvloop's debug
        # mode, whose call_soon_threadsafe calls sys._getframe).
        feed = job = args = None
        jobs.sources = ()


def _start_and_look(
    exe: Core,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str,
    kind: JobKind,
    index: int,
    policy: RetryPolicy | Inherit | None,
    jobs: MapJobs,
) -> asyncio.Future[Any]:
    """start_job() for a map whose jobs settle from a done callback (an on_job_done hook,
    job_timeout, an Adaptive limit). An eager task factory may run the job to its end as
    it starts: the map learns of its error now, not from its done callback a turn
    later, and starts nothing after it. (In-line jobs tell the map themselves, so their
    maps call start_job() directly: nothing more per job on that path.)"""
    job = start_job(exe, fn, args, kwargs, where, kind, index, policy, jobs)
    if job.done():
        jobs.on_job_done(job)
    return job


async def _interruption(exe: Core) -> None:
    """If the consumer is the block's body and the executor has interrupted it (fail-fast,
    the deadline) since its last await, let that cancellation arrive now: the body's
    ``async for`` raises CancelledError there, as any await in the body does, and not a
    job's error or RuntimeError. (With an eager task factory a job can fail inside the
    map's own start of it, so the body learns of it before it awaits.) A pending
    cancellation is raised at the next await; if there is none, this returns."""
    block = exe._block
    if block is not None and block.interrupted and asyncio.current_task() is block.parent:
        await asyncio.sleep(0)


def _unsettled(exe: Core, job: asyncio.Future[Any]) -> asyncio.Future[Any] | None:
    """The task of a done job that settles from a done callback, if that has not run yet
    (it is still among the running jobs, under its task; an in-line job is settled
    before its task is done)."""
    task = job.task if type(job) is QueuedFuture else job
    return task if task is not None and task in exe._running else None


async def _next_item(exe: Core, jobs: MapJobs, count: int) -> Any:
    """The next item of async inputs, from the map's reader task (read_inputs), which
    reads while results are yielded. Returns the item, EXHAUSTED (or raises an input's
    error), _READY when a result is ready first (the read goes on; its item is taken
    after the yield), or _CLOSED."""
    items = jobs.items
    if not items:
        jobs.limit = jobs.taken - count + jobs.window  # results yielded + the window
        reader = jobs.reader
        if reader is None:
            check_loop(exe)  # (the first __anext__() checked already: cheap insurance)
            reader = await open_reader(exe, jobs)
            reader.add_done_callback(jobs.on_read)
        elif (go := jobs.go) is not None and not go.done():
            go.set_result(None)
        pending = jobs.pending
        while not items and not reader.done() and not (
            count and (pending[0].done() if jobs.ordered else jobs.finished)
        ):
            # Wait for the item or, with jobs in flight, the next result.
            jobs.wants = True
            try:
                await _wait(exe, jobs, pending[0] if jobs.ordered and count else None, None)
            finally:
                jobs.wants = False
            if jobs.closed:
                return _CLOSED
        if not items:
            if not reader.done() or jobs.failed is not None:
                return _READY  # (a failed map's reading is stopped: see retire)
            jobs.reader = None
            return reader.result()  # EXHAUSTED, or an input's error
    jobs.taken += 1
    return items.popleft()


async def _wait(
    exe: Core, jobs: MapJobs, job: asyncio.Future[Any] | None, retry: float | None
) -> None:
    """Wait until ``job`` is settled (its watcher), or what else resolves ``jobs.wake``
    (an unordered job done, an item read, the map closed), or a start token arrives in
    ``retry`` seconds."""
    loop = exe._loop
    wake = jobs.wake = loop.create_future()
    if job is not None:
        exe._watchers[job] = wake
    timer = None if retry is None else loop.call_later(retry, _wake, wake)
    try:
        await wake
    finally:
        if job is not None:
            exe._watchers.pop(job, None)
        jobs.wake = None
        if timer is not None:
            timer.cancel()


def _wake(wake: asyncio.Future[None]) -> None:
    """A start-rate token arrived for a map waiting for a result: let it start more."""
    if not wake.done():
        wake.set_result(None)
