"""MapIterator: the lazy, bounded async iterator behind map() and map_unordered()."""

from __future__ import annotations

import asyncio
import collections
import sys
import types
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from ._admission import NATIVE_LOOP as _NATIVE_LOOP
from ._errors import check_job_fn
from ._jobs import JobTask, as_coroutine
from ._policy import _SHUTDOWN_MESSAGE, reraise_job_error
from ._state import State
from ._typing import Self, final

if TYPE_CHECKING:
    from ._executor import CoroutineExecutor

__all__ = ["MapIterator", "MapJobs", "close_maps"]
_RUNNING = State.RUNNING
_CoroutineType = types.CoroutineType
_JobTask = JobTask
_CANCELLING = State.CANCELLING

T = TypeVar("T")

_EXHAUSTED: Any = object()
_ANEXT_SLOT = ("__anext__",)
_NO_KWARGS: dict[str, Any] = {}  # map jobs take positional arguments only; never mutated


@final
class MapIterator(Generic[T], AsyncIterator[T]):
    """Results of ``CoroutineExecutor.map()`` (input order) or ``map_unordered()``.

    Jobs start as results are consumed: at most ``buffersize`` are started ahead of the
    consumer, so the input is read lazily and memory stays bounded. Use it with
    ``async for``. A map is closed (its in-flight jobs cancelled, no more input read)
    when it is dropped, by ``aclose()`` (``async with`` or ``contextlib.aclosing``), and
    at the latest when the executor's block exits or ``shutdown()`` begins.

    One consumer at a time: ``__anext__()`` while another call of it is still waiting
    raises ``RuntimeError``. ``aclose()`` from another task ends a waiting consumer's
    iteration (``StopAsyncIteration``); a map the executor closed raises
    ``RuntimeError`` from ``__anext__()`` instead (a waiting consumer's call included),
    since its inputs were not all processed.
    """

    # __anext__ is a slot holding the generator's own bound __anext__: `async for` looks
    # it up on the type, reads the slot and calls it, with no Python call of ours. A
    # result then costs one resumption of the generator's frame, where the map's state
    # lives in local variables. (A Python __anext__ returning self._results.__anext__()
    # measured about 2% of a no-op job more, in callgrind instruction counts.)
    # (Spelled so that type checkers keep seeing the method declared below.)
    __slots__ = ("__weakref__", "_done", "_exe", "_ordered", "_results", "_window", *_ANEXT_SLOT)

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
        check_job_fn(fn, where)  # once per map: an async generator function is refused too
        if not iterables:
            raise TypeError(f"{where}() must have at least one iterable")
        if buffersize is None:
            buffersize = executor.max_workers
        elif isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an int or None (got {buffersize!r})")
        elif buffersize < 1:
            raise ValueError(f"buffersize must be greater than 0 (got {buffersize!r})")
        self._exe = executor
        self._window = buffersize
        self._ordered = ordered
        # Inputs: one zip when all are sync, else each pulled in turn (sync or async).
        feed: Iterator[tuple[Any, ...]] | None = None
        inputs: list[Iterator[Any] | AsyncIterator[Any]] = []
        if all(not isinstance(it, AsyncIterable) for it in iterables):
            feed = zip(*iterables)
        else:
            for it in iterables:
                inputs.append(it.__aiter__() if isinstance(it, AsyncIterable) else iter(it))
        # Job callbacks, the executor and the generator reach only this small object and
        # never the iterator itself, so a map left by `break` is collected at once (and
        # its generator, closed as it goes, cancels its jobs) while jobs still run.
        self._done = jobs = MapJobs()
        self._results = _results(
            executor, fn, feed, inputs, buffersize, ordered, return_exceptions, where, jobs
        )
        self.__anext__ = self._results.__anext__  # type: ignore[method-assign]
        jobs.owner = weakref.ref(self)  # for close_maps()
        executor._maps.add(jobs)  # its jobs are not in _running: _abort finds them here
        # Start the generator to its first yield with no asyncgen hooks installed, so it
        # gets no finaliser: dropped (`break`, or never iterated) it is closed at once, in
        # the same step, and its cleanup cancels the jobs; asyncio's finaliser would
        # schedule a task to close it a turn later. The cleanup never awaits.
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
        try:
            self._results.asend(None).send(None)
        except StopIteration:
            pass  # at the priming yield
        finally:
            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)

    def __repr__(self) -> str:
        kind = "map" if self._ordered else "map_unordered"
        jobs = self._done
        if jobs.closed:
            return f"<MapIterator {kind} closed>"
        buffered = len(jobs.pending) + len(jobs.in_flight) + len(jobs.finished)
        return f"<MapIterator {kind} {buffered}/{self._window} buffered>"

    def __aiter__(self) -> Self:
        return self

    if TYPE_CHECKING:

        def __anext__(self) -> Awaitable[T]: ...

    else:  # hidden from type checkers, which then still flag a plain `for` over a map

        def __iter__(self) -> Iterator[T]:
            """A plain ``for`` (or ``list()``): refused with the way out, not only the
            stock "object is not iterable"."""
            raise TypeError(
                f"{type(self).__name__!r} object is not iterable: use 'async for'"
                f" (in async code), or LoopExecutor.map() from sync code"
            )

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

    def _abandon(self) -> list[asyncio.Future[Any]]:
        return _close(self._exe, self._done, self._results)


