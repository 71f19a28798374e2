"""Waiting for a bridge's loop thread to end: from ``shutdown(wait=True)``, a ``with`` block
or an ``async with`` block, where a Ctrl-C or a cancellation first cancels the jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from ._loop_thread import LoopThread
from ._options import ShutdownRequest

__all__ = [
    "CANCEL_ALL", "FAILED_EXIT", "NORMAL_EXIT", "check_may_wait", "shut_down", "wait_stopped"
]

# Leaving a block by an exception, or a Ctrl-C while waiting: cancel what can be cancelled.
CANCEL_ALL = ShutdownRequest(cancel_queued=True, cancel_running=True)
# shut_down()'s request and the call named in its refusals, when a with block is left.
NORMAL_EXIT = (ShutdownRequest(), "shutdown(wait=True)")
FAILED_EXIT = (CANCEL_ALL, "leaving the with block")
_LOGGER = logging.getLogger("coroexecutor")

_WAIT_ON_LOOP_MESSAGE = (
    "{call} cannot wait on the event loop thread of {exe!r}: that thread must run the jobs "
    "being waited for, so the call would deadlock; use shutdown(wait=False) there"
)
_WAIT_ON_WORKER_MESSAGE = (
    "{call} cannot wait on a worker thread of {exe!r}: that thread runs a job being waited "
    "for, so the call would deadlock; use shutdown(wait=False) there"
)


def check_may_wait(bridge: LoopThread, call: str, exe: object) -> None:
    """Refuse to wait on a thread that the jobs being waited for need (``exe``: the
    executor, named in the message)."""
    handoff = bridge.handoff
    if handoff.is_loop_thread():
        raise RuntimeError(_WAIT_ON_LOOP_MESSAGE.format(call=call, exe=exe))
    if handoff.is_worker_thread():
        raise RuntimeError(_WAIT_ON_WORKER_MESSAGE.format(call=call, exe=exe))


def shut_down(bridge: LoopThread, request: ShutdownRequest, call: str, exe: object) -> None:
    """Refuse the threads the jobs need, request the shutdown, wait for the loop thread to
    end; a Ctrl-C anywhere in these cancels the jobs first.

    A KeyboardInterrupt is treated as one from the body of a ``with`` block: cancel the
    queued and running coroutine jobs, wait for them to finish cancelling, then re-raise
    it. Also one raised before the request was recorded (the check, the request itself):
    otherwise the block would be left with every job pending and the threads alive. A
    second Ctrl-C ends that wait too; the loop thread then finishes the cancelled jobs in
    the background (the exit hook waits for it).
    """
    try:
        check_may_wait(bridge, call, exe)
        bridge.handoff.request_shutdown_threadsafe(request)
        _LOGGER.debug("waiting for the jobs of %s (Ctrl-C cancels them)", bridge.owner_repr)
        bridge.join()
    except KeyboardInterrupt:
        # Raised in the main thread by the default SIGINT handler, most often in
        # join(): without this, the jobs would run on (or hold the exit) unseen. The main
        # thread is never the loop thread nor a worker: this wait cannot deadlock.
        bridge.handoff.request_shutdown_threadsafe(CANCEL_ALL)
        bridge.join()
        raise


async def wait_stopped(bridge: LoopThread, failed: bool) -> None:
    """Shut down as ``with`` does (``failed``: the block raised), waiting without blocking
    the caller's event loop. Cancelling the waiting task cancels the queued and running
    coroutine jobs, still waits for them, then re-raises the cancellation."""
    handoff = bridge.handoff
    handoff.request_shutdown_threadsafe(CANCEL_ALL if failed else ShutdownRequest())
    stopped = asyncio.wrap_future(bridge.stopped_future())
    cancelled: Optional[asyncio.CancelledError] = None
    while not stopped.done():
        try:
            await asyncio.shield(stopped)
        except asyncio.CancelledError as error:
            cancelled = error
            handoff.request_shutdown_threadsafe(CANCEL_ALL)
    bridge.join()  # the thread has run its last statement: this returns at once
    if cancelled is not None:
        try:
            raise cancelled
        finally:
            cancelled = None  # break the frame <-> traceback cycle
