"""First use: the initializer (run once, before any job starts) and the event loop the
executor belongs to from then on.

The layer between the error policy and the public API (admission <- error policy <-
startup <- public API). All of it runs on the executor's event loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import sys
import weakref
from collections.abc import AsyncGenerator
from typing import Any, Callable

from ._admission import Queued, initializing
from ._errors import BrokenCoroutineExecutor
from ._policy import _SHUTDOWN_MESSAGE, Cause, ErrorPolicy
from ._state import State

__all__ = ["Startup"]


class Startup(ErrorPolicy):
    """What happens at first use: the executor watches for the end of the loop it is now
    bound to (_watch_loop), and runs ``initializer(*initargs)`` once, in a task of its
    own: on entering ``async with`` (which waits for it), or at the first submit(),
    submit_nowait() or map() of an executor used without it.

    Until it returns the executor is STARTING: it accepts jobs, but they wait in the
    backlog. A cancelled future at the front of the backlog sends every submit and map
    to its slow path (so the fast paths pay nothing for this), and nothing starts the
    backlog while ``_init_task`` is set. The initializer's task is in ``_running``, so
    _abort cancels it as it would a job (the deadline, shutdown(wait=False), the block's
    entry cancelled), and it counts as a waiter, so shutdown() waits for it.

    If it raises, the executor is BROKEN: the jobs waiting for it fail with
    BrokenCoroutineExecutor (chained from the initializer's exception), and so does
    every later call that would start one.
    """

    __slots__ = ("_broken", "_initargs", "_initializer", "_loop_watch")

    _initializer: Callable[..., object] | None
    _initargs: tuple[Any, ...]
    _broken: BaseException | None  # what the initializer raised
    _loop_watch: AsyncGenerator[None, None] | None  # see _watch_loop

    def _init_startup(
        self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> None:
        self._initializer = initializer
        self._initargs = initargs
        self._broken = None
        self._loop_watch = None

    #
    # The loop
    #

    def _watch_loop(self) -> None:
        """Bound to the running loop just now: learn when that loop finishes.

        An executor belongs to the loop it was first used on. Used again in a second
        asyncio.run(), its fast paths (which do not look up the running loop: on CPython
        3.11 that is a getpid() system call per job) would build the job's Task on the
        first, closed, loop. So when the loop finishes, the executor is closed, and any
        later call takes the slow path, which names the mistake (_check_loop).

        asyncio.run() and asyncio.Runner finish a loop by closing its async generators
        (loop.shutdown_asyncgens(), after cancelling every task): one parked here, and
        registered by the loop's own firstiter hook, tells us. It gets no finaliser, so
        an executor collected while its loop runs closes it at once, with no task.
        """
        watch = _loop_watch(weakref.ref(self))
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=None)
        try:
            watch.asend(None).send(None)
        except StopIteration:
            pass  # parked at its yield
        finally:
            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)
        self._loop_watch = watch

    def _loop_finished(self) -> None:
        """The loop is closing its async generators: its tasks are done, and so are we.

        Jobs still queued then never start: their futures end cancelled (and anything
        still running is cancelled again)."""
        if self._busy():
            self._abort(Cause.SHUTDOWN)
        if not self._busy():  # else someone closes them early: _check_loop still guards
            self._state = State.CLOSED

    #
    # The initializer
    #

    def _start_initializer(self) -> None:
        """Bound to a loop just now: run the initializer; hold back every job meanwhile."""
        loop = self._loop
        assert loop is not None
        gate: asyncio.Future[None] = loop.create_future()
        gate.cancel()  # a stale entry to _abort and _start_backlog; only its place matters
        self._backlog.append(gate)
        self._waiting += 1
        self._state = State.STARTING
        # asyncio.Task, not loop.create_task: an eager task factory would run the
        # initializer before _init_task is set, and this task is ours, not a job's. Its
        # context (copied by the Task from ctx), and so every task it starts, is marked as
        # inside our initializer: _check_not_initializer refuses their waits for a slot or
        # for shutdown(), which would wait for the initializer itself.
        ctx = contextvars.copy_context()
        ctx.run(initializing.set, (*initializing.get(), self))
        task = ctx.run(asyncio.Task, self._initialize(), loop=loop)
        self._init_task = task
        self._running[task] = task
        task.add_done_callback(self._initializer_done)

    async def _initialize(self) -> None:
        assert self._initializer is not None
        ready = self._initializer(*self._initargs)
        if inspect.isawaitable(ready):
            await ready

    def _initializer_done(self, task: asyncio.Future[Any]) -> None:
        self._init_task = None
        self._running.pop(task, None)
        self._waiting -= 1
        try:
            error = task.exception()
        except asyncio.CancelledError as exc:
            error = exc
        if error is not None and self._state is not State.CANCELLING:
            # (CANCELLING: _abort cancelled it, and the jobs waiting for it too.)
            self._break(error)
        else:
            if self._state is State.STARTING:
                self._state = State.RUNNING
            if self._backlog:
                self._start_backlog()  # in FIFO order, behind the gate it drops first
        self._check_idle()

    def _break(self, error: BaseException) -> None:
        """The initializer raised: fail every job waiting for it; no job will ever run."""
        self._broken = error
        self._state = State.BROKEN  # before the errors are made: their message shows it
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        backlog, self._backlog = self._backlog, collections.deque()
        first: BaseException | None = None
        for entry in backlog:
            if type(entry) is Queued:
                future = entry.future
                if future.done():
                    continue  # cancelled while queued: already uncounted
                future.remove_done_callback(self._on_queued_done)
                exc = self._broken_error()
                future.set_exception(exc)
                future.exception()  # the executor owns the error (policy or suppress): no log
                self._queued -= 1
                self._failed += 1
                first = first or exc
            elif not entry.done():  # type: ignore[union-attr]  # a waiter of submit() or map()
                self._waiting -= 1
                entry.set_exception(self._broken_error())  # type: ignore[union-attr]
                entry.exception()  # type: ignore[union-attr]  # no log if its waiter is gone
        if first is not None:
            # A job accepted by submit_nowait() failed: under fail-fast, shutdown() raises
            # it, as it would any first job error.
            self._job_failed(first)
            self._state = State.BROKEN

    def _broken_error(self) -> BrokenCoroutineExecutor:
        """A new error for each call that meets the broken executor, chained from the cause."""
        error = BrokenCoroutineExecutor(
            f"{self!r} is broken: its initializer raised {self._broken!r}"
        )
        error.__cause__ = self._broken
        return error

    async def _await_initializer(self) -> None:
        """Wait in __aenter__ for the initializer; raise what keeps the body from running:
        the cancellation of the caller, the initializer's error, the deadline, or a
        shutdown() from another task meanwhile (the body starts only on an executor that
        has started and still accepts jobs).

        Cancellation: cancelling the caller cancels the initializer, waits for it to
        finish, then re-raises the cancellation.
        """
        task = self._init_task
        assert task is not None
        cancelled: asyncio.CancelledError | None = None
        while self._init_task is not None:  # cleared by _initializer_done
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:
                cancelled = exc
                self._abort(Cause.BODY)
        error: BaseException | None = cancelled
        if error is None and self._broken is not None:
            error = self._broken_error()
        if error is None:
            error = self._policy_error()  # the deadline passed while it ran
        if error is None and self._state is not State.RUNNING:
            # shutdown() from another task while it ran: with wait=False it cancelled the
            # initializer, with wait=True it let it finish (and the jobs it queued start).
            # Either way the body must not run; that shutdown() owns the jobs, as it would
            # without a block: it waits for them (or they finish cancelling) and closes.
            # There is no block after all (no __aexit__ follows a failed __aenter__): the
            # executor closes once idle, whoever waits for that.
            self._block = False
            self._close_when_idle()
            raise RuntimeError(f"{_SHUTDOWN_MESSAGE} ({self!r} was shut down before it started)")
        if error is not None:
            self._close()
            raise error


async def _loop_watch(owner: weakref.ref[Startup]) -> AsyncGenerator[None, None]:
    """Parked at its yield for the life of the executor's loop (see _watch_loop)."""
    try:
        yield
    finally:
        executor = owner()
        if executor is not None:
            executor._loop_finished()