class MapJobs:
    """The jobs of one MapIterator, and what its job callbacks touch: the buffers and the
    wake-up. The executor's _abort cancels the jobs from here.

    ``pending`` (ordered map): every started job not yet yielded, in input order.
    ``in_flight`` and ``finished`` (unordered): jobs running, and finished jobs not yet
    yielded, in completion order. ``wake``: the future the consumer waits on, if it
    waits. ``closed``: the map has ended or was abandoned; ``shut``: closed by the
    executor (close_maps). ``owner``: the MapIterator, weakly (it must stay collectable).

    Async inputs are read by ONE ``reader`` task per map (see _read), so an async
    generator input always runs in the same task (it may hold ``asyncio.timeout()`` or a
    TaskGroup open across its yields). It appends each item to ``items``; ``limit``: the
    reads it may have begun (results yielded + the window, set by the map), ``go``: the
    future it waits on for more; ``wants``: the map waits for an item (only then does the
    reader wake it: ``wake`` may be a wait for a result, which must not wake early).
    Invariant: reads begun <= ``limit``, so the input is never read further ahead than the
    window, and never two ``__anext__()`` calls on an input at once.
    """

    __slots__ = (
        "closed", "finished", "go", "in_flight", "items", "limit", "owner", "pending",
        "reader", "shut", "wake", "wants",
    )

    def __init__(self) -> None:
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.in_flight: set[asyncio.Future[Any]] = set()
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.wake: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()
        self.limit = 0
        self.go: asyncio.Future[None] | None = None
        self.wants = False
        self.closed = False
        self.shut = False
        self.owner: weakref.ref[MapIterator[Any]] | None = None

    def ended(self) -> None:
        """A consumer in the map finds it closed: the end of the iteration, or, if the
        executor closed it with inputs left, RuntimeError."""
        if self.shut:
            raise RuntimeError(_SHUTDOWN_MESSAGE)

    def on_unordered_done(self, job: asyncio.Future[Any]) -> None:
        if job in self.in_flight:
            self.in_flight.discard(job)
            self.finished.append(job)
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    def on_read(self, reader: object = None) -> None:
        """An item was read, or the reader ended (its done callback)."""
        # Only while the map waits for an item: a reader that ended as its task was
        # created (eagerly), or that reads while the map waits for a result, must not
        # wake that wait (it would take a result that is not there).
        wake = self.wake
        if self.wants and wake is not None and not wake.done():
            wake.set_result(None)


#
# The generator behind MapIterator
#


