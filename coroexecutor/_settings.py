"""The executor's live settings: ``max_workers``, ``max_per_second`` and ``burst``, read
anywhere and set on its loop, and the ``stats`` snapshot, read on its loop; and the check
that refuses both from another thread while that loop runs.

``Settings`` is a base class of CoroutineExecutor that holds nothing: properties must be
on the class, and their getters and setters, with their docstrings (the reference pages
show them), would not fit in _executor.py. Like the functions of the other modules, they
read and change the executor through the ``Core`` protocol; the work of a change is done
where it belongs (``set_limit``, ``Slots.set_rate``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional

from ._lifecycle import set_limit
from ._startup import check_loop
from ._state import State
from ._stats import ExecutorStats
from ._validate import check_max_workers, check_rate

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["DEFAULT_MAX_WORKERS", "Settings", "counts", "set_rate"]

DEFAULT_MAX_WORKERS = 1000


#
# Threads
#


def _loop_elsewhere(exe: Core) -> bool:
    """Whether the loop the executor is bound to runs, on another thread than this one
    (a loop runs on one thread, and a thread runs one loop at a time)."""
    return exe._bound and exe._loop.is_running() and asyncio._get_running_loop() is not exe._loop


def check_setter_thread(exe: Core, name: str) -> None:
    """Refuse a setter called on another loop, or off the thread of the running loop the
    executor is bound to: it would change the slots, the limiter and the backlog under
    the loop's feet (and under an eager task factory start a queued job on the calling
    thread). With no loop running, once the executor's own has finished, it is allowed."""
    if _loop_elsewhere(exe):
        raise RuntimeError(
            f"{exe!r}.{name} can only be set on the thread of its event loop; from another"
            f" thread use loop.call_soon_threadsafe(setattr, executor, {name!r}, value), or"
            " LoopExecutor, whose setters are thread-safe"
        )
    if asyncio._get_running_loop() is not None:
        check_loop(exe)  # on another loop, once its own has finished: refused as any call


def check_stats_thread(exe: Core) -> None:
    """Refuse ``stats`` read off the thread of the running loop the executor is bound to.

    The loop moves jobs between the counts while a snapshot is taken: read from a
    monitoring thread, one said ``submitted=12601`` against counts summing to 12664,
    and with ``key=`` the look for the busiest key met the keys' lines changing size
    under it. Once that loop has stopped the counts are final, and any thread (any loop)
    may read them; before first use there are none to tear.
    """
    if _loop_elsewhere(exe):
        raise RuntimeError(
            f"{exe!r}.stats can only be read on the thread of its event loop while that"
            " loop runs; from another thread read it on the loop (with"
            " loop.call_soon_threadsafe or asyncio.run_coroutine_threadsafe), or use"
            " LoopExecutor, whose stats any thread may read"
        )


def counts(exe: Core) -> ExecutorStats:
    """The ``stats`` snapshot, not checked: the bridge reads its core's counts on the
    loop thread, or from its caller's once the loop drains nothing more (the core's jobs
    have all ended then, though the loop may still run while it closes)."""
    return exe._outcomes.snapshot(exe._slots)


#
# Settings
#


def set_rate(exe: Core, rate: Optional[float], burst: int) -> None:
    """Set the start rate (the bridge calls this on the loop thread, as ``_set_rate``)."""
    exe._rate, exe._burst = rate, burst
    if not exe._bound or exe._state is State.CLOSED or exe._loop.is_closed():
        return  # _bind makes the limiter; once closed, no job starts again
    exe._slots.set_rate(rate, burst)


class Settings:
    """The settable limits of CoroutineExecutor, and its stats (see the module)."""

    __slots__ = ()

    @property
    def max_workers(self: Core) -> int:
        """How many jobs may run at once; settable on the executor's loop (``None``: the
        default). Shrinking it cancels nothing. With an ``Adaptive``, the current limit;
        setting it fixes the limit from then on."""
        return self._slots.limit

    @max_workers.setter
    def max_workers(self: Core, value: Optional[int]) -> None:
        value = check_max_workers(DEFAULT_MAX_WORKERS if value is None else value)
        check_setter_thread(self, "max_workers")
        set_limit(self, value)

    @property
    def max_per_second(self: Core) -> Optional[float]:
        """The most jobs that may *start* per second (``None``: no limit); settable on the
        executor's loop (to slow down when a server answers 429), for the next starts."""
        return self._rate

    @max_per_second.setter
    def max_per_second(self: Core, value: Optional[float]) -> None:
        rate, _ = check_rate(value, None)
        check_setter_thread(self, "max_per_second")
        set_rate(self, rate, self._burst)

    @property
    def burst(self: Core) -> int:
        """How many jobs may start at once after an idle period while ``max_per_second``
        is set (default 1); settable as ``max_per_second`` is (with no rate: ValueError)."""
        return self._burst

    @burst.setter
    def burst(self: Core, value: int) -> None:
        _, burst = check_rate(self._rate, value)
        check_setter_thread(self, "burst")
        set_rate(self, self._rate, burst)

    _set_rate = set_rate  # a method: the bridge's loop thread sets its core's rate
    _counts = counts  # a method: the bridge reads its core's counts by its own rules

    @property
    def stats(self: Core) -> ExecutorStats:
        """A read-only snapshot of the job counts (cheap: no job is visited).

        Read on the executor's loop, as its setters are called there: the loop moves the
        jobs between the counts, so a snapshot taken from another thread meanwhile would
        not add up. Before first use, and once its loop has stopped, any thread may read
        it.

        Raises:
            RuntimeError: read from another thread while the executor's loop runs; read
                it on the loop instead (``asyncio.run_coroutine_threadsafe`` of a
                coroutine that returns it, say), or use ``LoopExecutor``, whose
                ``stats`` are thread-safe.
        """
        check_stats_thread(self)
        return counts(self)
