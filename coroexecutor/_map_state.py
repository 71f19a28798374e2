"""MapJobs: the state of one map() that the executor and the jobs' callbacks reach, the
reader task of its async inputs."""

from __future__ import annotations

import asyncio
import collections
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ._following import QueuedFuture
from ._notes import safe_repr
from ._policy import JobKind, Outcomes, error_of
from ._retry import Inherit, RetryPolicy

__all__ = [
    "EXHAUSTED", "MapJobs", "cancel_readers", "drop_reader", "follow_limit", "read_inputs",
]

EXHAUSTED: Any = object()  # the end of the inputs (and the generator's priming stop)


class MapJobs:
    """One map's jobs, and what its job callbacks touch: the buffers and the wake-up.

    ``pending`` (ordered map): every started job not yet yielded, in input order.
    ``in_flight`` and ``finished`` (unordered): jobs running, and finished jobs not yet
    yielded, in completion order. ``wake``: the future the consumer waits on, if it
    waits. ``closed``: the map has ended or was abandoned; ``shut``: closed by the
    executor (close_maps). ``owner``: the MapIterator, weakly (it must stay collectable).

    The window: the map starts a job only while fewer than ``window`` of its jobs are
    started and not yet yielded. ``window`` is ``base`` (the buffersize; ``follows``: the
    default, the executor's current limit, see follow_limit) plus one for each of its
    ``pausing`` jobs (between two attempts, holding no slot), up to ``base`` of them: so
    pausing jobs do not keep the map from running others, and a map holds at most
    ``2 * base`` jobs.

    ``failed``: the error of the map's first job to fail (kind POLICY; its final error, or
    the CancelledError of a job cancelled by someone else than the executor),
    ``failed_tb`` the traceback it ended with. From then on the map starts nothing (its
    window is 0) and its other unfinished jobs are cancelled (through ``outcomes``, the
    executor's own cancellation): its consumer yields the results ready before the failed
    job, then raises its error (see job_failed).

    Async inputs (``sources``) are read by ONE ``reader`` task per map (read_inputs), so an
    async generator input always runs in the same task (it may hold ``asyncio.timeout()``
    or a TaskGroup open across its yields). It appends each item to ``items``; ``limit``:
    the reads it may begin (results yielded + the window, set by the map; ``taken`` counts
    the items the map took), ``go``: the future it waits on for more; ``wants``: the map
    waits for an item (only then does the reader wake it: ``wake`` may be a wait for a
    result, which must not wake early). Invariant: reads begun <= ``limit``, so the input
    is never read further ahead than the window, and never two ``__anext__()`` calls on
    an input at once. The reader closes the async inputs as it ends; ``close_failed``: it
    raises the error their clean-up raised (see _close_inputs).
    """

    __slots__ = (
        "base", "close_failed", "closed", "failed", "failed_tb", "finished", "fn", "follows",
        "go", "in_flight", "items", "kind", "limit", "ordered", "outcomes", "owner", "pausing",
        "pending", "policy", "reader", "shut", "sources", "taken", "wake", "wants", "where",
        "window",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        window: int,
        *,
        ordered: bool,
        kind: JobKind,
        sources: tuple[Iterator[Any] | AsyncIterator[Any], ...],
        policy: RetryPolicy | Inherit | None,
        outcomes: Outcomes,
        follows: bool = False,
    ) -> None:
        self.fn = fn
        self.outcomes = outcomes  # the executor's: its canceller, and whether it stops
        self.policy = policy  # the map's retry=, or INHERIT
        self.base = window
        self.window = window
        self.follows = follows
        self.pausing = 0
        self.ordered = ordered
        self.kind = kind
        self.where = "map" if ordered else "map_unordered"
        self.sources = sources
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.in_flight: set[asyncio.Future[Any]] = set()
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.wake: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()
        self.limit = 0
        self.taken = 0
        self.go: asyncio.Future[None] | None = None
        self.wants = False
        self.closed = False
        self.shut = False
        self.close_failed = False
        self.owner: weakref.ref[Any] | None = None
        self.failed: BaseException | None = None
        self.failed_tb: TracebackType | None = None

    def on_unordered_done(self, job: asyncio.Future[Any]) -> None:
        if job in self.in_flight:
            self.in_flight.discard(job)
            self.finished.append(job)
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    def job_failed(self, job: asyncio.Future[Any], error: BaseException) -> None:
        """A job of the map ends with ``error`` (its final error, or its CancelledError;
        ``job`` is its task): if errors end this map (kind POLICY), the first one does so
        now, not when the consumer reaches it. The map starts nothing more and cancels its
        other unfinished jobs, so a consumer waiting on one of them wakes up at once.

        A cancellation counts as the job's error (semantics.rst: "a running job was
        cancelled by someone else: same as a job raising CancelledError"), unless the
        executor caused it: then the map has failed or was closed already (its own
        cancels), or the executor is stopping (abort, which closes the map)."""
        if self.kind is not JobKind.POLICY or self.closed or self.failed is not None:
            return
        if isinstance(error, asyncio.CancelledError) and self.outcomes.cause is not None:
            return
        self.failed, self.failed_tb = error, error.__traceback__
        self.follows = False
        self.base = self.window = 0
        for other in (*self.pending, *self.in_flight):
            if not other.done() and other is not job and not (
                type(other) is QueuedFuture and other.task is job
            ):
                self.outcomes.cancel(other)

    def on_job_done(self, job: asyncio.Future[Any]) -> None:
        """Done callback of a map job that is not settled in-line: job_failed() if it
        failed or was cancelled."""
        error = error_of(job)
        if error is not None:
            self.job_failed(job, error)

    def paused(self) -> None:
        """A job of the map gives its slot back for a pause between attempts (retry=):
        it stops counting against the window (up to ``base`` such jobs), so the map is
        woken to start the next input in its place."""
        self.pausing += 1
        self._resize()

    def resumed(self) -> None:
        """A pausing job holds a slot again, or ends in its pause: it counts again."""
        self.pausing -= 1
        self._resize()

    def _resize(self) -> None:
        base = self.base
        grew = (window := base + min(self.pausing, base)) > self.window
        self.window = window
        if grew:
            wake = self.wake
            if wake is not None and not wake.done():
                wake.set_result(None)  # waiting for a result: start more first

    def on_read(self, reader: object = None) -> None:
        """An item was read, or the reader ended (its done callback)."""
        # Only while the map waits for an item: a reader that ended as its task was
        # created (eagerly), or that reads while the map waits for a result, must not
        # wake that wait (it would take a result that is not there).
        wake = self.wake
        if self.wants and wake is not None and not wake.done():
            wake.set_result(None)


