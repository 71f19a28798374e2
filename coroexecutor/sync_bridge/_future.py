"""BridgeFuture: the concurrent.futures.Future a ThreadedLoopExecutor hands back."""

from __future__ import annotations

import concurrent.futures
import logging
from concurrent.futures._base import (
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, TypeVar, Union

from .._retry import INHERIT
from . import _future_locks as _locks
from ._future_locks import (
    CANCELLED_STATES,
    CANCELLING,
    DONE_STATES,
    LazyFuture,
    add_callback_locked,
    finish_first,
    lock_of,
    repr_unlocked,
    wait_locked,
)

if TYPE_CHECKING:
    import asyncio

__all__ = ["BridgeFuture", "FutureOwner"]

_LOGGER = logging.getLogger("concurrent.futures")  # where the stdlib logs failing callbacks

T = TypeVar("T")

class FutureOwner(Protocol):
    """What a BridgeFuture needs of its executor's hand-off (HandOff, in ``_handoff``)."""

    owner_repr: str

    def cancel_job_threadsafe(self, future: BridgeFuture[Any]) -> None: ...

    def notify_waiters_threadsafe(self, future: BridgeFuture[Any]) -> None: ...

    def is_loop_thread(self) -> bool: ...

    def is_worker_thread(self) -> bool: ...


_DEADLOCK_MESSAGE = (
    "result() cannot wait on the event loop thread of {owner!r}: the job needs that thread "
    "to finish, so the call would deadlock; await asyncio.wrap_future(future) instead"
)


class BridgeFuture(LazyFuture[T]):
    """A future whose job runs on (or is scheduled by) a ThreadedLoopExecutor's loop.

    It differs from a stock future in three ways, all for coroutine jobs:

    * it stays PENDING while its coroutine runs (as ``asyncio.run_coroutine_threadsafe``'s
      future does), so ``cancel()`` still succeeds and cancels the task on the loop;
      ``running()`` reports the truth from ``_started`` instead of the state;
    * ``cancel()`` makes it CANCELLED_AND_NOTIFIED at once, so no waiter depends on the
      job to do it later: a later ``wait()``/``as_completed()`` counts it done, and those
      already waiting on it are told by the loop thread (see ``cancel``);
    * ``result()``/``exception()`` refuse to block the executor's own loop thread.

    A blocking job is marked RUNNING by its worker thread, as ThreadPoolExecutor does, so
    ``cancel()`` of a blocking call that has started returns False; if the call returns an
    awaitable, the job is PENDING and started again while the loop awaits it (see _tails).

    Its condition and the stock future's two lists are made on first use (the base,
    :class:`~coroexecutor.sync_bridge._future_locks.LazyFuture`).
    """

    # The job's task, from start to finish; between two attempts (retry=), the timer of
    # the next one: cancel() ends either.
    _job: Optional[Union[asyncio.Future[Any], asyncio.TimerHandle]]
    _started: bool  # a coroutine job (or a blocking call's awaitable) has begun on the loop
    _withdrawn: bool  # the loop took a blocking job back: no worker may start it
    # The job waits for a worker thread or for the rate limiter, not only for its turn on
    # a free slot: shutdown(cancel_futures=True) cancels it. A job that got a slot (and a
    # thread) when it was submitted counts as started, and runs (issue 16, item 8).
    _queued: bool
    # The job waits in the bridge's backlog for a slot (guarded by the bridge's _lock):
    # a cancel() then counts it as cancelled at once, not when it reaches the front.
    _in_backlog: bool
    # Class attributes, set on an instance only when needed, so that a job that needs
    # none pays nothing: the retry policy of a map given its own retry= (INHERIT: the
    # executor's), and the job's _retries.Attempts once an attempt has failed under a
    # policy (loop thread; typed Any: importing the class here would be a cycle).
    _retry_policy: Any = INHERIT
    _attempts: Any = None
    _map_window: Any = None  # a buffered map's _window.MapWindow, under retry= (see _map)
    # Its map was closed, or a shutdown cancels the running jobs, as an attempt runs: if it
    # fails, the job ends with its error (Retries.stopped); the core's own cancel (cancel_job).
    _last_attempt: bool = False
    # The note for the JobTimeoutError that may end the job's attempt, kept as the core
    # cancels the attempt for its job_timeout (see Retries.attempt_cancelled).
    _timeout_note: Optional[str] = None

    def __init__(self, bridge: FutureOwner) -> None:
        # Future.__init__ is not called: the condition and lists it makes are made by the
        # properties below, on first use. Every attribute is set here, always in this
        # order, so that every instance keeps them in the class's shared key table: one
        # set later for the first time can make CPython give that instance a dict of its
        # own, another object per future for the garbage collector.
        self._bridge = bridge
        self._state = PENDING
        self._result = None
        self._exception = None
        self._lazy_condition = None
        self._lazy_waiters = None
        self._lazy_callbacks = None
        self._job = None
        self._started = False
        self._withdrawn = False
        self._queued = False
        self._in_backlog = False
        self._unnotified = None
        self._annotate = False  # note on the job's error which job it was (annotate_errors)
        self._map_index: Optional[int] = None  # a map job's input position, for that note

    #
    # Public API
    #

    def cancel(self) -> bool:
        """Cancel the job unless it has finished, or is a blocking call already running.

        A coroutine job is cancelled even while it runs: the future is cancelled at once
        and the job's task is cancelled on the loop soon after (it may still be running
        briefly, and ``shutdown(wait=True)`` waits for it).
        """
        lock = lock_of(self._condition)
        state = FINISHED  # what this call found: PENDING once it has cancelled the future
        try:
            # Read and cancelled in one step, the lock on one line (see _accept), with no
            # call in it: a Ctrl-C leaves the future either as it was or cancelled, and
            # the lock free. Straight to CANCELLED_AND_NOTIFIED: nobody has to remember
            # to call set_running_or_notify_cancel() later for wait()/as_completed(). The
            # waiters those installed are kept in the same step, to be told once.
            with lock: self._unnotified, state, self._state = self._lazy_waiters and [*self._lazy_waiters] if self._state == PENDING else self._unnotified, self._state, CANCELLING[self._state]  # noqa: E501, E701
            if state != PENDING:
                # True if already cancelled; False if RUNNING (a blocking call in a
                # thread) or FINISHED.
                return state in CANCELLED_STATES
            with lock: self._condition.notify_all()  # noqa: E701  (result() waiters)
            if self._unnotified:
                # Told from the loop thread: the stdlib's waiters are Python code (an
                # Event's Condition under them), which a Ctrl-C here could cut short
                # with the waiter told half (its Event's lock held, its count not
                # lowered), for ever; no signal handler runs on the loop thread.
                self._bridge.notify_waiters_threadsafe(self)
            self._invoke_callbacks()
            self._bridge.cancel_job_threadsafe(self)
        except BaseException:
            if state == PENDING:
                # Cut short (Ctrl-C) once cancelled: its job is cancelled all the same, or
                # it would hold its slot, or run on, with nobody to take its outcome.
                # Condition waiters (result()) are woken again, and wait() waiters told
                # (once: whoever tells them takes _unnotified first).
                with lock: self._condition.notify_all()  # noqa: E701
                if self._unnotified:
                    self._bridge.notify_waiters_threadsafe(self)
                self._bridge.cancel_job_threadsafe(self)
            raise
        return True

    def cancelled(self) -> bool:
        return self._state in CANCELLED_STATES  # one read: no need to lock (or make) _condition

    def running(self) -> bool:
        return self._state == RUNNING or (self._state == PENDING and self._started)  # reads

    def done(self) -> bool:
        return self._state in DONE_STATES  # one read: no need to lock (or make) _condition

    def result(self, timeout: Optional[float] = None) -> T:
        # Future.result(), with less to run between the submit that woke the loop and
        # this thread's sleep (the loop thread needs the GIL this thread holds till then).
        if self._state != FINISHED:
            self._wait_finished(timeout)
        # FINISHED is final, and the outcome was written before it: no lock needed.
        exc = self._exception
        if exc is None:
            return self._result  # type: ignore[return-value]  # typeshed: T | None; FINISHED: T
        try:
            raise exc
        finally:
            # As the stdlib's result() does: the raised job error's traceback holds this
            # frame, and this frame must not hold the future that holds the error.
            self = exc = None  # type: ignore[assignment]  # drops the frame's refs, not a value

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        # As result(): the stdlib's takes the Condition, whose Python __enter__ and
        # __exit__ a Ctrl-C can cut short with the lock held (see lock_of).
        if self._state != FINISHED:
            self._wait_finished(timeout)
        return self._exception  # final once FINISHED: no lock needed

    def _wait_finished(self, timeout: Optional[float]) -> None:
        """result() and exception() of a future not yet FINISHED: wait until it is, or
        raise CancelledError (cancelled) or TimeoutError (still pending at ``timeout``)."""
        if timeout != 0:
            self._check_not_loop_thread()
        condition = self._condition
        # The condition's own lock, on one line (see _accept and lock_of).
        with lock_of(condition): wait_locked(self, condition, timeout)  # noqa: E701
        state = self._state
        if state != FINISHED:
            if state in CANCELLED_STATES:
                raise concurrent.futures.CancelledError()
            raise concurrent.futures.TimeoutError()

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        # As the stdlib's, with the lock on one line (see lock_of and _accept): a Ctrl-C
        # leaves fn kept (it will be called) or not, and the lock free.
        with lock_of(self._condition): added = add_callback_locked(self, fn)  # noqa: E701
        if added:
            return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def set_running_or_notify_cancel(self) -> bool:
        # Our cancel() already notified; the stdlib version would raise for that state.
        # Read and changed in one step, the lock on one line, as in cancel().
        with lock_of(self._condition): state, self._state = self._state, RUNNING if self._state == PENDING else self._state  # noqa: E501, E701
        if state == PENDING:
            return True
        if state == CANCELLED_AND_NOTIFIED:  # (never CANCELLED: cancel() skips it)
            return False
        _LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def __repr__(self) -> str:
        return repr_unlocked(self)  # the stdlib's takes the lock (see lock_of)

    #
    # Executor side
    #

    def _invoke_callbacks(self) -> None:
        # As the stdlib's, plus: a BaseException (SystemExit, KeyboardInterrupt) from a
        # callback run on one of our threads is logged rather than allowed to kill the
        # loop thread or a worker, which would strand every other job. On the caller's
        # own thread (cancel() from user code) it propagates, as it always should.
        for callback in self._lazy_callbacks or ():
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
        bridge = self._bridge
        if bridge.is_loop_thread() and not self.done():
            raise RuntimeError(_DEADLOCK_MESSAGE.format(owner=bridge.owner_repr))

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
        when a worker has it already, or had it (its call returned an awaitable: started,
        cancelled or not), so its outcome will arrive from that thread.
        """
        with self._condition:
            state, started = self._state, self._started
            if state == PENDING and not started:
                self._withdrawn = True
                return True
            return state in CANCELLED_STATES and not started

    def _back_to_pending(self) -> bool:
        """Loop thread, under the bridge's lock: a failed attempt is to be retried, so the
        job waits again (``cancel()`` succeeds). False if it was cancelled meanwhile."""
        with self._condition:
            if self._state != PENDING and self._state != RUNNING:
                return False
            self._state = PENDING  # RUNNING: a blocking call whose worker let it go
            self._started = self._queued = False  # (never _withdrawn: see Retries)
            return True

    def _set_cancelled(self) -> None:
        """Loop thread: the executor cancelled the job (or it was cancelled on the loop)."""
        with self._condition:
            if self._state != PENDING and self._state != RUNNING:
                return  # already resolved: the user cancelled it, or a worker ran it
            # RUNNING only for a blocking job whose retry policy raised CancelledError (a
            # call that returned an awaitable is PENDING again: see WorkItem.returned).
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._lazy_waiters or ():
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def _try_set_result(self, result: Any) -> None:
        self._finish(result, None)

    def _try_set_exception(self, exc: BaseException) -> None:
        self._finish(None, exc)

    def _finish(self, result: Any, exc: Optional[BaseException]) -> bool:
        """Resolve the future, unless cancel() from another thread won the race (False)."""
        condition = self._lazy_condition
        if condition is None:
            # The lock on one line, as in _condition.
            with _locks.first_use_lock: finished = finish_first(self, result, exc)  # noqa: E701
            if finished is not None:
                return finished
            condition = self._condition  # made meanwhile, by a thread about to wait
        # As set_result()/set_exception(), without making the waiter list for nothing.
        with condition:
            if self._state in DONE_STATES:
                return False  # cancel() from another thread won the race: its outcome stands
            self._result = result
            self._exception = exc
            self._state = FINISHED
            for waiter in self._lazy_waiters or ():
                if exc is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            condition.notify_all()
        if self._lazy_callbacks:
            self._invoke_callbacks()
        return True
