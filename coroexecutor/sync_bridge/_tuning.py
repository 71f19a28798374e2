"""BridgeTuner: a bridge's adaptive limit (max_workers=Adaptive), fed from any thread."""

from __future__ import annotations

import sys
import threading
import traceback
import types
from asyncio import CancelledError
from concurrent.futures._base import FINISHED
from typing import Any

from .._adaptive import Adaptive
from .._tuning import Tuner
from ._future import BridgeFuture

__all__ = ["BridgeTuner"]


class BridgeTuner:
    """The limiter of a bridge, for the jobs of both kinds.

    Slots records a job's start (``started``, under the HandOff's lock) when it gives the
    job a slot. A finished job is fed (``finished_threadsafe``) by the thread that frees
    its slot, *before* that thread takes the HandOff's lock. The ``overload`` predicate
    is user code, and runs under no lock of ours: it may read ``exe.stats`` (which waits
    for the loop thread, itself feeding a job), submit, resize or shut down. So a job is
    fed in three steps: claimed (its start taken out of ``starts``, so it is fed once),
    judged (the predicate, no lock held), applied (the limiter, under this object's own
    lock, which guards only the limiter). Slots copies ``limit`` into its
    ``max_workers`` at each release, under the HandOff's lock.
    """

    __slots__ = ("_lock", "_tuner")

    def __init__(self, config: Adaptive) -> None:
        self._tuner = Tuner(config)
        # Guards the limiter. ``starts`` is changed by single dict calls (atomic with the
        # GIL): set under the HandOff's lock, popped by whoever claims the job.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<BridgeTuner {self._tuner!r}>"

    @property
    def limit(self) -> int:
        """The limiter's current limit (an int read: no lock needed)."""
        return self._tuner.limiter.limit

    def started(self, future: BridgeFuture[Any]) -> None:
        """A job got its slot (the caller holds the HandOff's lock). A retried job's next
        attempt keeps its first start (see paused)."""
        attempts = future._attempts
        first = None if attempts is None else attempts.started
        tuner = self._tuner
        tuner.starts[future] = tuner.clock() if first is None else first
        with self._lock:  # (taken inside the HandOff's lock, never the other way round)
            tuner.count_use(future)

    def paused(self, future: BridgeFuture[Any]) -> None:
        """A job's attempt failed and it pauses before the next one (on the loop thread,
        before its slot is freed): it is fed nothing now, and keeps its first start, so the
        latency it is fed when it ends covers its attempts and its pauses, as on
        CoroutineExecutor. While it pauses it is not in flight (not in ``starts``)."""
        start = self._tuner.starts.pop(future, None)
        attempts = future._attempts
        if start is not None and attempts.started is None:
            attempts.started = start

    def release(self, future: BridgeFuture[Any]) -> int:
        """The job's slot is freed (under the HandOff's lock): forget a start never fed
        (a job given back unstarted) and return the limit to use."""
        self._tuner.starts.pop(future, None)
        return self._tuner.limiter.limit

    def finished_threadsafe(self, future: BridgeFuture[Any]) -> None:
        """A job is over (its future is resolved): feed the limiter once. A cancelled job,
        or one fed already, says nothing. The caller holds no lock: the predicate is
        called here with none held, and its error goes to ``sys.unraisablehook``."""
        tuner = self._tuner
        starts = tuner.starts
        start = starts.pop(future, None)  # claimed: whoever pops it feeds it
        if start is None or future._state != FINISHED:
            return
        latency = tuner.clock() - start
        # The jobs to let settle if the limit changes: those started and not yet claimed,
        # and itself. (The use is counted apart: see Tuner.count_use and Tuner.feed.)
        in_flight = len(starts) + 1
        error = future._exception
        if isinstance(error, CancelledError):
            return  # a cancelled job says nothing about the server
        limiter = tuner.limiter
        try:
            overload = error is not None and limiter.is_overload(error)
        except BaseException as exc:  # the user's predicate raised: not counted
            # SystemExit and KeyboardInterrupt too: the job's future is resolved, so no
            # caller is left to raise them to, and a worker or loop thread they ended
            # would strand every job after this one.
            _report(exc)
            return
        with self._lock:
            tuner.feed(latency, error, in_flight, overload)


def _report(exc: BaseException) -> None:
    """Tell ``sys.unraisablehook`` of an error raised by the predicate."""
    unraisable = _Unraisable(exc)
    hook = sys.unraisablehook
    if hook is sys.__unraisablehook__:
        # The default hook takes only the interpreter's own argument type, which Python
        # code cannot make (TypeError: it ended the worker thread, which stranded every
        # job after it). Write what it writes, in one write (threads may report at once).
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        sys.stderr.write("".join([f"{unraisable.err_msg}:\n", *lines]))
    else:
        hook(unraisable)  # type: ignore[arg-type]  # a hook reads these fields only


class _Unraisable:
    """What sys.unraisablehook reads: an error nobody else can be told of."""

    def __init__(self, exc: BaseException) -> None:
        self.exc_type = type(exc)
        self.exc_value: BaseException | None = exc
        self.exc_traceback: types.TracebackType | None = exc.__traceback__
        self.err_msg = "Exception ignored in the Adaptive overload predicate"
        self.object: object = None
