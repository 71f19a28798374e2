"""DaskExecutor.map(): its typed signatures and the start of a MapRun.

Its overloads would not fit in _executor.py. The core takes its map from its
``_map_api`` as ``map = _map_api.map``; here that would not do: pyright types a name a
subclass assigns without an annotation as the base class declares it, and so would take
this map for typeshed's ``Executor.map``. So the method lives in a base class of
DaskExecutor, ``MapMethod``, which holds nothing and reads the executor through the
``Mapper`` protocol, as the core's functions read theirs through ``Core``.

Four overloads per number of inputs, as the bridge's and the core's: the items of the
first three inputs must suit fn's parameter in that place (from four on, unchecked); a
coroutine function first, so its result is the awaited one; return_exceptions not False
yields errors too. The last is Executor.map's shape: see ThreadedLoopExecutor.map.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, Callable, Literal, Optional, Protocol, TypeVar, Union, overload

from typing_extensions import Never

from .._retry import INHERIT, Inherit, RetryArg, resolve_retry
from .._typing import A1, A2, A3
from .._validate import check_switch
from . import _shutdown
from ._map import CancelRemote, MapRun, Send, window_of
from ._wire import check_count, check_fn, check_sendable

__all__ = ["MapMethod", "Mapper"]

T = TypeVar("T")


class Mapper(_shutdown.Stopping, Protocol):
    """What map() reads on the executor, besides what shutting down does (it checks the
    state and records the map under ``_lock``)."""

    _maps: weakref.WeakSet[MapRun]  # guarded by _lock
    _chunksize: int
    _per_worker: int
    _fail_fast: bool

    @property
    def _send(self) -> Send: ...
    @property
    def _cancel_remote(self) -> CancelRemote: ...


class MapMethod:
    """The base of DaskExecutor that gives it map(): no state, no other method."""

    __slots__ = ()

    @overload
    def map(self: Mapper, fn: Callable[[A1], Awaitable[T]], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1], Awaitable[T]], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1], T], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1], T], in1: Iterable[A1], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2], Awaitable[T]], in1: Iterable[A1],
            in2: Iterable[A2], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2], Awaitable[T]], in1: Iterable[A1],
            in2: Iterable[A2], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2], T], in1: Iterable[A1], in2: Iterable[A2], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2], T], in1: Iterable[A1], in2: Iterable[A2], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2, A3], Awaitable[T]], in1: Iterable[A1],
            in2: Iterable[A2], in3: Iterable[A3], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2, A3], Awaitable[T]], in1: Iterable[A1],
            in2: Iterable[A2], in3: Iterable[A3], /, *,
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2, A3], T], in1: Iterable[A1], in2: Iterable[A2],
            in3: Iterable[A3], /, *, timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[[A1, A2, A3], T], in1: Iterable[A1], in2: Iterable[A2],
            in3: Iterable[A3], /, *, timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[..., Awaitable[T]], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[..., Awaitable[T]], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[..., T], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: Literal[False] = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    @overload
    def map(self: Mapper, fn: Callable[..., T], in1: Iterable[Any], in2: Iterable[Any],
            in3: Iterable[Any], in4: Iterable[Any], /, *more: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[Union[T, BaseException]]: ...
    @overload
    def map(self: Mapper, fn: Callable[..., T], *iterables: Iterable[Never],
            timeout: Optional[float] = ..., chunksize: Optional[int] = ...,
            buffersize: Optional[int] = ..., return_exceptions: bool = ...,
            retry: Union[RetryArg, Inherit] = ...) -> Iterator[T]: ...
    def map(self: Mapper, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: Optional[int] = None,
            buffersize: Optional[int] = None, return_exceptions: bool = False,
            retry: Union[RetryArg, Inherit] = INHERIT) -> Iterator[Any]:
        """Return an iterator of ``fn(*args)`` over the zipped inputs, in input order.

        Inputs are read lazily, ``chunksize`` at a time (default: the executor's); each
        chunk is one dask task. At most ``buffersize`` jobs (rounded up to whole chunks;
        default two chunks per worker process, or more when ``per_worker`` exceeds the
        chunk size) are in flight, so any input size runs in bounded client memory. The
        first window is sent before this returns, as ``Executor.map`` does.

        Errors: a job's exception is raised when its result is reached. By default its
        map fails fast: every later job, queued or running on any worker, is cancelled
        at once; the results before it are still yielded. With ``return_exceptions=True``
        the exception is yielded in place of its result instead, and nothing is cancelled.
        ``TimeoutError`` from a ``next()`` that has to wait once ``timeout`` s have passed.
        ``retry`` replaces the executor's retry policy for this map (``None``: none).

        Cancellation: closing the iterator (``break``, ``close()``, dropping it), Ctrl-C
        while it waits, and ``shutdown(cancel_futures=True)`` cancel its chunks in dask and
        its jobs running on the workers.

        Raises:
            RuntimeError: after ``shutdown()``.
            TypeError: ``fn`` is not callable, an input cannot be pickled, or
                ``return_exceptions`` is not True or False.
            ValueError: ``chunksize`` or ``buffersize`` below 1.
        """
        check_fn(fn, "map")
        return_exceptions = check_switch("return_exceptions", return_exceptions)
        policy = retry if isinstance(retry, Inherit) else resolve_retry(retry)
        check_sendable(None if isinstance(policy, Inherit) else policy, "map()")
        _shutdown.check_running(self)  # before asking the scheduler: a client it made is closed
        size = self._chunksize if chunksize is None else check_count("chunksize", chunksize)
        window = window_of(self._client, self._per_worker, size, buffersize)
        end_time = None if timeout is None else time.monotonic() + timeout
        run = MapRun(self._id, self._send, self._client, self._cancel_remote, fn,
                     zip(*iterables), size, window, return_exceptions,
                     self._fail_fast and not return_exceptions, policy)
        with self._lock:
            _shutdown.check_running(self)
            self._maps.add(run)
        return run.start(end_time)
