"""The main thread's waits wake up every ``SIGNAL_CHECK_SECONDS``, as the bridge's do.

Python runs a signal's handler in the main thread only, between bytecodes: a SIGINT
raised in another thread (``signal.raise_signal`` from a timer), or handed by the kernel
to another thread, does not interrupt a lock wait, which would go on until the jobs end
by themselves. ``wait_sliced`` is that wait cut into slices; ``JobFuture`` is the future
of a submitted job, whose ``result()`` and ``exception()`` wait so.

Threading model: any thread; only the main thread slices.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Optional, TypeVar

import distributed

from ..sync_bridge._future_locks import SIGNAL_CHECK_SECONDS

__all__ = ["JobFuture", "wait_dask", "wait_sliced"]

T = TypeVar("T")


def wait_sliced(
    future: concurrent.futures.Future[Any], timeout: Optional[float] = None
) -> Optional[float]:
    """Wait until ``future`` is done or ``timeout`` has passed, the main thread in slices;
    return the timeout of the caller's own wait (``result()``): 0 once that is over. Off
    the main thread, and for a timeout a lock refuses (inf, nan, too large), ``timeout``:
    the caller's one plain wait then raises as the stdlib's does."""
    if threading.current_thread() is not threading.main_thread() or (
        timeout is not None and not 0 <= timeout <= threading.TIMEOUT_MAX
    ):
        return timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    while not future.done():
        left = SIGNAL_CHECK_SECONDS
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
            if left <= 0:
                break
        concurrent.futures.wait([future], left)
    return 0


class JobFuture(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` whose waits in the main thread see a Ctrl-C."""

    def result(self, timeout: Optional[float] = None) -> T:
        return super().result(wait_sliced(self, timeout))

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        return super().exception(wait_sliced(self, timeout))


def wait_dask(tasks: list[Any]) -> None:
    """Wait until every dask future of ``tasks`` is done. dask's ``wait`` raises its
    FuturesCancelledError, at once, when one is cancelled: a chunk that shutdown
    (cancel_futures=True), from another thread, cancels while the closing waits for it."""
    while tasks:
        try:
            distributed.wait(tasks)
            return
        except concurrent.futures.CancelledError:  # (dask's subclasses it)
            tasks = [task for task in tasks if not task.cancelled()]