def follow_limit(maps: Iterable[MapJobs], limit: int) -> None:
    """The executor's limit changed (``max_workers`` set, or an ``Adaptive`` limit moved):
    the maps whose window is the default follow it, and those it grew are woken."""
    for jobs in maps:
        if jobs.follows:
            jobs.base = limit
            jobs._resize()


async def read_inputs(
    jobs: MapJobs, sources: tuple[Iterator[Any] | AsyncIterator[Any], ...]
) -> Any:
    """The map's reader task: reads the zipped inputs, some of them async, into
    ``jobs.items``, never more than ``jobs.limit`` items; returns EXHAUSTED at the end of
    the shortest input, raises an input's error. The whole iteration runs in this one
    task, so an async generator input enters and exits its context managers in the same
    task; and however the reading ends (an input ran out or raised, the map closed), the
    async inputs are closed here too, before the task ends (see _close_inputs). A map
    closed before this task's first step reads nothing: its inputs are only closed.
    ``sources``: the map's inputs, passed in (the map lets go of them as it closes)."""
    loop = asyncio.get_running_loop()
    items = jobs.items
    # (is it async, its next-item method), per input: no isinstance() per item.
    steps = [
        (True, it.__anext__) if isinstance(it, AsyncIterator) else (False, it.__next__)
        for it in sources
    ]
    reads = 0
    ending: BaseException | None = None  # an input's error, or the map closing us
    while True:
        cancel: asyncio.CancelledError | None = None
        try:
            while not jobs.closed:
                while reads >= jobs.limit:
                    jobs.go = go = loop.create_future()  # resolved by the map as it frees room
                    try:
                        await go
                    finally:
                        jobs.go = None
                assert reads < jobs.limit  # never further ahead than the window
                values = []
                for is_async, step in steps:
                    values.append(await step() if is_async else step())
                reads += 1  # (counted once made: one a cancel cut short is made again)
                if jobs.closed:
                    # The input closed the map itself while we read it (it called
                    # shutdown(), say): _stop_reading could not cancel us, its caller.
                    break
                items.append(tuple(values))
                jobs.on_read()
        except (StopIteration, StopAsyncIteration):
            pass  # the shortest input ran out: as zip(), the inputs after it were not advanced
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            # At once: asyncio's task lets the first two out of the loop; the last is this
            # coroutine closed (its task destroyed pending), which may not await again.
            raise
        except asyncio.CancelledError as exc:
            # The map closes us only after it marks itself closed (or failed, see
            # retire): else the cancel is a context's an input holds open in this task
            # (see pass_on).
            if jobs.closed or jobs.failed is not None:
                ending = exc
            else:
                cancel = exc
        except BaseException as exc:
            ending = exc
        if cancel is None:
            break
        try:
            outcome = await pass_on(sources, steps, cancel)
        finally:
            cancel = None  # no cycle through this frame
        if outcome is not _GO_ON:
            ending = outcome
            break
    # Closed outside the except clauses: a raise inside one sets the raised error's
    # __context__ to the error being handled, which would cut the chain _close_inputs
    # builds.
    try:
        await _close_inputs(jobs, loop, sources, ending)
    finally:
        ending = None  # no cycle through this frame
    return EXHAUSTED


