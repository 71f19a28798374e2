"""MapIterator: the lazy, bounded async iterator behind map() and map_unordered()."""

from __future__ import annotations

import asyncio
import collections
import types
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from typing_extensions import Self, final

from ._admission import NATIVE_LOOP as _NATIVE_LOOP
from ._errors import check_job_fn
from ._jobs import JobTask, as_coroutine
from ._state import State

if TYPE_CHECKING:
    from ._executor import CoroutineExecutor

__all__ = ["MapIterator", "MapJobs"]
_RUNNING = State.RUNNING
_CoroutineType = types.CoroutineType
_JobTask = JobTask
_CANCELLING = State.CANCELLING
_CancelledError = asyncio.CancelledError

T = TypeVar("T")

_EXHAUSTED: Any = object()
_NO_KWARGS: dict[str, Any] = {}  # map jobs take positional arguments only; never mutated


@final
class MapIterator(Generic[T], AsyncIterator[T]):
    """Results of ``CoroutineExecutor.map()`` (input order) or ``map_unordered()``.

    Jobs start as results are consumed: at most ``buffersize`` are started ahead of the
    consumer, so the input is read lazily and memory stays bounded. Use it with
    ``async for``; leave early with ``break`` or ``aclose()`` (or ``async with``) and the
    in-flight jobs are cancelled.
    """

    _closed = True  # until __init__ succeeds, so __del__ of a half-built iterator does nothing

    def __init__(
        self,
        executor: CoroutineExecutor,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
        buffersize: int | None,
        ordered: bool,
        return_exceptions: bool,
    ) -> None:
        where = "map" if ordered else "map_unordered"
        if not callable(fn):
            check_job_fn(fn, where)
        if not iterables:
            raise TypeError(f"{where}() must have at least one iterable")
        if buffersize is None:
            buffersize = executor.max_workers
        elif isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an int or None (got {buffersize!r})")
        elif buffersize < 1:
            raise ValueError(f"buffersize must be greater than 0 (got {buffersize!r})")
        self._exe = executor
        self._fn = fn
        self._window = buffersize
        self._ordered = ordered
        self._return_exceptions = return_exceptions
        # Inputs: one zip when all are sync, else each pulled in turn (sync or async).
        self._zip: Iterator[tuple[Any, ...]] | None = None
        self._inputs: list[Iterator[Any] | AsyncIterator[Any]] = []
        if all(not isinstance(it, AsyncIterable) for it in iterables):
            self._zip = zip(*iterables)
        else:
            for it in iterables:
                self._inputs.append(it.__aiter__() if isinstance(it, AsyncIterable) else iter(it))
        self._next_args: tuple[Any, ...] | None = None  # read but not yet started
        self._exhausted = False
        self._closed = False
        # What __anext__ starts jobs from: the zip of sync inputs while any remain and the
        # map is open, else None.
        self._feed = self._zip
        # Job callbacks and the executor reach only this small object, never the iterator
        # itself, so a map left by `break` is collected (and __del__ cancels its jobs)
        # while jobs still run.
        self._done = MapJobs()
        self._pending = self._done.pending
        self._in_flight = self._done.in_flight
        self._finished = self._done.finished
        self._count = 0  # jobs started and not yet yielded: the window's fill
        self._where = where
        executor._maps.add(self._done)  # its jobs are not in _running: _abort finds them here

    def __repr__(self) -> str:
        kind = "map" if self._ordered else "map_unordered"
        state = "closed" if self._closed else f"{self._count}/{self._window} buffered"
        return f"<MapIterator {kind} {state}>"

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[T]:
        # Runs once per result, so it is written for speed: the window is refilled from
        # sync inputs right here (no method call per result), and once the ordered map's
        # head job has succeeded, its task itself is handed back (awaiting a done task
        # returns its result at once), with no coroutine made for the step. Everything
        # that has to wait goes through _anext(). A closed map has no feed and no pending
        # job, so it always gets there.
        count = self._count
        feed = self._feed
        if feed is not None:
            window = self._window
            if count < window:
                # Start jobs while the window has room and a slot is free.
                exe = self._exe
                fn = self._fn
                loop = exe._loop
                fast = exe._fast
                limiter = exe._limiter
                args = self._next_args
                if args is not None:
                    self._next_args = None
                must_wait = False
                try:
                    while count < window:
                        if args is None:
                            args = next(feed, _EXHAUSTED)
                            if args is _EXHAUSTED:
                                self._exhausted = True
                                self._feed = None
                                break
                        if exe._state is not _RUNNING:
                            exe._check_accepting()
                        if exe._free > 0 and not exe._backlog and (
                            limiter is None or limiter.try_take()
                        ):
                            exe._free -= 1
                        else:
                            self._next_args = args  # start it on a later call
                            must_wait = count == 0  # nothing of ours in flight to wait for
                            break
                        if fast and (
                            loop._task_factory  # type: ignore[union-attr]
                            if fast == _NATIVE_LOOP
                            else loop.get_task_factory()  # type: ignore[union-attr]
                        ) is None:
                            # Admission._start() written out for the common case, as in
                            # submit(). Not registered in exe._running: this map holds it.
                            runner: Coroutine[Any, Any, Any] | None = None
                            coro: Any = None
                            try:
                                coro = fn(*args)
                                if type(coro) is not _CoroutineType:
                                    coro = as_coroutine(coro, fn)
                                runner = exe._run_job(coro, self._return_exceptions, False)
                                job: asyncio.Future[Any] = _JobTask(runner, loop=loop)
                            except BaseException:
                                exe._start_failed(fn, self._where, runner, coro)
                                raise
                        else:
                            job = exe._start(
                                fn, args, _NO_KWARGS, self._where, self._return_exceptions
                            )
                        args = None
                        count += 1
                        if self._ordered:
                            self._pending.append(job)
                        else:
                            self._in_flight.add(job)
                            job.add_done_callback(self._done.on_unordered_done)
                except BaseException:
                    self._count = count
                    self._abandon()
                    raise
                if must_wait:
                    self._count = count
                    return self._anext(filled=True)
        elif self._zip is None and count < self._window and not self._exhausted:
            self._count = count
            return self._anext(filled=True)  # async inputs: _fill() awaits them
        if self._ordered:
            pending = self._pending
            if pending:
                job = pending[0]
                if job.done():
                    try:
                        succeeded = job.exception() is None
                    except _CancelledError:
                        succeeded = False
                    if succeeded:
                        pending.popleft()
                        self._count = count - 1
                        return job
        self._count = count
        return self._anext(filled=False)

    async def _anext(self, filled: bool) -> T:
        if self._closed:
            raise StopAsyncIteration
        try:
            if filled and not self._exhausted:  # __anext__ found it has to wait
                await self._fill()
            if self._ordered:
                if not self._pending:
                    raise StopAsyncIteration
                job = self._pending[0]
                if not job.done():
                    await self._wait_for(job)
                self._pending.popleft()
            else:
                if not self._finished:
                    if not self._in_flight:
                        raise StopAsyncIteration
                    await self._wait_for(None)
                job = self._finished.popleft()
            self._count -= 1
            try:
                return job.result()  # type: ignore[no-any-return]
            except BaseException as exc:
                if self._return_exceptions:
                    return exc  # type: ignore[return-value]
                first_error = self._exe._first_error
                if job.cancelled() and first_error is not None:
                    # Cancelled because another job failed (fail-fast): report that error,
                    # not a CancelledError this consumer never asked for.
                    raise first_error from None
                raise
        except StopAsyncIteration:
            self._closed = True
            self._feed = None
            self._exe._maps.discard(self._done)
            raise
        except BaseException:
            self._abandon()
            raise

    async def aclose(self) -> None:
        """Stop: cancel the jobs in flight and wait until they have finished cancelling."""
        jobs = self._abandon()
        if jobs:
            await asyncio.wait(jobs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # `async for r in exe.map(...): break` drops the iterator without aclose(): cancel
        # its jobs here so they do not run on unobserved until the executor's block ends.
        if self._closed:
            return
        loop = self._exe._loop
        if loop is None or loop.is_closed():
            self._closed = True
        elif asyncio._get_running_loop() is loop:
            self._abandon()
        else:  # collected on another thread: only the loop's thread may cancel tasks
            loop.call_soon_threadsafe(self._abandon)

    #
    # Internals
    #

    def _abandon(self) -> list[asyncio.Future[Any]]:
        self._closed = True
        self._feed = None
        exe = self._exe
        exe._maps.discard(self._done)
        loop = exe._loop
        jobs = [job for job in (*self._pending, *self._in_flight) if not job.done()]
        self._pending.clear()
        self._in_flight.clear()
        self._finished.clear()
        self._count = 0
        if loop is not None and not loop.is_closed():
            for job in jobs:
                exe._cancel_job(job)
        return jobs

    async def _fill(self) -> None:
        """The slow path of filling: async inputs, or waiting for a slot."""
        exe = self._exe
        while not self._exhausted and self._count < self._window:
            args = self._next_args
            if args is None:
                args = await self._read()
                if args is _EXHAUSTED:
                    self._exhausted = True
                    self._feed = None
                    return
                self._next_args = args
            if exe._state is not _RUNNING:
                exe._check_accepting()
            limiter = exe._limiter
            if exe._free > 0 and not exe._backlog and (limiter is None or limiter.try_take()):
                exe._free -= 1
            elif self._count:
                return  # something of ours is in flight: wait for it instead
            else:
                await exe._acquire_slot()
                if exe._state is _CANCELLING:
                    exe._free += 1
                    exe._check_accepting()
            self._next_args = None
            self._launch(args)

    def _launch(self, args: tuple[Any, ...]) -> None:
        job = self._exe._start(self._fn, args, _NO_KWARGS, self._where, self._return_exceptions)
        self._count += 1
        if self._ordered:
            self._pending.append(job)
        else:
            self._in_flight.add(job)
            job.add_done_callback(self._done.on_unordered_done)

    async def _read(self) -> tuple[Any, ...]:
        if self._zip is not None:
            return next(self._zip, _EXHAUSTED)
        values = []
        for it in self._inputs:
            try:
                if isinstance(it, AsyncIterator):
                    values.append(await it.__anext__())
                else:
                    values.append(next(it))
            except (StopIteration, StopAsyncIteration):
                return _EXHAUSTED  # type: ignore[no-any-return]
        return tuple(values)

    async def _wait_for(self, job: asyncio.Future[Any] | None) -> None:
        """Wait for ``job`` (or any job, for None) without letting our own cancellation
        reach it: a consumer cancelled here abandons the map, and _abandon() cancels the
        jobs as the executor's own cancellations, not as job errors."""
        exe = self._exe
        loop = exe._loop
        assert loop is not None
        wake = loop.create_future()
        if job is not None:
            # The executor resolves ``wake`` as it settles the job, in the job's last step.
            exe._watchers[job] = wake
        else:
            self._done.wake = wake  # resolved by the next job to finish (on_unordered_done)
        try:
            await wake
        finally:
            if job is not None:
                exe._watchers.pop(job, None)
            else:
                self._done.wake = None


class MapJobs:
    """The jobs of one MapIterator, and what its job callbacks touch: the buffers and the
    wake-up. The executor's _abort cancels the jobs from here.

    ``pending`` (ordered map): every started job not yet yielded, in input order.
    ``in_flight`` and ``finished`` (unordered): jobs running, and finished jobs not yet
    yielded, in completion order.
    """

    __slots__ = ("finished", "in_flight", "pending", "wake")

    def __init__(self) -> None:
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.in_flight: set[asyncio.Future[Any]] = set()
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.wake: asyncio.Future[None] | None = None

    def on_unordered_done(self, job: asyncio.Future[Any]) -> None:
        if job in self.in_flight:
            self.in_flight.discard(job)
            self.finished.append(job)
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)
