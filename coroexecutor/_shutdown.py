"""Waiting for the jobs: the block's exit, shutdown(), and who may wait at all.

Functions of the executor (the first argument), on its event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, cast

from ._context import job_position
from ._errors import refused_by
from ._idle import check_idle, close, close_when_idle
from ._lifecycle import (
    abort,
    abort_again,
    cancel_again,
    interrupted,
    tearing_down,
)
from ._map import close_maps
from ._map_reader import INTERRUPTS, cancel_readers, close_unread_maps
from ._pauses import retried_unpaused
from ._policy import Cause, JobKind, error_of
from ._settle import settle
from ._startup import check_not_initializer, policy_error
from ._state import State
from ._taking import refuse_submits

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["exit_block", "grace_timer", "may_wait", "shutdown"]

_ACCEPTING = (State.RUNNING, State.EXITING, State.STARTING)


def may_wait(exe: Core) -> bool:
    """Whether the calling task may wait for our jobs: it runs in no job at all, or in a
    job of an executor we are nested in (we were first used inside a job of it).

    Anywhere else it runs inside one of our jobs (itself, a task it started, or a job of
    an executor nested in it), or in a job of an executor beside ours or above it, whose
    jobs ours may be waiting for. So a wait for jobs only ever goes down the nesting of
    executors, and no wait can be a circle that ends at the waiter.
    """
    position = job_position.get()
    if position is None:
        return True
    outer = exe._outer
    while outer is not None:
        if outer is position:
            return True
        outer = outer._outer
    return False


async def _wait_idle(
    exe: Core, *, keep_waiting: bool
) -> asyncio.CancelledError | None:
    """Wait until no job runs or waits, and no map reader we stopped (see _readers_closed)
    is still closing its inputs; close those of maps no reader could be made for
    (close_unread_maps).

    Cancelled meanwhile, it cancels every job and reader (again, if they were cancelled
    before: the task that called abort and jobs that lost their cancel too). Then, with
    ``keep_waiting`` (the block's exit: no job may outlive the block, as in
    asyncio.TaskGroup), it waits on for them to finish cancelling and returns the
    CancelledError to re-raise; without (shutdown()), it raises the CancelledError at
    once: a cancelled shutdown() never absorbs the cancel.
    """
    cancelled: asyncio.CancelledError | None = None
    _watch_unprimed(exe)
    while True:
        waiter: asyncio.Future[None] = exe._loop.create_future()
        exe._idle_waiters.append(waiter)
        # Already idle: still wait one turn, so the done callbacks of a job that just
        # completed in-line (already scheduled) run before we return.
        check_idle(exe)
        try:
            await waiter
            if exe._readers:
                await _readers_closed(exe)
            if exe._unread:
                await _close_unread(exe)
        except asyncio.CancelledError as exc:
            if waiter in exe._idle_waiters:
                exe._idle_waiters.remove(waiter)
            # The block's exit cancelled is the block cancelled (BODY: the cancel is
            # what it raises); a cancelled shutdown() cancels the jobs as
            # shutdown(wait=False) would (SHUTDOWN: a job error that follows is raised by
            # the block, or a later shutdown()).
            cause = Cause.BODY if keep_waiting else Cause.SHUTDOWN
            if tearing_down(exe, None):
                pass  # asyncio's end of the loop cancelled the jobs too: not again
            elif exe._state is State.CANCELLING:
                # The jobs were cancelled before and some still run: a job that called
                # shutdown(wait=False) (not cancelled then), or one whose cancel was lost
                # (asyncio.wait_for on Python < 3.12 can swallow one). A new cancel from
                # outside (a timeout, a second Ctrl-C) reaches them again.
                exe._outcomes.stop(cause, None)
                cancel_again(exe)
                _cancel_readers_again(exe)
            else:
                abort_again(exe, cause)  # the jobs a map cancelled before: again
                _cancel_readers_again(exe)
            if not keep_waiting:
                raise
            cancelled = exc
            continue
        if not exe._slots.busy:
            return cancelled


async def _close_unread(exe: Core) -> None:
    """close_unread_maps(). A KeyboardInterrupt or SystemExit it raises (a map's reader
    was refused so) stops the executor as it goes, as one a job raises does (see
    interrupted): a job started meanwhile (by an input's clean-up) is cancelled, not
    left running past the block, and no queued job starts."""
    try:
        await close_unread_maps(exe)
    except INTERRUPTS as exc:
        interrupted(exe, exc)
        raise


def _cancel_readers_again(exe: Core) -> None:
    """The wait for the jobs was cancelled: the readers of closed maps are cancelled (again)
    as the jobs are, so an input whose cleanup awaits (its finally, the aclose() of a
    resource it holds) is interrupted there."""
    cancel_readers(exe._readers, asyncio.current_task())


async def _readers_closed(exe: Core) -> None:
    """Wait for the reader tasks of the maps closed so far (the block's exit and
    shutdown() close them, as abort does; so do their consumers) to finish closing their
    async inputs, as aclose() of a map does: an async generator input's ``finally`` may
    await. Else asyncio.run() would cancel it again as it ends, cutting that cleanup
    short, and a loop closed by hand would destroy the reader pending.

    A reader that is the calling task (an input that calls shutdown() as it closes) is
    not waited for: it cannot wait for itself."""
    readers = _others(exe._readers)
    if readers:
        await asyncio.wait(readers)


def _others(readers: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [reader for reader in readers if reader is not current]


def _watch_unprimed(exe: Core) -> None:
    """Make sure every running in-line job gets settled, even one whose JobTask was
    cancelled before its first step past JobTask.cancel() (``asyncio.Task.cancel(t)``
    called on it directly): its runner never runs a line, so without this its slot would
    stay taken and the wait for idle would never end.

    Such a task ends in its first step, which is already in the loop's ready queue, so
    one callback scheduled now runs after it and settles what it finds. It is one handle
    and one pass over the jobs still running a turn later (jobs that end in their first
    step are gone by then): nothing on the hot path."""
    if exe._running:
        exe._loop.call_soon(_settle_unprimed, exe)


def _settle_unprimed(exe: Core) -> None:
    for key, task in [(k, t) for k, t in exe._running.items() if t.done()]:
        if key is task:
            continue  # a job with a done callback (or the initializer): that settles it
        retried_unpaused(exe, key)  # (a call that failed as the job started)
        cast("Coroutine[Any, Any, Any]", key).close()  # an in-line job's: it never ran
        del exe._running[key]
        settle(exe, task, task, error_of(task), JobKind.POLICY)  # as from a done callback


async def exit_block(exe: Core, exc: BaseException | None) -> bool | None:
    """``__aexit__``: cancel the jobs if the body failed, wait for every job, close, and
    raise what the policy names (the first job error, the deadline) or the late cancel."""
    block = exe._block
    assert block is not None  # only a block has an exit
    block.in_body = False
    ours = False
    if exc is not None:
        if isinstance(exc, asyncio.CancelledError) and block.interrupted:
            ours = block.withdraw()  # our own interruption of the body
        # The body raised or was cancelled: cancel every job. Unless asyncio's end of the
        # loop cancelled it, in a task still running as asyncio.run() ends (one main()
        # started and did not wait for): that cancelled every job as well, and one more
        # cancel would interrupt their clean-up, which asyncio waits for (see
        # tearing_down). Which of those tasks takes its cancel first is up to asyncio.
        if not ours and not tearing_down(exe, None):
            abort(exe, Cause.BODY)
    close_maps(exe, exiting=True)  # a map left open must not keep jobs running (see there)
    refuse_submits(exe, in_jobs=False)  # and nor must a submit() still waiting: as a map
    if exe._state is State.RUNNING:
        exe._state = State.EXITING
    late_cancel = await _wait_idle(exe, keep_waiting=True)
    close(exe)
    block.withdraw()  # the body swallowed our interruption: still withdraw it
    error = policy_error(exe)
    if error is not None:
        # A job error (or the deadline) came first: it wins over what followed, as the
        # first error does in asyncio.TaskGroup.
        if error is exc:
            return False
        if exc is not None and not isinstance(exc, asyncio.CancelledError) and not (
            refused_by(exc, exe)  # our own refusal of a job: the stop's doing
        ):
            # The body raised after it, its own error: not lost silently. But a Ctrl-C
            # (KeyboardInterrupt) or SystemExit goes on, as from asyncio.TaskGroup, and
            # the job's error is what is reported then.
            interrupt = not isinstance(exc, Exception)
            _report_dropped(exe, error if interrupt else exc, exc, error)
            if interrupt:
                exe._outcomes.delivered = True
                return False
        exe._outcomes.reraise(error)
    if late_cancel is not None:
        raise late_cancel  # cancelled while waiting for the jobs: not swallowed
    return None


def _report_dropped(
    exe: Core, dropped: BaseException, body_error: BaseException, first: BaseException
) -> None:
    """Tell the loop's exception handler of the error the block's exit does not raise:
    the body's own (``dropped is body_error``), or the policy's ``first`` error that a
    Ctrl-C passes over."""
    if dropped is body_error:
        message = (
            "the async with block's body raised after the executor had stopped for"
            f" {type(first).__name__}, which the block raises"
        )
    else:
        message = (
            f"the executor stopped for {type(first).__name__}, which the block does not"
            f" raise: its body raised {type(body_error).__name__} after it"
        )
    exe._loop.call_exception_handler({"message": message, "exception": dropped})


async def shutdown(exe: Core, wait: bool, grace: float | None) -> None:
    """shutdown(): see CoroutineExecutor.shutdown for the contract."""
    if exe._startup.task is not None:
        check_not_initializer(exe, "shutdown()")
    waits = may_wait(exe)
    # The policy's error goes to every call that waits, except once a call has raised it
    # and returned: a later shutdown() is a no-op. While a block is active, the block
    # owns it (and the closing).
    late = exe._outcomes.delivered
    if exe._state in _ACCEPTING:
        exe._state = State.DRAINING
    close_maps(exe)  # no map could start another job: their in-flight jobs end too
    refuse_submits(exe, in_jobs=True)  # nor could a submit() still waiting for a slot
    if not wait:
        abort(exe, Cause.SHUTDOWN)
    elif grace is not None and exe._slots.busy:
        _start_grace(exe, grace)
    owned = exe._block is None  # without a block, shutdown() closes and raises
    if not (wait and waits):
        # A call that does not wait raises nothing, not even an error known already:
        # wait=False returns at once, and raising here would count the error as
        # delivered, so the later call that does wait for the jobs would return None. It
        # raises it instead; if none ever comes, the error is reported when the
        # executor is collected (report_unretrieved).
        if owned:
            close_when_idle(exe)
        return
    try:
        await _wait_idle(exe, keep_waiting=False)
    except asyncio.CancelledError:
        if owned:
            close_when_idle(exe)
        raise
    finally:
        if exe._grace_handle is not None:  # idle, or every job cancelled: moot
            exe._grace_handle.cancel()
            exe._grace_handle = None
    if owned:
        close(exe)
        if not late:
            _raise_policy_error(exe)


def _raise_policy_error(exe: Core) -> None:
    error = policy_error(exe, shared=True)
    if error is not None:
        exe._outcomes.reraise(error)


def _start_grace(exe: Core, grace: float) -> None:
    """Cancel the jobs still running ``grace`` seconds from now (the earliest wins)."""
    exe._grace_handle = grace_timer(
        exe._loop, exe._grace_handle, grace, abort, exe, Cause.SHUTDOWN
    )


def grace_timer(
    loop: asyncio.AbstractEventLoop,
    handle: asyncio.TimerHandle | None,
    grace: float,
    callback: Callable[..., object],
    *args: object,
) -> asyncio.TimerHandle:
    """The timer of the grace periods of shutdown(timeout=) calls, on both executors:
    ``handle``, the one set by an earlier call (or None), or one that calls ``callback``
    ``grace`` seconds from now. Each call counts and the earliest end wins: a later,
    longer grace never extends an earlier, shorter one."""
    when = loop.time() + grace
    if handle is not None:
        if handle.when() <= when:
            return handle
        handle.cancel()
    return loop.call_at(when, callback, *args)

