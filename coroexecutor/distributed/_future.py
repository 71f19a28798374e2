"""The main thread's waits wake up every ``SIGNAL_CHECK_SECONDS``, as the bridge's do.

Python runs a signal's handler in the main thread only, between bytecodes: a SIGINT
raised in another thread (``signal.raise_signal`` from a timer), or handed by the kernel
to another thread, does not interrupt a lock wait, which would go on until the jobs end
by themselves. ``wait_sliced`` is that wait cut into slices; ``JobFuture`` is the future
of a submitted job, whose ``result()`` and ``exception()`` wait so.

They also refuse to wait inside ``resolving()``, the sections where the batcher resolves
futures and so runs their done-callbacks: the flusher thread, dask's callback thread and
the closing thread. A done-callback there that waited for another job's future would stop
the very thread that has to resolve it (or send its chunk, or resolve every other future
meanwhile): a hang until shutdown (brk17 F2), where it now gets a RuntimeError at once, as
the bridge's deadlock guard gives one on its loop thread.

Threading model: any thread; only the main thread slices.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional, TypeVar

import distributed

from ..sync_bridge._future_locks import SIGNAL_CHECK_SECONDS

__all__ = ["JobFuture", "resolving", "resolving_here", "wait_dask", "wait_sliced"]

T = TypeVar("T")

_DEADLOCK_MESSAGE = (
    "{method}() cannot wait in a done-callback of a DaskExecutor's future: the thread "
    "running the callback is the one that resolves the executor's futures, so the call "
    "would deadlock; hand the wait to another thread, or use add_done_callback() on the "
    "other future"
)

# Per thread: how many resolving() sections it is in (nested: a done-callback that shuts
# the executor down cancels the other futures from within its own section).
_RESOLVING = threading.local()


@contextlib.contextmanager
def resolving() -> Iterator[None]:
    """Mark this thread, for the ``with`` block, as resolving submitted jobs' futures."""
    depth = getattr(_RESOLVING, "depth", 0)
    _RESOLVING.depth = depth + 1
    try:
        yield
    finally:
        _RESOLVING.depth = depth


def resolving_here() -> int:
    """How many resolving() sections this thread is in (0: none): a done-callback that the
    batcher runs is in one."""
    return int(getattr(_RESOLVING, "depth", 0))


def _check_not_resolving(
    future: concurrent.futures.Future[Any], timeout: Optional[float], method: str
) -> None:
    """Refuse a wait for ``future`` (not done) inside ``resolving()`` (see above); a
    ``timeout`` of 0 waits for nothing, as on the bridge."""
    if getattr(_RESOLVING, "depth", 0) and timeout != 0 and not future.done():
        raise RuntimeError(_DEADLOCK_MESSAGE.format(method=method))


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
    """A ``concurrent.futures.Future`` whose waits in the main thread see a Ctrl-C, and
    that refuses to wait in a done-callback run by the batcher (``resolving()``)."""

    def result(self, timeout: Optional[float] = None) -> T:
        _check_not_resolving(self, timeout, "result")
        return super().result(wait_sliced(self, timeout))

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        _check_not_resolving(self, timeout, "exception")
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
