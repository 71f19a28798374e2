"""MapIterator: the iterator ThreadedLoopExecutor.map() returns."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TypeVar, Union

from .._chains import stop_as_error
from .._retry import INHERIT, Inherit, RetryPolicy
from .._typing import Self, final
from ._future import BridgeFuture
from ._job import submit_job, submit_with_policy
from ._window import MapWindow

__all__ = ["MapIterator", "start_map"]

T = TypeVar("T")
# _submit, or a map's own policy's: (exe, fn, args, index) -> the input's future.
_Submit = Callable[
    [concurrent.futures.Executor, Callable[..., Any], tuple[Any, ...], int],
    concurrent.futures.Future[Any],
]


@final
class MapIterator(Iterator[T]):
    """Results of ``map()`` in input order; owns the futures of the jobs not yet yielded.

    An object rather than a generator (as ``Executor.map`` returns): a generator that
    was never started runs no ``finally`` when it is closed or dropped, so the jobs
    ``map()`` submitted before returning would run on, uncancelled. ``close()``, the
    iterator's collection, and any exception out of ``next()`` (a job's error, the
    timeout, a Ctrl-C) cancel every job not yet yielded; it is then exhausted.

    It never refers to a result it has returned (bpo-14406), nor leaves it in the future
    it came from (which the executor may hold a moment longer): the consumer decides when
    a result is freed.

    One ``next()`` at a time: a call made while another has not returned (from another
    thread, say) raises ValueError at once and changes nothing, as a generator refuses
    to be re-entered ("generator already executing"). Two calls that both waited for
    the first result would both get it and both drop it from the deque: one result
    twice, the next one lost, and an IndexError at the end.
    """

    __slots__ = (
        "__weakref__", "_end_time", "_exe_ref", "_fn", "_futures", "_inputs", "_next_lock",
        "_submit", "_window",
    )

    def __init__(
        self,
        exe_ref: weakref.ref[concurrent.futures.Executor],
        fn: Callable[..., Any],
        futures: collections.deque[concurrent.futures.Future[T]],
        inputs: Optional[Iterator[tuple[Any, ...]]],
        end_time: Optional[float],
        submit: _Submit,
        window: Optional[MapWindow] = None,
    ) -> None:
        # First, in one step (one line, no call): __del__ of an iterator a Ctrl-C cut
        # short in here cancels the jobs, and closes the window (with buffersize, under
        # a retry policy: the window its pausing jobs leave; else None).
        self._futures, self._window = futures, window
        # A weak reference, so that a suspended iterator does not keep the executor alive.
        self._exe_ref = exe_ref
        self._fn = fn
        self._inputs = inputs  # with buffersize: the inputs not yet submitted
        self._end_time = end_time
        self._submit = submit  # with buffersize: submits the next input
        self._next_lock = threading.Lock()  # held by the next() call under way

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        # Refuses rather than waits its turn, with the ValueError of the stdlib's map()
        # (a generator): code sharing the iterator fails here as it does on a
        # ThreadPoolExecutor, and a next() re-entered from a signal handler in the same
        # thread raises instead of deadlocking.
        if not self._next_lock.acquire(False):
            raise ValueError(
                "map() iterator already executing: call next() from one thread at a time"
            )
        try:
            return self._next()
        finally:
            self._next_lock.release()

    def _next(self) -> T:
        futures = self._futures
        if not futures:
            raise StopIteration
        try:
            window = self._window
            if window is None:
                inputs = self._inputs
                if inputs is not None:
                    item = next(inputs, None)
                    exe = self._exe_ref()
                    if item is not None and exe is not None:
                        futures.append(self._submit(exe, self._fn, item[1], item[0]))
                    del exe
            else:
                # As above, plus one input for each job that pauses while we wait.
                self._fill(window.size())
                while window.wait(futures[0], self._end_time):
                    self._fill(window.size())
            end_time = self._end_time
            timeout = None if end_time is None else end_time - time.monotonic()
            # The head stays in the deque until its result is in: if the wait fails (a
            # timeout, a Ctrl-C), close() cancels it with the rest. No local of this frame
            # holds the future (bpo-14406, as Executor.map).
            result = futures[0].result(timeout)
            # The future lets go of the result too: the executor may hold the future a
            # moment longer (the loop thread frees the job's slot a turn after it has
            # woken this thread), and only the consumer decides when the result is freed.
            futures.popleft()._result = None
            return result
        except BaseException as exc:
            self.close()
            if isinstance(exc, StopIteration):
                # A blocking job's (a coroutine turns its own into a RuntimeError): raised
                # from __next__() it would end the consumer's ``for`` as if every result
                # had come, and list() would return them cut short. The job's future
                # keeps it, as a ThreadPoolExecutor's does (see stop_as_error).
                raise stop_as_error(exc) from exc
            raise

    def _fill(self, size: int) -> None:
        """Submit the next inputs until the map holds ``size`` jobs, or they run out."""
        futures = self._futures
        while self._inputs is not None and len(futures) < size:
            item = next(self._inputs, None)
            if item is None:
                self._inputs = None
                return
            exe = self._exe_ref()
            if exe is None:
                return
            futures.append(self._submit(exe, self._fn, item[1], item[0]))
            del exe

    def close(self) -> None:
        """Cancel the jobs whose results were not yielded yet; later ``next()`` stops."""
        futures: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        try:
            futures, self._futures = self._futures, futures  # one step: no call
            self._inputs = None
            _cancel_all(futures)
            if self._window is not None:
                self._window.close()
        except BaseException:
            # Cut short (Ctrl-C): the jobs taken from the iterator are cancelled all the
            # same (cancel() again is a no-op), or they would run on, unwanted, holding
            # every slot before any later job of the executor.
            _cancel_all(futures)
            raise

    def __del__(self) -> None:
        # Half-built when a Ctrl-C (from a tracer) cut __init__ short before its first line.
        if hasattr(self, "_futures"):
            self.close()


def _cancel_all(futures: collections.deque[concurrent.futures.Future[Any]]) -> None:
    # Newest first: a job cancelled in its pause gives its key's room back at once
    # (key=), which would start a later job of the map that waits for it, before
    # that one is cancelled in its turn.
    for future in reversed(futures):
        if isinstance(future, BridgeFuture) and not future.done():
            # Before cancel(): one that finds an attempt running cannot stop it, and
            # that attempt is then the job's last (see Retries.stopped); the loop may
            # also have paused the job already (cancel() ends the pause) or not yet.
            future._last_attempt = True
        future.cancel()


def start_map(
    exe: concurrent.futures.Executor,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    timeout: Optional[float],
    buffersize: Optional[int],
    policy: Union[RetryPolicy, Inherit, None] = INHERIT,
) -> MapIterator[Any]:
    """ThreadedLoopExecutor.map() after its fn check: submit the first jobs, return the
    iterator (see map() for the parameters; ``policy``: the map's own retry policy, or
    INHERIT for the executor's)."""
    if buffersize is not None:
        if isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an integer or None (got {buffersize!r})")
        if buffersize < 1:
            raise ValueError(f"buffersize must be None or > 0 (got {buffersize!r})")
    end_time = None if timeout is None else timeout + time.monotonic()
    inputs = enumerate(zip(*iterables))  # the index names a failed job's input
    window = _window_for(exe, buffersize, policy)
    submit: _Submit = (
        _submit if isinstance(policy, Inherit) and window is None else _Policy(policy, window)
    )
    futures: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
    iterator: MapIterator[Any] = MapIterator(
        weakref.ref(exe), fn, futures, inputs if buffersize else None, end_time, submit, window
    )
    # islice() takes at most sys.maxsize, and no deque holds more: a larger buffersize
    # (10**400 is a valid one, as on the core's map) means the same.
    first = itertools.islice(inputs, min(buffersize, sys.maxsize)) if buffersize else inputs
    try:
        for index, args in first:
            futures.append(submit(exe, fn, args, index))
    except BaseException:
        # An input raised, or key() or submit() did (a Ctrl-C too), once some jobs were
        # submitted: nobody would hold their futures, so they would run on, and an error
        # of theirs would be seen by nobody. Cancelled as a next() that raises cancels
        # the map's jobs; the iterator, closed, is dropped with the error.
        iterator.close()
        raise
    return iterator


def _window_for(
    exe: concurrent.futures.Executor,
    buffersize: Optional[int],
    policy: Union[RetryPolicy, Inherit, None],
) -> Optional[MapWindow]:
    """A buffered map whose jobs a policy may retry gets a window its pausing jobs
    leave (see MapWindow); others need none."""
    if not buffersize:
        return None
    if isinstance(policy, Inherit):
        policy = exe._handoff.scheduler.retries.policy  # type: ignore[attr-defined]  # see _submit
    return None if policy is None else MapWindow(buffersize)


def _submit(
    exe: concurrent.futures.Executor, fn: Callable[..., Any], args: tuple[Any, ...], index: int
) -> concurrent.futures.Future[Any]:
    """Submit map input ``index`` (its position names it in a failed job's error note)."""
    # exe is a ThreadedLoopExecutor, typed as its base here: no import cycle.
    handoff, annotate = exe._handoff, exe._annotate  # type: ignore[attr-defined]  # see above
    return submit_job(handoff, annotate, fn, args, {}, index)


class _Policy:
    """Submits a map's inputs under the map's own retry policy (INHERIT: the executor's),
    in the map's window, if it has one (see _window_for)."""

    __slots__ = ("policy", "window")

    def __init__(
        self, policy: Union[RetryPolicy, Inherit, None], window: Optional[MapWindow] = None
    ) -> None:
        self.policy = policy
        self.window = window

    def __call__(
        self,
        exe: concurrent.futures.Executor,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        index: int,
    ) -> concurrent.futures.Future[Any]:
        handoff, annotate = exe._handoff, exe._annotate  # type: ignore[attr-defined]  # see _submit
        return submit_with_policy(handoff, annotate, fn, args, index, self.policy, self.window)


