"""The blocking callables of a DaskExecutor's jobs in one worker process: the thread pool
they run in (at most per_worker at once, as LoopExecutor(max_workers=n) runs them) and a
count of the calls running there, which the process's stop waits for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from typing import Any, Callable

from ._chunk_run import JobExit

__all__ = ["BlockingCalls"]


class BlockingCalls:
    """Runs blocking calls in its own threads, started on demand, and counts them."""

    def __init__(self, size: int, name: str) -> None:
        self._lock = threading.Lock()
        self._running = 0  # guarded by _lock: calls running in the pool's threads
        self._pool = concurrent.futures.ThreadPoolExecutor(
            size, thread_name_prefix=f"{name}-blocking"
        )

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
        it returns, as ``lambda: fetch(url)`` does, on the loop)."""
        calling = loop.run_in_executor(
            self._pool, functools.partial(self._counted, fn, args, kwargs)
        )
        try:
            result = await calling
        except asyncio.CancelledError as exc:
            if calling.cancelled():  # the job was cancelled
                raise
            # The call raised it itself: its error, as on a ThreadPoolExecutor (and the
            # bridge), not a cancel of the job's task, which asyncio would make of it.
            raise JobExit(repr(exc)) from exc
        if inspect.isawaitable(result):
            result = await result
        return result

    def shutdown(self, *, wait: bool) -> None:
        """No more calls; those not started never will (``wait``: for those running)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _counted(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A pool thread: the blocking call, counted while it runs."""
        with self._lock:
            self._running += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1
