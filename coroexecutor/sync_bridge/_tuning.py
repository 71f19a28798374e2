"""BridgeTuner: a bridge's adaptive limit (max_workers=Adaptive), fed from any thread."""

from __future__ import annotations

import sys
import threading
import types
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
    its slot, *before* that thread takes the HandOff's lock: the ``overload`` predicate is
    user code, and nothing external runs under the bridge's one lock. Feeding is
    serialised by this object's own lock, which guards only the limiter. Slots copies
    ``limit`` into its ``max_workers`` at each release, under the HandOff's lock.
    """

    __slots__ = ("_lock", "_tuner")

    def __init__(self, config: Adaptive) -> None:
        self._tuner = Tuner(config)
        self._lock = threading.Lock()  # guards the limiter (and starts, with the GIL)

    def __repr__(self) -> str:
        return f"<BridgeTuner {self._tuner!r}>"

    @property
    def limit(self) -> int:
        """The limiter's current limit (an int read: no lock needed)."""
        return self._tuner.limiter.limit

    def started(self, future: BridgeFuture[Any]) -> None:
        """A job got its slot (the caller holds the HandOff's lock)."""
        self._tuner.starts[future] = self._tuner.clock()

    def release(self, future: BridgeFuture[Any]) -> int:
        """The job's slot is freed (under the HandOff's lock): forget a start never fed
        (a job given back unstarted) and return the limit to use."""
        self._tuner.starts.pop(future, None)
        return self._tuner.limiter.limit

    def finished_threadsafe(self, future: BridgeFuture[Any]) -> None:
        """A job is over (its future is resolved): feed the limiter once. A cancelled job,
        or one fed already, says nothing. The jobs in flight are those started and not yet
        fed (this one included)."""
        error = future._exception if future._state == FINISHED else None
        with self._lock:
            starts = self._tuner.starts
            if future._state != FINISHED:
                starts.pop(future, None)
                return
            try:
                self._tuner.finished(future, error, len(starts))
            except Exception as exc:  # the user's overload predicate raised
                hook = sys.unraisablehook
                hook(_Unraisable(exc))  # type: ignore[arg-type]  # reads these fields only


class _Unraisable:
    """What sys.unraisablehook reads: an error nobody else can be told of."""

    def __init__(self, exc: Exception) -> None:
        self.exc_type = type(exc)
        self.exc_value: BaseException | None = exc
        self.exc_traceback: types.TracebackType | None = exc.__traceback__
        self.err_msg = "Exception ignored in the Adaptive overload predicate"
        self.object: object = None