async def _results(
    exe: CoroutineExecutor,
    fn: Callable[..., Any],
    feed: Iterator[tuple[Any, ...]] | None,
    inputs: list[Iterator[Any] | AsyncIterator[Any]],
    window: int,
    ordered: bool,
    return_exceptions: bool,
    where: str,
    jobs: MapJobs,
) -> AsyncGenerator[Any, None]:
    """Start jobs while the window has room, then yield the next result; until the inputs
    and the window are empty. ``feed``: the zip of sync inputs (None: read ``inputs``,
    some of them async, one item each per job).

    Runs once per result, so it is written for speed: the state lives in locals, and the
    job start is Admission._start() written out for the common case (as in submit()).
    Every await is followed by a check of ``jobs.closed``: aclose() from another task, or
    the iterator dropped, abandons the map while its consumer waits in here.
    """
    loop: Any = exe._loop
    fast = exe._fast
    native = fast == _NATIVE_LOOP
    run_job = exe._run_job
    coroutine_type, job_task = _CoroutineType, _JobTask
    pending, in_flight, finished = jobs.pending, jobs.in_flight, jobs.finished
    on_done = jobs.on_unordered_done
    count = 0  # jobs started and not yet yielded: the window's fill
    args: Any = None  # read from the inputs, not started yet
    sources = tuple(inputs)  # the reader's own: the finally below clears inputs
    items = jobs.items
    taken = 0  # items taken from the reader: taken - count is the results yielded
    more = True  # the inputs may hold more
    try:
        yield _EXHAUSTED  # the priming stop (see MapIterator.__init__)
        while True:
            retry = None  # seconds until a start-rate token arrives, if one is all we lack
            while more and count < window:
                if args is None:
                    if feed is not None:
                        args = next(feed, _EXHAUSTED)
                    else:
                        # Async inputs: the reader task reads them (see _read) while
                        # results are yielded; a result that is ready meanwhile is yielded
                        # at once (the read goes on, its item is taken after the yield).
                        if items:
                            args = items.popleft()
                            taken += 1
                        else:
                            jobs.limit = taken - count + window  # results yielded + window
                            reader = jobs.reader
                            if reader is None:
                                reader = jobs.reader = loop.create_task(_read(sources, jobs))
                                reader.add_done_callback(jobs.on_read)
                            elif (go := jobs.go) is not None and not go.done():
                                go.set_result(None)
                            while not items and not reader.done() and not (
                                count and (pending[0].done() if ordered else finished)
                            ):
                                # Wait for the item or, with jobs in flight, the next result.
                                head = pending[0] if ordered and count else None
                                jobs.wake = wake = loop.create_future()
                                if head is not None:
                                    exe._watchers[head] = wake
                                jobs.wants = True
                                try:
                                    await wake
                                finally:
                                    jobs.wants = False
                                    if head is not None:
                                        exe._watchers.pop(head, None)
                                    jobs.wake = None
                                if jobs.closed:
                                    jobs.ended()
                                    return
                            if items:
                                args = items.popleft()
                                taken += 1
                            elif not reader.done():
                                break  # a result is ready: yield it first; the read goes on
                            else:
                                jobs.reader = None
                                args = reader.result()  # _EXHAUSTED, or an input's error
                    if args is _EXHAUSTED:
                        more = False
                        args = None
                        break
                if exe._state is not _RUNNING:
                    exe._check_accepting()
                # The limiter is read per start: max_per_second may be set while we run.
                if exe._free > 0 and not exe._backlog and (
                    (limiter := exe._limiter) is None or limiter.try_take()
                ):
                    exe._free -= 1
                elif count:
                    # A job of ours is in flight: yield its result, start this later. If
                    # only a rate token is missing, also come back when it arrives: the
                    # rate bounds starts per second, not how many jobs run.
                    limiter = exe._limiter
                    if limiter is not None and exe._free > 0 and not exe._backlog:
                        retry = limiter.delay()
                    break
                else:
                    await exe._acquire_slot()  # FIFO behind other producers
                    if exe._state is _CANCELLING:
                        exe._free += 1  # granted just before an abort: give it back
                        exe._check_accepting()
                    if jobs.closed:
                        exe._release_slot()
                        jobs.ended()
                        return
                if fast and (
                    loop._task_factory if native else loop.get_task_factory()
                ) is None:
                    # Not registered in exe._running: this map holds the job.
                    runner: Coroutine[Any, Any, Any] | None = None
                    coro: Any = None
                    try:
                        coro = fn(*args)
                        if type(coro) is not coroutine_type:
                            coro = as_coroutine(coro, fn)
                        runner = run_job(coro, return_exceptions, False)
                        job: Any = job_task(runner, loop=loop)  # not without: see _start
                    except BaseException:
                        exe._start_failed(fn, where, runner, coro)
                        raise
                else:
                    job = exe._start(fn, args, _NO_KWARGS, where, return_exceptions)
                args = None
                count += 1
                if ordered:
                    pending.append(job)
                else:
                    in_flight.add(job)
                    job.add_done_callback(on_done)
            if ordered:
                if not pending:
                    return
                job = pending[0]
                if not job.done():
                    # The executor resolves the wake-up as it settles the job, in the job's
                    # own last step; its task is done before we resume.
                    wake = jobs.wake = exe._watchers[job] = loop.create_future()
                    timer = None if retry is None else loop.call_later(retry, _wake, wake)
                    try:
                        await wake
                    finally:
                        exe._watchers.pop(job, None)
                        jobs.wake = None
                        if timer is not None:
                            timer.cancel()
                    if jobs.closed:
                        jobs.ended()
                        return
                    if not job.done():
                        continue  # woken for the token: start more, then wait again
                pending.popleft()
            else:
                if not finished:
                    if not in_flight:
                        return
                    wake = jobs.wake = loop.create_future()  # resolved by on_unordered_done
                    timer = None if retry is None else loop.call_later(retry, _wake, wake)
                    try:
                        await wake
                    finally:
                        jobs.wake = None
                        if timer is not None:
                            timer.cancel()
                    if jobs.closed:
                        jobs.ended()
                        return
                    if not finished:
                        continue  # woken for the token: start more, then wait again
                job = finished.popleft()
            count -= 1
            try:
                result = job.result()
            except BaseException as exc:
                if not return_exceptions:
                    first_error = exe._first_error
                    if job.cancelled() and first_error is not None:
                        # Cancelled because another job failed (fail-fast): report that
                        # error, not a CancelledError this consumer never asked for, and
                        # leave the shared error's chain as its job left it.
                        reraise_job_error(first_error, exe._first_tb)
                    raise
                result = exc
            yield result
    except BaseException:
        # A job error, the consumer cancelled while it waited, a refused start, or
        # GeneratorExit (closed at a yield, or dropped): cancel what is still in flight,
        # unless the map was closed already and cancelled it then (what may be left, a
        # job of its own that closed it, is not ours to cancel).
        if not jobs.closed:
            if asyncio._get_running_loop() is loop:
                _abandon(exe, jobs)
            elif not loop.is_closed():  # dropped on another thread: the loop's thread cancels
                loop.call_soon_threadsafe(_abandon, exe, jobs)
        raise
    finally:
        jobs.closed = True
        if not in_flight:  # else a job of ours is still running: see _abandon
            exe._maps.discard(jobs)
        # Drop the inputs (and the last job) here rather than as the frame is torn down:
        # their finalisers may run Python code (an async generator input's finaliser
        # hook does), and on CPython 3.13.0 code that walks the stack while a generator's
        # frame is being cleared can crash the interpreter (seen with uvloop's debug
        # mode, whose call_soon_threadsafe calls sys._getframe).
        feed = job = coro = runner = args = reader = wake = head = go = timer = None
        sources = ()
        inputs.clear()


