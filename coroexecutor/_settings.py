"""The executor's live settings: ``max_workers``, ``max_per_second`` and ``burst``, read
anywhere and set on its loop, and the ``stats`` snapshot.

``Settings`` is a base class of CoroutineExecutor that holds nothing: properties must be
on the class, and their getters and setters, with their docstrings (the reference pages
show them), would not fit in _executor.py. Like the functions of the other modules, they
read and change the executor through the ``Core`` protocol; the work of a change is done
where it belongs (``set_limit``, ``Slots.set_rate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ._lifecycle import set_limit
from ._startup import check_setter_thread
from ._state import State
from ._stats import ExecutorStats
from ._validate import check_max_workers, check_rate

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["DEFAULT_MAX_WORKERS", "Settings", "set_rate"]

DEFAULT_MAX_WORKERS = 1000


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

    @property
    def stats(self: Core) -> ExecutorStats:
        """A read-only snapshot of the job counts (cheap: no job is visited)."""
        return self._outcomes.snapshot(self._slots)