_GO_ON: Any = object()  # pass_on(): the input took the cancel and yielded: read on


async def pass_on(
    sources: tuple[Iterator[Any] | AsyncIterator[Any], ...],
    steps: list[tuple[bool, Callable[[], Any]]],
    cancel: asyncio.CancelledError,
) -> Any:
    """The reader was cancelled with the map open, so not by the map: by a context an
    async generator input holds open across its ``yield`` in this task, an
    ``asyncio.timeout()`` that expired or a ``TaskGroup`` whose child failed, while the
    reader waited between two items (or in another input's read). Such a context only
    turns its own cancel into its error (TimeoutError, the group's ExceptionGroup, after
    task.uncancel()) as the CancelledError passes through it, at the input's ``yield``:
    so it is thrown in there, into each input still suspended in turn, until one takes
    it. Returns what ends the reading: the input's error (raised from the map's ``async
    for``, as any input's error is), None if the input returned, the cancel itself if no
    input took it (an outside cancel: asyncio.run() ending, say); or _GO_ON if the input
    caught its error and yielded an item, which becomes its next read."""
    for index, source in enumerate(sources):
        if not inspect.isasyncgen(source) or source.ag_running or source.ag_frame is None:
            continue  # not an async generator suspended at a yield: it holds no context
        try:
            item = await source.athrow(cancel)
        except asyncio.CancelledError:
            continue  # not its context's cancel (that input has ended with it)
        except StopAsyncIteration:
            return None
        except BaseException as exc:  # (KeyboardInterrupt and the like end the reading too)
            return exc
        _push_back(steps, index, item)
        return _GO_ON
    return cancel


def _push_back(steps: list[tuple[bool, Callable[[], Any]]], index: int, item: Any) -> None:
    """The next read of input ``index`` returns ``item`` (then reads it as before)."""
    step = steps[index]

    async def pushed_back() -> Any:
        steps[index] = step
        return item

    steps[index] = (True, pushed_back)


