"""LoopRun: what exists while a bridge's loop runs (its stop and idle futures, and the
drain of the hand-off), and its first task, ``main``, which runs the initializer and then
waits for the shutdown. Loop thread only."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Optional

from ._handoff import HandOff
from ._options import ShutdownRequest
from ._tails import await_outcome, cancel_tails

__all__ = ["LoopRun"]


class LoopRun:
    """What exists while the loop runs: its stop and idle futures, and the drain."""

    def __init__(self, handoff: HandOff, loop: asyncio.AbstractEventLoop) -> None:
        self._handoff = handoff
        self._loop = loop
        self._stop: asyncio.Future[ShutdownRequest] = loop.create_future()
        self._idle: asyncio.Future[None] = loop.create_future()  # set: no job holds a slot
        self.started = False  # main's first step has run: its task was made and runs it

    async def main(
        self, initializer: Optional[Callable[..., object]], initargs: tuple[Any, ...]
    ) -> None:
        self.started = True
        handoff = self._handoff
        if initializer is not None:
            try:
                ready = initializer(*initargs)
                if inspect.isawaitable(ready):
                    await ready
            except BaseException as exc:
                handoff.fail_backlog(exc)
                return
            handoff.open(self._loop, self.drain)
        try:
            await self._finish(await self._stop)
        finally:
            # No wake-up may target the loop once it starts closing. Otherwise:
            #   worker thread                         loop thread
            #   skips a cancelled item, posts it
            #                                         closes the loop
            #   call_soon_threadsafe -> RuntimeError("Event loop is closed")
            # What is handed off from now on is dropped by HandOff.close(): every job is done.
            handoff.stop_draining()

    async def _finish(self, request: ShutdownRequest) -> None:
        """Wait for every job (cancelling some, as requested); then stop the core."""
        if request.grace is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), request.grace)
            except asyncio.TimeoutError:
                # The grace period is over: cancel whatever can be cancelled.
                cancel_all = ShutdownRequest(cancel_queued=True, cancel_running=True)
                self._handoff.request_shutdown_threadsafe(cancel_all)
        await self._idle
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
            if request.cancel_running:
                running += cancel_tails(scheduler)  # and those on their way
            if request.report is not None:
                request.send_report((running, queued, handoff.blocking_calls()))
            if not self._stop.done():
                self._stop.set_result(request)
        for item in batch.done_items:
            scheduler.on_work_done(item)
        for item in batch.tails:
            await_outcome(scheduler, item)
        for call in batch.calls:
            call()
        if self._stop.done() and not self._idle.done() and handoff.is_idle():
            self._idle.set_result(None)
