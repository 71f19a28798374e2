"""BridgeFuture: the concurrent.futures.Future a ThreadedLoopExecutor hands back."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, Optional, TypeVar

if TYPE_CHECKING:
    import asyncio

    from ._loop_thread import LoopThread

__all__ = ["BridgeFuture"]

_LOGGER = logging.getLogger("concurrent.futures")  # where the stdlib logs failing callbacks

T = TypeVar("T")

_DEADLOCK_MESSAGE = (
    "result() cannot wait on the event loop thread of {owner!r}: the job needs that thread "
    "to finish, so the call would deadlock; await asyncio.wrap_future(future) instead"
)


class BridgeFuture(concurrent.futures.Future[T]):
    """A future whose job runs on (or is scheduled by) a ThreadedLoopExecutor's loop.

    It differs from a stock future in three ways, all for coroutine jobs:

    * it stays PENDING while its coroutine runs (as ``asyncio.run_coroutine_threadsafe``'s
      future does), so ``cancel()`` still succeeds and cancels the task on the loop;
      ``running()`` reports the truth from ``_started`` instead of the state;
    * ``cancel()`` notifies ``wait()``/``as_completed()`` waiters at once
      (CANCELLED_AND_NOTIFIED), so no waiter depends on the executor to do it later;
    * ``result()``/``exception()`` refuse to block the executor's own loop thread.

    A blocking job is marked RUNNING by its worker thread, as ThreadPoolExecutor does, so
    ``cancel()`` of a blocking call that has started returns False.
    """

    # Class-level defaults: most futures never change them, and not setting them in
    # __init__ keeps the per-job cost down (the hand-off is benchmarked).
    _job: Optional[asyncio.Future[Any]] = None  # set on the loop thread once submitted
    _started = False  # a coroutine job has begun running on the loop
    _withdrawn = False  # the loop took a blocking job back: no worker may start it
    _bridge: LoopThread

    #
    # Public API
    #

    def cancel(self) -> bool:
        """Cancel the job unless it has finished, or is a blocking call already running.

        A coroutine job is cancelled even while it runs: the future is cancelled at once
        and the job's task is cancelled on the loop soon after (it may still be running
        briefly, and ``shutdown(wait=True)`` waits for it).
        """
        with self._condition:
            state = self._state
            if state == PENDING:
                # Straight to CANCELLED_AND_NOTIFIED: nobody has to remember to call
                # set_running_or_notify_cancel() later for wait()/as_completed().
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                self._condition.notify_all()
            else:
                # True if already cancelled; False if RUNNING (a blocking call in a
                # thread) or FINISHED.
                return state in (CANCELLED, CANCELLED_AND_NOTIFIED)
        self._invoke_callbacks()
        self._bridge.cancel_job_threadsafe(self)
        return True

    def running(self) -> bool:
        with self._condition:
            return self._state == RUNNING or (self._state == PENDING and self._started)

    def result(self, timeout: Optional[float] = None) -> T:
        try:
            if timeout != 0 and self._state != FINISHED:
                self._check_not_loop_thread()
            return super().result(timeout)
        finally:
            # As the stdlib's result() does: the raised job error's traceback holds this
            # frame, and this frame must not hold the future that holds the error.
            self = None  # type: ignore[assignment]

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if timeout != 0 and self._state != FINISHED:
            self._check_not_loop_thread()
        return super().exception(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        # Our cancel() already notified; the stdlib version would raise for that state.
        with self._condition:
            if self._state == CANCELLED_AND_NOTIFIED:
                return False
        return super().set_running_or_notify_cancel()

    #
    # Executor side
    #

    def _invoke_callbacks(self) -> None:
        # As the stdlib's, plus: a BaseException (SystemExit, KeyboardInterrupt) from a
        # callback run on one of our threads is logged rather than allowed to kill the
        # loop thread or a worker, which would strand every other job. On the caller's
        # own thread (cancel() from user code) it propagates, as it always should.
        for callback in self._done_callbacks:  # type: ignore[attr-defined]
            try:
                callback(self)
            except Exception:
                _LOGGER.exception("exception calling callback for %r", self)
            except BaseException:
                bridge = self._bridge
                if not (bridge.is_loop_thread() or bridge.is_worker_thread()):
                    raise
                _LOGGER.critical("exception calling callback for %r", self, exc_info=True)

    def _check_not_loop_thread(self) -> None:
        if threading.get_ident() == self._bridge.loop_ident and not self.done():
            raise RuntimeError(_DEADLOCK_MESSAGE.format(owner=self._bridge.owner_repr))

    def _start_running(self) -> bool:
        """Worker thread: claim a blocking job. False if cancelled or withdrawn meanwhile."""
        with self._condition:
            if self._state == PENDING and not self._withdrawn:
                self._state = RUNNING
                return True
            return False

    def _withdraw(self) -> bool:
        """Loop thread: stop any worker from starting this blocking job.

        True when no worker ever will (the job was not started, or was cancelled); False
        when a worker has it already, so its outcome will arrive from that thread.
        """
        with self._condition:
            state = self._state
            if state == PENDING:
                self._withdrawn = True
                return True
            return state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def _set_cancelled(self) -> None:
        """Loop thread: the executor cancelled the job (or it was cancelled on the loop)."""
        with self._condition:
            if self._state != PENDING and self._state != RUNNING:
                return  # already resolved: the user cancelled it, or a worker ran it
            # RUNNING only for a blocking job whose call returned an awaitable that was
            # then cancelled on the loop.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def _try_set_result(self, result: Any) -> None:
        try:
            self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancel() from another thread won the race: its outcome stands

    def _try_set_exception(self, exc: BaseException) -> None:
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass  # cancel() from another thread won the race: its outcome stands
