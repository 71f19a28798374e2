"""Tuner: an executor's AdaptiveLimit, fed from its finished jobs (max_workers=Adaptive).

The executor records each job's start time here (only when ``max_workers`` is an
``Adaptive``) and, when the job settles, hands the limiter its latency and error; the
limit it answers becomes the executor's. The in-line job path never comes here: an
adaptive executor settles its jobs from a done callback.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable, NoReturn, Union

from ._adaptive import Adaptive
from ._limiter import AdaptiveLimit
from ._validate import check_max_workers

if TYPE_CHECKING:
    from ._slots import Slots

__all__ = ["MaxWorkers", "Tuner", "limit_of"]

_CancelledError = asyncio.CancelledError


class Tuner:
    """The limiter of one executor and the start times of its running jobs.

    ``clock`` (seconds, monotonic) measures the latencies: a test may replace it with a
    virtual clock. ``starts`` maps a running job's key (what the executor settles it by)
    to its start time; an entry leaves when its job settles, so it holds only running
    jobs.
    """

    __slots__ = ("clock", "limiter", "retired", "starts")

    def __init__(self, config: Adaptive) -> None:
        self.limiter = AdaptiveLimit(config)
        self.clock: Callable[[], float] = time.perf_counter
        self.starts: dict[object, float] = {}
        self.retired = False  # max_workers was set by hand (see set_limit): answer no more

    def __repr__(self) -> str:
        return f"<Tuner {self.limiter!r} running={len(self.starts)}>"

    def started(self, key: object) -> None:
        """A job started (its key is how it will settle)."""
        self.starts[key] = self.clock()

    def finished(self, key: object, error: BaseException | None, in_flight: int) -> int | None:
        """A job ended: feed the limiter; return the limit to use, or None for no change
        of evidence (a cancelled job, or one started before the tuner knew it).

        Raises what the ``overload`` predicate raises (the job is then not counted).
        """
        start = self.starts.pop(key, None)
        if start is None or isinstance(error, _CancelledError):
            return None  # a cancelled job says nothing about the server
        return self.limiter.on_done(self.clock() - start, error, in_flight)

    def tune(
        self,
        slots: Slots,
        loop: asyncio.AbstractEventLoop,
        key: object,
        error: BaseException | None,
    ) -> bool:
        """A job settles (before its slot is released): feed the limiter and resize the
        slots to the limit it answers; returns whether the limit changed. Shrinking
        cancels nothing; the caller admits the backlog after the release, which starts
        jobs when the limit grew."""
        try:
            limit = self.finished(key, error, slots.running)
        except Exception as exc:  # the user's overload predicate raised
            loop.call_exception_handler(
                {"message": "the Adaptive overload predicate raised", "exception": exc}
            )
            return False
        except BaseException as exc:  # its KeyboardInterrupt or SystemExit
            # Raised out of the loop as asyncio raises one from any callback, but from a
            # callback of its own: the job settles first (its slot, its counts), or the
            # block's exit would wait for it for ever.
            loop.call_soon(_raise, exc)
            return False
        if self.retired:  # the predicate set max_workers itself: that limit stands
            return False
        if limit is not None and limit != slots.limit:
            slots.resize(limit)
            return True
        return False


def _raise(exc: BaseException) -> NoReturn:
    raise exc


def limit_of(max_workers: object, default: int) -> tuple[int, Tuner | None]:
    """The constructor's ``max_workers``: the limit to start with, and a Tuner when it is
    an ``Adaptive`` (``None`` means ``default``)."""
    if isinstance(max_workers, Adaptive):
        tuner = Tuner(max_workers)
        return tuner.limiter.limit, tuner
    return check_max_workers(default if max_workers is None else max_workers), None


MaxWorkers = Union[int, Adaptive, None]  # what the constructors take
