"""Tuner: an executor's AdaptiveLimit, fed from its finished jobs (max_workers=Adaptive).

The executor records each job's start time here (only when ``max_workers`` is an
``Adaptive``) and, when the job settles, hands the limiter its latency and error; the
limit it answers becomes the executor's. The in-line job path never comes here: an
adaptive executor settles its jobs from a done callback.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Union

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
    virtual clock. ``starts`` maps a running job's key (what the executor settles it by:
    its task) to its start time; an entry leaves when its job settles, so it holds the
    running jobs, and the finished ones not settled yet.
    """

    __slots__ = ("bound", "clock", "limiter", "retired", "starts")

    def __init__(self, config: Adaptive) -> None:
        self.limiter = AdaptiveLimit(config, use_at_start=True)
        self.clock: Callable[[], float] = time.perf_counter
        # Keys: tasks here, BridgeFutures on the bridge (see BridgeTuner); both have done().
        self.starts: dict[Any, float] = {}
        self.retired = False  # max_workers was set by hand (see set_limit): answer no more
        # At least the jobs in flight at the last count (count_use, feed).
        self.bound = 0

    def __repr__(self) -> str:
        return f"<Tuner {self.limiter!r} running={len(self.starts)}>"

    def started(self, key: object) -> None:
        """A job started (its key is how it will settle)."""
        self.starts[key] = self.clock()
        self.count_use(key)

    def count_use(self, key: object) -> None:
        """Tell the limiter how many jobs run as the job ``key`` (in ``starts``) starts,
        itself included: a round's use is the most of these, and of the jobs in flight as
        it began (see feed).

        ``len(starts)`` bounds that count, but only bounds it: a job that finished keeps
        its entry until it settles, from a done callback, and a map starts its next input
        from its own callback on the finished job, before that. Taken as the count, it
        let a caller that never ran more than 15 jobs at once double a limit of 32 (the
        finished jobs of a burst, and their successors, counted together). So when the
        bound would be the round's first evidence for growth, count the jobs not done:
        one look at each entry. The count holds as a bound until then, one more for each
        start (ends only lower it), so a caller whose use stays just below half of the
        limit is counted once per few starts, and one that has shown half of it, not
        until the next round. Past that evidence the bound stands for the use: it only
        sizes the probe (half of the use, at most half of the limit). An eager task
        factory may have run this job to its end already: it counts, as it ran with the
        others.
        """
        limiter = self.limiter
        bound = min(len(self.starts), self.bound + 1)
        if limiter.wants_count(bound):
            # A copy (one C call): on the bridge, other threads pop entries meanwhile.
            jobs = tuple(self.starts)
            bound = 1 + sum(1 for job in jobs if job is not key and not job.done())
        self.bound = bound
        limiter.note_use(bound)

    def feed(
        self, latency: float, error: BaseException | None, in_flight: int,
        overload: bool | None = None,
    ) -> int:
        """Feed a finished job, already taken out of ``starts``, to the limiter, and
        return the limit. If that ends a round, the next one begins with the jobs in
        flight now, counted (one look at each, once a round): a round with few starts
        still counts the jobs it inherits.

        ``in_flight``: the jobs to let settle if the limit changes.
        """
        limiter = self.limiter
        begun = limiter.rounds_begun
        limit = limiter.on_done(latency, error, in_flight, overload)
        if limiter.rounds_begun != begun:
            jobs = tuple(self.starts)  # a copy: see count_use
            self.bound = sum(1 for job in jobs if not job.done())
            limiter.note_use(self.bound)
        return limit

    def finished(self, key: object, error: BaseException | None, in_flight: int) -> int | None:
        """A job ended: feed the limiter; return the limit to use, or None for no change
        of evidence (a cancelled job, or one started before the tuner knew it).

        Raises what the ``overload`` predicate raises (the job is then not counted).
        """
        start = self.starts.pop(key, None)
        if start is None or isinstance(error, _CancelledError):
            return None  # a cancelled job says nothing about the server
        return self.feed(self.clock() - start, error, in_flight)

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