def _wake(wake: asyncio.Future[None]) -> None:
    """A start-rate token arrived for a map waiting for a result: let it start more."""
    if not wake.done():
        wake.set_result(None)


async def _read(sources: tuple[Iterator[Any] | AsyncIterator[Any], ...], jobs: MapJobs) -> Any:
    """The map's reader task: reads the zipped inputs, some of them async, into
    ``jobs.items``, never more than ``jobs.limit`` items; returns _EXHAUSTED at the end of
    the shortest input, raises an input's error. The whole iteration runs in this one
    task, so an async generator input enters and exits its context managers in the same
    task. Cancelled (the map closed), it closes the async inputs that can be closed
    (``aclose()``), here, in the task where they ran."""
    loop = asyncio.get_running_loop()
    items = jobs.items
    # (is it async, its next-item method), per input: no isinstance() per item.
    steps = [
        (True, it.__anext__) if isinstance(it, AsyncIterator) else (False, it.__next__)
        for it in sources
    ]
    reads = 0
    try:
        while True:
            while reads >= jobs.limit:
                jobs.go = go = loop.create_future()  # resolved by the map as it frees room
                try:
                    await go
                finally:
                    jobs.go = None
            reads += 1
            assert reads <= jobs.limit  # never further ahead than the window
            values = []
            for is_async, step in steps:
                values.append(await step() if is_async else step())
            if jobs.closed:
                # The input closed the map itself while we read it (it called
                # shutdown(), say): _stop_reading could not cancel us, its caller.
                await _close_inputs(sources)
                return _EXHAUSTED
            items.append(tuple(values))
            jobs.on_read()
    except (StopIteration, StopAsyncIteration):
        return _EXHAUSTED
    except asyncio.CancelledError:
        await _close_inputs(sources)
        raise


