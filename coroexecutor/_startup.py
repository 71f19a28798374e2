"""First use: the initializer (run once, before any job starts) and the event loop the
executor belongs to from then on.

Functions of the executor (the first argument), on its event loop thread; the
initializer's own state is a :class:`Startup`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from ._context import initializing, job_position
from ._core import Block, Startup
from ._errors import (
    SHUTDOWN_MESSAGE,
    BrokenCoroutineExecutor,
    ExecutorTimeoutError,
    refused,
)
from ._idle import check_idle, close, close_when_idle
from ._jobs import factory_reader
from ._lifecycle import abort, admit, fail
from ._policy import Cause
from ._state import State
from ._validate import initializer_ready

if TYPE_CHECKING:
    from ._core import Core

__all__ = [
    "await_initializer", "bind", "broken_error", "check_accepting", "check_loop",
    "check_not_initializer", "enter_block", "no_exit", "policy_error",
    "refuse_plain_with",
]

_ACCEPTING = (State.RUNNING, State.EXITING, State.STARTING)


#
# First use
#


def bind(exe: Core) -> None:
    """First use: tie the executor to the running loop, start the deadline, the watch of
    the loop and the initializer."""
    loop = exe._loop = asyncio.get_running_loop()
    exe._slots.bind(loop)
    exe._state = State.RUNNING
    exe._outer = job_position.get()
    exe._task_factory_of = factory_reader(loop, in_line=exe._inline)
    if exe._rate is not None:
        exe._slots.set_rate(exe._rate, exe._burst)
    if exe._timeout is not None:
        exe._deadline_handle = loop.call_later(exe._timeout, abort, exe, Cause.DEADLINE)
    exe._loop_watch = _watch_loop(exe)
    if exe._startup.fn is not None:
        _start_initializer(exe)


async def enter_block(exe: Core) -> None:
    """``async with``: first use, with a block that owns the error; waits for the
    initializer. An executor is entered once."""
    if exe._state is not State.CREATED:
        check_loop(exe)
        raise RuntimeError(f"{exe!r} has already been used; create a new executor")
    bind(exe)
    block = exe._block = Block(asyncio.current_task())
    if exe._startup.task is not None:
        await await_initializer(exe)
    block.in_body = True


def check_accepting(exe: Core) -> None:
    """The gate of submit(), submit_nowait() and map(): bind at first use, else raise the
    documented error for an executor that takes no more jobs."""
    state = exe._state
    if state in _ACCEPTING:
        return
    if state is State.CREATED:
        bind(exe)
        return
    check_loop(exe)
    if exe._startup.broken is not None:
        raise broken_error(exe)
    if state is State.CANCELLING:
        raise refused(exe, f"{exe!r} is cancelling its jobs")
    raise refused(exe)


def check_loop(exe: Core) -> None:
    """Refuse a call from any loop but the one the executor is bound to (if any).

    Not on the fast paths of submit() and submit_nowait(): on CPython 3.11 finding the
    running loop makes a getpid() system call. They rely on the state instead: an
    executor whose loop has finished (see _watch_loop) is CLOSED, and every call on a
    closed executor comes here."""
    if exe._bound and asyncio._get_running_loop() is not exe._loop:
        raise RuntimeError(
            f"{exe!r} belongs to the event loop it was first used on and cannot be used"
            " from another; make one executor per asyncio.run()"
        )


def refuse_plain_with(exe: object) -> None:
    """``__enter__``: a plain ``with`` is refused with the way out."""
    raise TypeError(
        f"{type(exe).__name__!r} object does not support the context manager protocol:"
        " use 'async with' (in async code), or LoopExecutor from sync code"
    )


def no_exit(exe: object, *exc_info: object) -> None:
    """``__exit__``: ``with`` needs one to reach ``__enter__``."""


def policy_error(exe: Core, *, shared: bool = False) -> BaseException | None:
    """What the error policy says the block (or shutdown()) raises: see Outcomes."""

    def timed_out() -> BaseException:
        return ExecutorTimeoutError(f"{exe!r} timed out after {exe._timeout} seconds")

    return exe._outcomes.policy_error(timed_out, shared=shared)


#
# The initializer
#


def _start_initializer(exe: Core) -> None:
    """Bound to a loop just now: run the initializer; hold back every job meanwhile."""
    exe._slots.hold()
    exe._state = State.STARTING
    # asyncio.Task, not loop.create_task: an eager task factory would run the initializer
    # before its task is known, and this task is ours, not a job's. Its context (copied
    # by the Task from ctx), and so every task it starts, is marked as inside our
    # initializer: check_not_initializer refuses their waits for a slot or for
    # shutdown(), which would wait for the initializer itself.
    ctx = contextvars.copy_context()
    ctx.run(initializing.set, (*initializing.get(), exe))
    task = ctx.run(asyncio.Task, _initialize(exe._startup), loop=exe._loop)
    exe._startup.task = task
    exe._running[task] = task
    task.add_done_callback(lambda done: _initializer_done(exe, done))


async def _initialize(startup: Startup) -> None:
    assert startup.fn is not None
    ready = initializer_ready(startup.fn(*startup.args), startup.fn)
    if inspect.isawaitable(ready):
        await ready


def _initializer_done(exe: Core, task: asyncio.Future[Any]) -> None:
    exe._startup.task = None
    exe._running.pop(task, None)
    exe._slots.release_hold()
    try:
        error = task.exception()
    except asyncio.CancelledError as exc:
        error = exc
    if error is not None and exe._state is not State.CANCELLING:
        _break(exe, error)
    elif error is not None and not isinstance(error, asyncio.CancelledError):
        _failed_while_stopping(exe, error)
    else:  # (CANCELLING: abort cancelled it, and the jobs waiting for it too.)
        if exe._state is State.STARTING:
            exe._state = State.RUNNING
        admit(exe)  # in FIFO order, behind the gate it drops first
    check_idle(exe)


def _break(exe: Core, error: BaseException) -> None:
    """The initializer raised: fail every job waiting for it; no job will ever run."""
    exe._startup.broken = error
    exe._state = State.BROKEN  # before the errors are made: their message shows it
    if exe._deadline_handle is not None:
        exe._deadline_handle.cancel()
    first: BaseException | None = None
    for entry in exe._slots.drain(lambda: broken_error(exe)):  # uncounted by drain()
        future = entry.future  # live: one cancelled left the line then (on_drop)
        exc = broken_error(exe)
        future.settle_exception(exc)
        exe._outcomes.failed += 1
        first = first or exc
    if first is not None:
        # A job accepted by submit_nowait() failed: under fail-fast, shutdown() raises
        # it, as it would any first job error.
        fail(exe, first)
        exe._state = State.BROKEN


def _failed_while_stopping(exe: Core, error: BaseException) -> None:
    """The initializer answered the executor's cancel with an error of its own (``except
    CancelledError: raise OSError``): it failed, as a job doing so does (see
    Outcomes.names), and its error is not lost.

    After shutdown() (no error known) the executor is broken by it: under any error
    policy (it is no job's error) the error the block's entry, the shutdown() calls that
    wait, and later calls raise is a BrokenCoroutineExecutor chained from it, reported
    when the executor is collected if nobody waits. After a cause with an exception of
    its own (the deadline, the entering task's cancellation), that first cause wins, as
    it does over a job's error; the initializer's error, in no task anyone holds, goes to
    the loop's exception handler, as a body's error after the first cause does."""
    outcomes = exe._outcomes
    if outcomes.cause is Cause.SHUTDOWN:  # shutdown() cancelled it: no error is known
        exe._startup.broken = error
        abort(exe, Cause.JOB_ERROR, broken_error(exe))  # takes shutdown()'s place
        return
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return  # asyncio raised it out of the loop: it reached the caller of run()
    cause = outcomes.cause.value if outcomes.cause is not None else "it stopped"
    exe._loop.call_exception_handler(
        {
            "message": f"the initializer of {exe!r} raised as the executor cancelled it"
            f" ({cause}): what stopped the executor is raised instead",
            "exception": error,
        }
    )


def broken_error(exe: Core) -> BrokenCoroutineExecutor:
    """A new error for each call that meets the broken executor, chained from the cause."""
    broken = exe._startup.broken
    error = BrokenCoroutineExecutor(f"{exe!r} is broken: its initializer raised {broken!r}")
    error.__cause__ = broken
    return error


def check_not_initializer(exe: Core, call: str) -> None:
    """Refuse a wait the initializer, or a task it started, would make for itself (only
    while it runs)."""
    if exe._startup.task is not None and exe in initializing.get():
        raise RuntimeError(
            f"{call} cannot wait in the initializer of {exe!r}: no job starts before the"
            " initializer returns"
        )


async def await_initializer(exe: Core) -> None:
    """Wait in __aenter__ for the initializer; raise what keeps the body from running:
    the cancellation of the caller, the initializer's error, the deadline, or a
    shutdown() from another task meanwhile (the body starts only on an executor that has
    started and still accepts jobs).

    Cancellation: cancelling the caller cancels the initializer, waits for it to finish,
    then re-raises the cancellation.
    """
    task = exe._startup.task
    assert task is not None
    cancelled: asyncio.CancelledError | None = None
    while exe._startup.task is not None:  # cleared by _initializer_done
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:
            cancelled = exc
            abort(exe, Cause.BODY)
    error: BaseException | None = cancelled
    if error is None and exe._startup.broken is not None:
        error = broken_error(exe)
        # The block tells of the broken executor: so it does of the job errors the break
        # made (the jobs queued meanwhile), which are never reported as unretrieved.
        exe._outcomes.delivered = True
    if error is None:
        error = policy_error(exe)  # the deadline passed while it ran
    if error is None and exe._state is not State.RUNNING:
        # shutdown() from another task while it ran: with wait=False it cancelled the
        # initializer, with wait=True it let it finish (and the jobs it queued start).
        # Either way the body must not run; that shutdown() owns the jobs, as it would
        # without a block: it waits for them (or they finish cancelling) and closes.
        # There is no block after all (no __aexit__ follows a failed __aenter__): the
        # executor closes once idle, whoever waits for that.
        exe._block = None
        close_when_idle(exe)
        raise RuntimeError(f"{SHUTDOWN_MESSAGE} ({exe!r} was shut down before it started)")
    if error is not None:
        close(exe)
        raise error


#
# The loop
#


def _watch_loop(exe: Core) -> AsyncGenerator[None, None]:
    """Bound to the running loop just now: learn when that loop finishes.

    An executor belongs to the loop it was first used on. Used again in a second
    asyncio.run(), its fast paths (which do not look up the running loop: on CPython
    3.11 that is a getpid() system call per job) would build the job's Task on the first,
    closed, loop. So when the loop finishes, the executor is closed, and any later call
    takes the slow path, which names the mistake (check_loop).

    asyncio.run() and asyncio.Runner finish a loop by closing its async generators
    (loop.shutdown_asyncgens(), after cancelling every task): one parked here, and
    registered by the loop's own firstiter hook, tells us. It gets no finaliser, so an
    executor collected while its loop runs closes it at once, with no task. Returns the
    generator, which the executor keeps.
    """
    watch = _loop_watch(weakref.ref(exe))
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=None)
    try:
        watch.asend(None).send(None)
    except StopIteration:
        pass  # parked at its yield
    finally:
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)
    return watch


def _loop_finished(exe: Core) -> None:
    """The loop is closing its async generators: its tasks are done, and so are we.

    Jobs still queued then never start: their futures end cancelled (and anything still
    running is cancelled again). The maps still open forget the thread they were used
    on, so the next ``__anext__()`` of each, on this thread too, looks up the running
    loop (see MapIterator.__anext__) and names the mistake."""
    for jobs in exe._maps:
        it = jobs.owner() if jobs.owner is not None else None
        if it is not None:
            it._thread = 0
    if exe._slots.busy:
        abort(exe, Cause.SHUTDOWN)
    if not exe._slots.busy:  # else someone closes them early: check_loop still guards
        exe._state = State.CLOSED


async def _loop_watch(owner: weakref.ref[Core]) -> AsyncGenerator[None, None]:
    """Parked at its yield for the life of the executor's loop (see _watch_loop)."""
    try:
        yield
    finally:
        executor = owner()
        if executor is not None:
            _loop_finished(executor)
            # Jobs that run on, cancelled just now: on Python < 3.11 a queued job may have
            # started as asyncio.run() cancelled every task (see tearing_down). The loop
            # runs until the async generators are closed: let them end, or they would be
            # destroyed pending, their futures never settled.
            running = [task for task in executor._running.values() if not task.done()]
            del executor
            if running:
                await asyncio.wait(running)
