"""The blocking callables of a DaskExecutor's jobs in one worker process: the thread pool
they run in (at most per_worker at once, as LoopExecutor(max_workers=n) runs them) and a
count of the calls running there, which the process's stop waits for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from typing import Any, Callable

from ._chunk_run import JobExit

__all__ = ["BlockingCalls"]


def _no_executor(task: asyncio.Future[Any]) -> bool:
    return True  # (no job runs before the process's executor is entered)


class BlockingCalls:
    """Runs blocking calls in its own threads, started on demand, and counts them."""

    def __init__(self, size: int, name: str) -> None:
        self._lock = threading.Lock()
        self._running = 0  # guarded by _lock: calls running in the pool's threads
        self._pool = concurrent.futures.ThreadPoolExecutor(
            size, thread_name_prefix=f"{name}-blocking"
        )
        # Whether the process's executor has cancelled a job's task itself (see call):
        # its _pauses.cancelled_job, set on the loop thread once it is entered.
        self.cancelled: Callable[[asyncio.Future[Any]], bool] = _no_executor

    @property
    def running(self) -> int:
        """How many calls have started and not ended (any thread)."""
        with self._lock:
            return self._running

    async def call(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """``fn(*args, **kwargs)`` in a pool thread, awaited on ``loop`` (and an awaitable
        it returns, as ``lambda: fetch(url)`` does, on the loop).

        Cancellation: a call that has not started never will. One that has cannot be
        interrupted, and runs on in its thread (the process's stop waits for it). If the
        executor cancelled the job (its map closed or failed, future.cancel(), a
        shutdown), the job ends cancelled at once and the call's outcome is dropped. If
        job_timeout did, the job keeps its slot until the call ends, and the call's own
        outcome is the attempt's, as on the bridge (see _ended).
        """
        calling = self._pool.submit(self._counted, fn, args, kwargs)
        waiting = asyncio.wrap_future(calling, loop=loop)
        try:
            result = await waiting
        except asyncio.CancelledError as exc:
            if _raised_cancel(waiting):
                # The call raised it itself: its error, as on a ThreadPoolExecutor (and the
                # bridge), not a cancel of the job's task, which asyncio would make of it.
                raise JobExit(repr(exc)) from exc
            task = asyncio.current_task()
            assert task is not None
            if calling.cancel() or self.cancelled(task):
                raise  # it never started; or the executor's own cancel (above)
            ended = await _ended(calling, loop)
            if self.cancelled(task) or _returned_awaitable(ended):
                # The executor's cancel came meanwhile, and sent nothing: the deadline's
                # was the job's one cancel (Outcomes.cancel), and it ends cancelled all
                # the same. Or an awaitable to await: not past the deadline, as on the
                # bridge; the attempt times out (_jobs._with_deadline).
                _drop(ended)
                raise
        else:
            if inspect.isawaitable(result):
                result = await result
            return result
        # Out of the except clause: the call's error gets no cancel as its __context__.
        return _outcome(ended)

    def shutdown(self, *, wait: bool) -> None:
        """No more calls; those not started never will (``wait``: for those running)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _counted(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A pool thread: the blocking call, counted while it runs. Its StopIteration
        leaves as a JobExit (see _stop_exit)."""
        with self._lock:
            self._running += 1
        try:
            return fn(*args, **kwargs)
        except StopIteration as exc:
            raise _stop_exit(exc) from exc
        finally:
            with self._lock:
                self._running -= 1


def _stop_exit(exc: StopIteration) -> JobExit:
    """A call's StopIteration (a stray ``next()`` on an exhausted iterator), carried as
    the JobExit's ``__cause__``: asyncio.wrap_future() cannot put a StopIteration into
    the asyncio future the job awaits (TypeError, logged in a callback), which then never
    resolved, and the job hung for ever, and its map and the executor's exit with it.
    The chunk takes the StopIteration out again as the job's error (as on the bridge,
    whose future holds it, as a ThreadPoolExecutor's does), and asks the retry policy
    about it."""
    return JobExit(repr(exc))


async def _ended(
    calling: concurrent.futures.Future[Any], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[Any]:
    """A job's job_timeout cancelled it while its call ran: wait for the call's end, and
    return its done future, whose outcome is the attempt's (bridge.rst, Retries).

    Ending the job at the deadline failed it with JobTimeoutError while its call ran on:
    its slot went to the next job, which then waited for the busy thread (and timed out
    there, never run), and retry= started the same call again beside it (brk21 F4: three
    overlapping calls, each succeeding, and the future "failed after 3 attempts"). The
    core takes a result returned after its deadline's cancel as the job's, and an error
    raised after it as the attempt's (see _jobs._with_deadline)."""
    ended = asyncio.wrap_future(calling, loop=loop)
    while not ended.done():
        try:
            await asyncio.wait((ended,))
        except asyncio.CancelledError:
            continue  # cancelled again: still the same call to wait for
    return ended


def _outcome(ended: asyncio.Future[Any]) -> Any:
    """The call's result, or its error raised (its own CancelledError as a JobExit)."""
    if _raised_cancel(ended):
        error = ended.exception()
        raise JobExit(repr(error)) from error
    return ended.result()


def _returned_awaitable(ended: asyncio.Future[Any]) -> bool:
    """Whether the call returned an awaitable, for the loop (``lambda: fetch(url)``)."""
    return (
        not ended.cancelled() and ended.exception() is None
        and inspect.isawaitable(ended.result())
    )


def _drop(ended: asyncio.Future[Any]) -> None:
    """Let go of a call's outcome: its error marked retrieved (no "exception was never
    retrieved"), a coroutine it returned closed (no "never awaited")."""
    if not ended.cancelled() and ended.exception() is None:
        result = ended.result()
        if inspect.iscoroutine(result):
            result.close()


def _raised_cancel(done: asyncio.Future[Any]) -> bool:
    """Whether the call of this done future raised CancelledError itself."""
    return (
        done.done() and not done.cancelled()
        and isinstance(done.exception(), asyncio.CancelledError)
    )