async def _close_inputs(sources: tuple[Iterator[Any] | AsyncIterator[Any], ...]) -> None:
    for source in sources:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                pass  # the input's own cleanup failed; the map that read it is gone


def _stop_reading(jobs: MapJobs) -> asyncio.Task[Any] | None:
    """Cancel the map's reader task, if it runs; returns it if so. Its outcome is
    retrieved (nobody is left to read it)."""
    reader = jobs.reader
    if reader is None:
        return None
    jobs.reader = None
    if reader.done():
        if not reader.cancelled():
            reader.exception()
        return None
    if reader is asyncio.current_task(reader.get_loop()):
        # The input itself closes the map (calls shutdown(), say): it is in its own step.
        reader.add_done_callback(_retrieve)
        return None
    reader.cancel()
    reader.add_done_callback(_retrieve)
    return reader


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _abandon(exe: CoroutineExecutor, jobs: MapJobs) -> list[asyncio.Future[Any]]:
    """Close the map: cancel its unfinished jobs (as the executor's own cancellations, not
    job errors) and wake a consumer waiting in it. Returns the cancelled jobs.

    A job of the map that closes it (calling ``shutdown()``, say) is neither cancelled
    nor waited for: it is in its own step. It stays in ``in_flight`` and the map in
    ``exe._maps`` (until the executor closes), so that _abort still reaches it."""
    jobs.closed = True
    loop = exe._loop
    live = [job for job in (*jobs.pending, *jobs.in_flight) if not job.done()]
    jobs.pending.clear()
    jobs.in_flight.clear()
    jobs.finished.clear()
    current = asyncio.current_task(loop) if loop is not None else None
    if current is not None and current in live:
        live.remove(current)
        jobs.in_flight.add(current)
    else:
        exe._maps.discard(jobs)
    if loop is not None and not loop.is_closed():
        wake = jobs.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        for job in live:
            exe._cancel_job(job)
        reader = _stop_reading(jobs)
        if reader is not None:
            live.append(reader)  # aclose() waits for it too (and the inputs' aclose())
    return live


def _close(
    exe: CoroutineExecutor, jobs: MapJobs, results: AsyncGenerator[Any, None]
) -> list[asyncio.Future[Any]]:
    """Abandon the map and, unless a consumer is inside it, close its generator now (it
    only waits at a yield then, so closing runs no await): no finaliser task is left."""
    live = _abandon(exe, jobs)
    if not results.ag_running:  # type: ignore[attr-defined]
        try:
            results.aclose().send(None)
        except StopIteration:
            pass  # closed
    return live


def close_maps(exe: CoroutineExecutor) -> None:
    """The block's exit and shutdown(): close every map still open. Its in-flight jobs
    are cancelled (the executor's own cancellations: not errors), it reads no more input,
    and its ``__anext__()`` raises RuntimeError from now on; a consumer waiting inside it
    gets that RuntimeError as it wakes."""
    for jobs in list(exe._maps):
        if jobs.closed:
            continue  # kept only while a job of its own runs (see _abandon)
        jobs.shut = True
        it = jobs.owner() if jobs.owner is not None else None
        if it is None:  # dropped while a consumer waits inside it: wake that consumer
            _abandon(exe, jobs)
            continue
        it.__anext__ = _refused  # type: ignore[method-assign]
        it._abandon()


async def _refused() -> Any:
    raise RuntimeError(_SHUTDOWN_MESSAGE)
