"""MapIterator: the iterator ThreadedLoopExecutor.map() returns."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TypeVar

from .._typing import Self, final

__all__ = ["MapIterator", "start_map"]

T = TypeVar("T")


@final
class MapIterator(Iterator[T]):
    """Results of ``map()`` in input order; owns the futures of the jobs not yet yielded.

    An object rather than a generator (as ``Executor.map`` returns): a generator that
    was never started runs no ``finally`` when it is closed or dropped, so the jobs
    ``map()`` submitted before returning would run on, uncancelled. ``close()``, the
    iterator's collection, and any exception out of ``next()`` (a job's error, the
    timeout, a Ctrl-C) cancel every job not yet yielded; it is then exhausted.

    It never refers to a result it has returned (bpo-14406): the consumer decides when
    a result is freed.
    """

    __slots__ = ("__weakref__", "_end_time", "_exe_ref", "_fn", "_futures", "_inputs")

    def __init__(
        self,
        exe_ref: weakref.ref[concurrent.futures.Executor],
        fn: Callable[..., Any],
        futures: collections.deque[concurrent.futures.Future[T]],
        inputs: Optional[Iterator[tuple[Any, ...]]],
        end_time: Optional[float],
    ) -> None:
        # A weak reference, so that a suspended iterator does not keep the executor alive.
        self._exe_ref = exe_ref
        self._fn = fn
        self._futures = futures
        self._inputs = inputs  # with buffersize: the inputs not yet submitted
        self._end_time = end_time

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        futures = self._futures
        if not futures:
            raise StopIteration
        try:
            inputs = self._inputs
            if inputs is not None:
                args = next(inputs, None)
                exe = self._exe_ref()
                if args is not None and exe is not None:
                    futures.append(exe.submit(self._fn, *args))
                del exe
            end_time = self._end_time
            timeout = None if end_time is None else end_time - time.monotonic()
            # Straight from the call, never through a local of this frame (bpo-14406,
            # as Executor.map): the future is off the deque already.
            return _result_or_cancel(futures.popleft(), timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Cancel the jobs whose results were not yielded yet; later ``next()`` stops."""
        futures, self._futures = self._futures, collections.deque()
        self._inputs = None
        for future in futures:
            future.cancel()

    def __del__(self) -> None:
        self.close()


def start_map(
    exe: concurrent.futures.Executor,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    timeout: Optional[float],
    buffersize: Optional[int],
) -> MapIterator[Any]:
    """ThreadedLoopExecutor.map() after its fn check: submit the first jobs, return the
    iterator (see map() for the parameters)."""
    if buffersize is not None:
        if isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an integer or None (got {buffersize!r})")
        if buffersize < 1:
            raise ValueError(f"buffersize must be None or > 0 (got {buffersize!r})")
    end_time = None if timeout is None else timeout + time.monotonic()
    inputs = zip(*iterables)
    submit = exe.submit
    if buffersize:
        futures = collections.deque(
            submit(fn, *args) for args in itertools.islice(inputs, buffersize)
        )
    else:
        futures = collections.deque(submit(fn, *args) for args in inputs)
    return MapIterator(weakref.ref(exe), fn, futures, inputs if buffersize else None, end_time)


def _result_or_cancel(future: concurrent.futures.Future[T], timeout: Optional[float]) -> T:
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # on a timeout or a KeyboardInterrupt; a no-op once it is done
        del future  # no reference to it from this frame's traceback
