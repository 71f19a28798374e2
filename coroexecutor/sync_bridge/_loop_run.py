"""LoopRun: what exists while a bridge's loop runs (its stop and idle futures, and the
drain of the hand-off), and its first task, ``main``, which runs the initializer and then
waits for the shutdown. Loop thread only."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable, Optional

from .._shutdown import grace_timer
from .._validate import initializer_ready
from ._handoff import HandOff
from ._options import ExitReport, ShutdownRequest
from ._tails import await_outcome, cancel_tails

__all__ = ["LoopRun"]

# Where and how ThreadPoolExecutor's workers report a failing initializer (its _worker).
_LOGGER = logging.getLogger("concurrent.futures")


class LoopRun:
    """What exists while the loop runs: its stop and idle futures, the grace period's
    timer, and the drain; and while an async initializer runs, the task awaiting it."""

    def __init__(self, handoff: HandOff, loop: asyncio.AbstractEventLoop) -> None:
        self._handoff = handoff
        self._loop = loop
        self._stop: asyncio.Future[ShutdownRequest] = loop.create_future()
        self._idle: asyncio.Future[None] = loop.create_future()  # set: no job holds a slot
        self._grace: Optional[asyncio.TimerHandle] = None  # shutdown(timeout=): its end
        # main's task while it awaits what an async initializer returned, and whether a
        # shutdown request has cancelled it (see _stop_initializer).
        self._initializing: Optional[asyncio.Task[Any]] = None
        self._initializer_stopped = False
        self.started = False  # main's first step has run: its task was made and runs it

    async def main(
        self, initializer: Optional[Callable[..., object]], initargs: tuple[Any, ...]
    ) -> None:
        self.started = True
        handoff = self._handoff
        try:
            if initializer is not None:
                try:
                    await self._initialize(initializer, initargs)
                except BaseException as exc:
                    # Logged, as ThreadPoolExecutor does: a program that submits nothing
                    # more never sees the BrokenLoopExecutor that would say so. Once: the
                    # loop runs no initializer again. (Cancelled by a shutdown, it does
                    # not come here: see _initialize.)
                    _LOGGER.critical("Exception in initializer:", exc_info=True)
                    handoff.fail_backlog(exc)
                    return
                handoff.open(self._loop, self.drain)
            await self._stop
            await self._finish()
        finally:
            if self._grace is not None:
                self._grace.cancel()
            # No wake-up may target the loop once it starts closing. Otherwise:
            #   worker thread                         loop thread
            #   skips a cancelled item, posts it
            #                                         closes the loop
            #   call_soon_threadsafe -> RuntimeError("Event loop is closed")
            # What is handed off from now on is dropped by HandOff.close(): every job is done.
            handoff.stop_draining()

    async def _initialize(
        self, initializer: Callable[..., object], initargs: tuple[Any, ...]
    ) -> None:
        """Run the initializer; raise what it raised (the executor is then broken).

        A sync initializer (and the part of one before it returns an awaitable) blocks
        the loop thread: nothing can interrupt it, and a shutdown request is acted on
        once it has returned. While the awaitable it returned is awaited, the loop drains
        the hand-off, jobs still held back: a shutdown request starts its grace period
        at once, and one that cancels the running coroutine jobs (the end of that grace
        period, leaving ``with`` by an exception, Ctrl-C) cancels the initializer too, as
        the core's shutdown(wait=False) cancels its own. Cancelled so, it has not failed:
        the executor was shut down before it started, and its queued jobs are cancelled
        (the request took them). It is awaited in this task, not one of its own, so the
        loop's task factory (which may make only this task) is not asked again.
        """
        ready = initializer_ready(initializer(*initargs), initializer)
        if not inspect.isawaitable(ready):
            return
        task = asyncio.current_task()
        self._initializing = task
        self._handoff.listen(self._loop, self.drain)
        try:
            await ready
        except asyncio.CancelledError:
            if not self._initializer_stopped:
                raise  # its own CancelledError, not our cancel: it failed
        finally:
            self._initializing = None
        if self._initializer_stopped and task is not None and hasattr(task, "uncancel"):
            task.uncancel()  # (3.11+) ours, delivered or swallowed: this task goes on

    def _stop_initializer(self) -> bool:
        """A request cancels the running coroutine jobs: cancel the async initializer too,
        once, if it still runs. Called from drain(), so main's task waits in it. Returns
        whether this call cancelled it (for the line a Ctrl-C at exit prints)."""
        task = self._initializing
        if task is None or self._initializer_stopped:
            return False
        self._initializer_stopped = True
        task.cancel()
        return True

    def _start_grace(self, grace: float) -> None:
        """A shutdown(timeout=grace) call: cancel what still runs ``grace`` seconds from
        now. Each call's counts; the earliest end wins, as in the core's _start_grace: a
        later, longer one never extends it, and once it has passed (the handle is kept
        until the loop stops) no later one can come sooner."""
        if self._idle.done():
            return  # every job is done: nothing left to cancel
        self._grace = grace_timer(self._loop, self._grace, grace, self._grace_over)

    def _grace_over(self) -> None:
        """The grace period is over: cancel whatever can be cancelled."""
        if not self._idle.done():
            cancel_all = ShutdownRequest(cancel_queued=True, cancel_running=True)
            self._handoff.request_shutdown_threadsafe(cancel_all)

    async def _finish(self) -> None:
        """Wait for every job (cancelling some, as requested); then stop the core."""
        await self._idle
        if self._grace is not None:  # every job is done: nothing left to cancel
            self._grace.cancel()
            self._grace = None
        await self._handoff.scheduler.core.shutdown(wait=True)

    def drain(self) -> None:
        """Take the whole batch from the hand-off and act on it."""
        handoff = self._handoff
        batch = handoff.take_batch()
        scheduler = handoff.scheduler
        for job in batch.to_start:
            scheduler.start(job)
        request = batch.shutdown
        if request is not None:
            # Before the finished jobs below free their slots: a job that was waiting
            # when shutdown(cancel_futures=True) was called must not start after all.
            running, queued = scheduler.cancel_started(request)
            stopped = False  # whether this request cancelled the initializer
            if request.cancel_running:
                running += cancel_tails(scheduler)  # and those on their way
                stopped = self._stop_initializer()
            if request.report is not None:
                blocking = handoff.blocking_calls()
                request.send_report(ExitReport(running, queued, blocking, stopped))
            if not self._stop.done():
                self._stop.set_result(request)  # main goes on to _finish
            if request.grace is not None:  # (the initializer may still run: _initialize)
                self._start_grace(request.grace)
        for item in batch.done_items:
            scheduler.on_work_done(item)
        for item in batch.tails:
            await_outcome(scheduler, item)
        for call in batch.calls:
            call()
        # (Not while the initializer runs: the jobs it holds back hold no slot yet.)
        if self._stop.done() and not self._idle.done() and self._initializing is None and (
            handoff.idle_at_shutdown()
        ):
            self._idle.set_result(None)
