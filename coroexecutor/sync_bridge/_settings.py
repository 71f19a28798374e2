"""The bridge's live settings: ``max_workers``, ``max_per_second`` and ``burst``, read
and set from any thread, and the ``stats`` snapshot; the defaults of ``max_workers=None``.

``BridgeSettings`` is a base class of ThreadedLoopExecutor (``_executor``) that holds
nothing, as ``Settings`` is CoroutineExecutor's: properties must be on the class, and
their getters and setters, with their docstrings (the reference pages show them), would
not fit in _executor.py. They read and change the executor through its LoopThread and
HandOff, declared below; the work of a change is done there (``set_max_workers_threadsafe``,
``set_rate_threadsafe``).
"""

from __future__ import annotations

import os
from typing import Optional

from .._stats import ExecutorStats
from .._validate import check_max_workers, check_rate
from ._handoff import HandOff
from ._loop_thread import LoopThread

__all__ = ["BridgeSettings"]

# With max_workers=None: coroutine jobs are cheap, so the cap is CoroutineExecutor's
# default; threads follow ThreadPoolExecutor's default, min(32, cpu + 4) (see its
# __init__: I/O-bound work, but no more than 32 threads on many-core machines).
_DEFAULT_MAX_JOBS = 1000


def _default_max_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class BridgeSettings:
    """The settable limits of ThreadedLoopExecutor, and its stats (see the module)."""

    # Set by ThreadedLoopExecutor.__init__.
    _bridge: LoopThread
    _handoff: HandOff
    _default_workers: bool  # max_workers=None: see the max_workers property

    @property
    def max_workers(self) -> int:
        """How many jobs may run at once (and the most worker threads). Settable, from
        any thread: growing it starts queued jobs at once; shrinking it cancels nothing.

        ``None`` means the default, as in the constructor: 1000 jobs, and the
        ThreadPoolExecutor default number of threads; the property then reads 1000, and
        assigning 1000 back keeps that default (any other int sets both limits)."""
        return self._handoff.max_workers

    @max_workers.setter
    def max_workers(self, value: Optional[int]) -> None:
        if value is not None:
            value = check_max_workers(value)
        if value is None or (value == _DEFAULT_MAX_JOBS and self._default_workers):
            self._default_workers = True
            self._handoff.set_max_workers_threadsafe(_DEFAULT_MAX_JOBS, _default_max_threads())
        else:
            self._default_workers = False
            self._handoff.set_max_workers_threadsafe(value, value)

    @property
    def max_per_second(self) -> Optional[float]:
        """The most jobs that may *start* per second, blocking ones included (``None``: no
        limit). Settable from any thread, validated as in the constructor: once the
        assignment returns, every later start is governed by the new value (queued jobs
        too; running ones carry on)."""
        return self._bridge.max_per_second

    @max_per_second.setter
    def max_per_second(self, value: Optional[float]) -> None:
        rate, _ = check_rate(value, None)
        self._bridge.set_rate_threadsafe(rate=rate)

    @property
    def burst(self) -> int:
        """How many jobs may start at once after an idle period while ``max_per_second``
        is set (default 1). Settable as ``max_per_second`` is; setting it without a rate
        limit is a ``ValueError``, as in the constructor."""
        return self._bridge.burst

    @burst.setter
    def burst(self, value: int) -> None:
        check_rate(1.0, value)  # the type and range; "requires max_per_second" is decided
        self._bridge.set_rate_threadsafe(burst=value)  # with the rate, under the lock

    @property
    def stats(self) -> ExecutorStats:
        """A snapshot of the job counts, taken on the loop thread (any thread may read it).

        Jobs handed off but not yet seen by the loop count as submitted and queued. A job
        whose future is done counts as done (succeeded, failed or cancelled) from the next
        read on, as does one whose ``cancel()`` returned True. Never
        waits for a loop that has stopped, or stops meanwhile: the final counts then.
        """
        return self._bridge.stats_threadsafe()
