"""WorkerPool: the threads a ThreadedLoopExecutor runs blocking callables in."""

from __future__ import annotations

import contextvars
import inspect
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import asyncio

    from ._future import BridgeFuture

__all__ = ["WorkItem", "WorkerPool"]


class WorkItem:
    """One blocking job on its way through a worker thread.

    The loop thread creates it and awaits ``waiter``; the worker runs the call, sets the
    job's future itself (no loop hop on the result path, as in ThreadPoolExecutor) and
    then posts the item back so the loop frees the job's slot.
    """

    __slots__ = ("args", "ctx", "finished", "fn", "future", "kwargs", "outcome", "waiter")

    def __init__(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
        waiter: asyncio.Future[None],
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
        self.outcome: Optional[Any] = None


def _work(
    jobs: queue.SimpleQueue[Optional[WorkItem]],
    idle: threading.Semaphore,
    post_done: Callable[[WorkItem], None],
) -> None:
    """Worker thread body. Holds no reference to the executor, only to its queue."""
    while True:
        item = jobs.get()
        if item is None:
            return  # WorkerPool.stop()
        future = item.future
        if future._start_running():
            try:
                result = item.ctx.run(item.fn, *item.args, **item.kwargs)
            except BaseException as exc:
                # KeyboardInterrupt and SystemExit too: they fail this job only (DESIGN).
                future.set_exception(exc)
                del exc  # break the frame <-> traceback cycle
            else:
                if inspect.isawaitable(result):
                    item.outcome = result
                else:
                    future.set_result(result)
                del result
        # Post skipped items too (cancelled or withdrawn meanwhile): the loop ignores
        # them, but nobody then depends on who noticed the cancellation first.
        post_done(item)
        del item, future
        idle.release()


class WorkerPool:
    """Threads started on demand, at most ``cap`` of them, reused while they live.

    Threading model: ``submit``, ``cap`` and ``stop`` are called on the loop thread only;
    ``_work`` runs in the workers.
    """

    def __init__(self, name_prefix: str, cap: int, post_done: Callable[[WorkItem], None]) -> None:
        self._name_prefix = name_prefix
        self.cap = cap  # loop thread only; shrinking stops no thread, it only starts none
        self._post_done = post_done
        self._jobs: queue.SimpleQueue[Optional[WorkItem]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one release per worker waiting for a job
        self._threads: list[threading.Thread] = []
        self._started = 0

    def submit(self, item: WorkItem) -> None:
        self._jobs.put(item)
        if self._idle.acquire(blocking=False):
            return  # an idle worker takes it
        if len(self._threads) < self.cap:
            thread = threading.Thread(
                name=f"{self._name_prefix}_worker_{self._started}",
                target=_work,
                args=(self._jobs, self._idle, self._post_done),
            )
            thread.start()
            self._threads.append(thread)
            self._started += 1

    def thread_idents(self) -> set[Optional[int]]:
        return {thread.ident for thread in self._threads}

    def stop(self) -> None:
        """Stop every worker once the jobs queued before this call are done; join them."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def forget_threads(self) -> None:
        """In a forked child: the parent's workers do not exist here."""
        self._threads.clear()
