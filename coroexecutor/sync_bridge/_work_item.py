"""WorkItem: one blocking job on its way through a worker thread, the outcomes a worker
leaves in it for the loop thread, and how the loop awaits an awaitable the call returned."""

from __future__ import annotations

import contextvars
import inspect
from concurrent.futures._base import PENDING, RUNNING
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import asyncio

    from ._future import BridgeFuture

__all__ = [
    "Failed", "FailedInWorker", "Finished", "Release", "WorkItem", "await_returned",
    "cancel_if_stopped", "close_unawaited", "job_call",
]


class Failed:
    """A blocking attempt's error, left in its item's ``outcome`` for the loop thread by a
    worker when a retry policy applies to the job: the loop asks the policy whether the
    job fails with it or runs again (see _retries). The future is not resolved till then."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Finished:
    """The outcome of a blocking job the loop runs (``job_timeout``, ``max_per_second``),
    left in its item by the worker: the loop thread sets it on the job's future once the
    core has counted the job, so a caller woken by the future finds it in ``stats``."""

    __slots__ = ("error", "result")

    def __init__(self, result: Any, error: Optional[BaseException]) -> None:
        self.result = result
        self.error = error

    def resolve(self, future: BridgeFuture[Any]) -> None:
        if self.error is None:
            future.set_result(self.result)
        else:
            future.set_exception(self.error)


class FailedInWorker(Exception):
    """Ends the task of a blocking job the core governs whose call raised: the job's
    future has the call's own error; this makes the core count the job as failed."""


class WorkItem:
    """One blocking job on its way through a worker thread.

    For a *direct* job (``waiter is None``), the worker sets the job's future itself (no
    loop hop on the result path, as in ThreadPoolExecutor), then releases the job's slot
    through ``release``. For a job the loop runs (``job_timeout`` or ``max_per_second``
    need the core), it leaves the outcome in ``outcome`` (a Finished) and posts the item
    back: the loop's wrapper task, awaiting ``waiter``, sets the future and frees the slot.
    """

    __slots__ = ("args", "ctx", "finished", "fn", "future", "kwargs", "outcome", "waiter")

    def __init__(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
        waiter: Optional[asyncio.Future[None]] = None,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.ctx = ctx
        self.waiter = waiter  # loop thread only: replaced while the job is being cancelled
        self.finished = False  # loop thread only: the worker has posted the item back
        # Set by the worker when fn returned an awaitable (``lambda: fetch(url)``): the
        # loop awaits it, since awaitables belong on the loop, not in a worker thread.
        # Or a Failed: the call raised, and the loop asks the job's retry policy. Or a
        # Finished: the outcome of a job the loop runs, for the loop to set.
        self.outcome: Optional[Any] = None

    def returned(self, awaitable: Any) -> None:
        """Worker thread: the call returned ``awaitable``, for the loop to await as the
        rest of the job (``lambda: fetch(url)``). The blocking part is over: from here on
        the job is cancellable as a coroutine job is, its future PENDING again and
        started (see BridgeFuture), so that cancel() returns True and the loop cancels
        the awaitable, or closes it unawaited if it has not begun (see _tails)."""
        self.outcome = awaitable
        future = self.future
        # Under the future's lock, as cancel() reads and writes the state in one step.
        with future._condition:
            if future._state == RUNNING:  # (always: cancel() leaves RUNNING as it is)
                future._started = True  # first: running() stays True throughout
                future._state = PENDING

    def forget_call(self) -> None:
        """Loop thread: this direct item's attempt failed, and what follows is decided (a
        next attempt gets an item of its own). Let go of the job's call and context: the
        loop's batch that brought the item back is kept by the traceback of a policy's
        error (see _retries.decide). The item is never read again."""
        del self.fn, self.args, self.kwargs, self.ctx


# release(item) -> the next direct job, which inherits the slot, or None.
Release = Callable[[WorkItem], Optional[WorkItem]]


async def await_returned(awaitable: Any, fn: Any, args: Any, kwargs: Any) -> Any:
    """The loop's part of the job ``fn(*args, **kwargs)``, a blocking call that returned
    ``awaitable`` (``lambda: fetch(url)``): the job is the call and its awaitable
    together, so a note on the awaitable's error names the call (see job_call)."""
    del fn, args, kwargs  # the awaitable's error keeps this frame, which keeps no call
    return await awaitable


def cancel_if_stopped(future: BridgeFuture[Any]) -> None:
    """Loop thread: the job's blocking call returned an awaitable, and the job is
    cancellable again (see WorkItem.returned). If the bridge cancelled it while the call
    ran (its map closed or dropped: ``_last_attempt``), cancel it now: that cancel()
    returned False, the call being RUNNING, and nobody would make it again, so the
    awaitable would be awaited to its end, and ``with`` would wait for it. (A shutdown
    that cancels the running jobs is remembered by the Scheduler: see _tails.)"""
    if future._last_attempt:
        future.cancel()  # True: the awaitable is then closed unawaited, or cancelled


def close_unawaited(awaitable: Any) -> None:
    """The job was cancelled before the loop began to await what its blocking call
    returned: close it if it is a coroutine, or "coroutine ... was never awaited"."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def job_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]:
    """The job a wrapper runs as ``fn(*args, **kwargs)`` on the loop, and whether it is a
    coroutine job: for await_returned, the blocking call that returned the awaitable."""
    if fn is await_returned:
        return args[1], args[2], args[3], False
    return fn, args, kwargs, True