async def _close_inputs(
    jobs: MapJobs,
    loop: asyncio.AbstractEventLoop,
    sources: tuple[Iterator[Any] | AsyncIterator[Any], ...],
    ending: BaseException | None,
) -> None:
    """Close the map's async inputs (those with an ``aclose()``: an async iterator object
    may have none), the last first, as nested ``async with aclosing(...)`` blocks would,
    all of them even if one fails; then raise ``ending``, the reading's own end (None:
    the inputs ran out).

    An error an input's clean-up raises is not lost. While the map is open it ends the
    map as the input's error would: raised (to the consumer, through this task), with
    ``ending`` or the previous clean-up error as its ``__context__``. Once the map is
    closed (this task cancelled, before or while it closes them) nobody is left to
    receive it: it goes to the loop's exception handler, as asyncio's
    ``shutdown_asyncgens()`` reports an async generator whose ``aclose()`` failed.
    KeyboardInterrupt, SystemExit and GeneratorExit propagate at once."""
    failed: list[tuple[Any, BaseException]] = []
    for source in reversed(sources):
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise  # as in read_inputs
        except asyncio.CancelledError as exc:
            # The map closed while we closed its inputs (it was left as they ran out):
            # close the rest all the same, then end cancelled.
            if not isinstance(ending, asyncio.CancelledError):
                ending = exc
        except BaseException as exc:  # not only Exception: a TaskGroup held across a
            failed.append((source, exc))  # yield raises BaseExceptionGroup([GeneratorExit()])
    error: BaseException | None = None
    try:
        if jobs.closed or isinstance(ending, asyncio.CancelledError):
            if ending is not None and not isinstance(ending, asyncio.CancelledError):
                # Raised by the read the map's close cancelled (a `finally` of the
                # input's that raises), or as the input itself closed the map.
                _report(loop, ending)
            for source, error in failed:
                _report(loop, error, source)
        elif failed:
            for _, error in failed:
                if ending is not None:
                    error.__context__ = ending
                ending = error
            jobs.close_failed = True  # reported instead if the map is closed before taking it
        if ending is not None:
            raise ending
    finally:
        ending = error = None  # no cycle through this frame
        failed.clear()


def drop_reader(jobs: MapJobs, reader: asyncio.Task[Any]) -> None:
    """The map is closed after its reader ended, before it took the reader's outcome: an
    error the inputs' clean-up raised is reported (see _close_inputs), an input's own
    error is only marked as seen."""
    if reader.cancelled():
        return
    error = reader.exception()  # (which marks it as seen)
    if error is not None and jobs.close_failed:
        _report(reader.get_loop(), error)


def _report(loop: asyncio.AbstractEventLoop, error: BaseException, source: object = None) -> None:
    """Report an error of a map's input that nobody can receive, in the form asyncio's
    ``shutdown_asyncgens()`` reports an async generator whose ``aclose()`` failed."""
    context: dict[str, Any] = {
        # A safe repr, as the jobs' notes use: an input whose __repr__ raises would
        # otherwise lose the report (raised here, in a task whose outcome nobody reads).
        "message": "an error occurred during closing of "
        + ("a map's input" if source is None else f"map input {safe_repr(source)}"),
        "exception": error,
    }
    if inspect.isasyncgen(source):
        context["asyncgen"] = source  # the key asyncio's report uses
    loop.call_exception_handler(context)


def cancel_readers(readers: Iterable[asyncio.Task[Any]], current: object) -> None:
    """Cancel map reader tasks (again, if they were cancelled before: a clean-up of an
    input's that waits is interrupted there), except ``current`` (an input that closes
    the map itself runs in it) and one that has not taken its first step: cancelled
    then, its coroutine would end without running a line, and not close the inputs;
    it finds its map closed as it starts, and only closes them."""
    for reader in readers:
        if reader is not current and not reader.done() and not _unstarted(reader):
            reader.cancel()


def _unstarted(reader: asyncio.Task[Any]) -> bool:
    """Whether the task has not taken its first step (a task of another class than
    asyncio's, with no get_coro(), is taken to have started)."""
    get_coro = getattr(reader, "get_coro", None)
    coro = get_coro() if get_coro is not None else None
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
