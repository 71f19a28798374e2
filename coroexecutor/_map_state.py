"""MapJobs: the state of one map() that the executor and the jobs' callbacks reach, the
reader task of its async inputs."""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ._following import QueuedFuture
from ._policy import JobKind
from ._retry import Inherit, RetryPolicy

__all__ = ["EXHAUSTED", "MapJobs", "follow_limit", "read_inputs"]

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

    ``failed``: the error of the map's first job to fail (kind POLICY; its final error,
    not a cancellation), ``failed_tb`` the traceback it ended with. From then on the map
    starts nothing (its window is 0) and its other unfinished jobs are cancelled (with
    ``cancel``, the executor's own cancellation): its consumer yields the results ready
    before the failed job, then raises its error (see job_failed).

    Async inputs (``sources``) are read by ONE ``reader`` task per map (read_inputs), so an
    async generator input always runs in the same task (it may hold ``asyncio.timeout()``
    or a TaskGroup open across its yields). It appends each item to ``items``; ``limit``:
    the reads it may begin (results yielded + the window, set by the map; ``taken`` counts
    the items the map took), ``go``: the future it waits on for more; ``wants``: the map
    waits for an item (only then does the reader wake it: ``wake`` may be a wait for a
    result, which must not wake early). Invariant: reads begun <= ``limit``, so the input
    is never read further ahead than the window, and never two ``__anext__()`` calls on
    an input at once.
    """

    __slots__ = (
        "base", "cancel", "closed", "failed", "failed_tb", "finished", "fn", "follows", "go",
        "in_flight", "items", "kind", "limit", "ordered", "owner", "pausing", "pending",
        "policy", "reader", "shut", "sources", "taken", "wake", "wants", "where", "window",
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
        cancel: Callable[[asyncio.Future[Any]], None],
        follows: bool = False,
    ) -> None:
        self.fn = fn
        self.cancel = cancel
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
        """A job of the map ends with ``error`` (its final error, not a cancellation;
        ``job`` is its task): if errors end this map (kind POLICY), the first one does so
        now, not when the consumer reaches it. The map starts nothing more and cancels its
        other unfinished jobs, so a consumer waiting on one of them wakes up at once."""
        if self.kind is not JobKind.POLICY or self.closed or self.failed is not None:
            return
        self.failed, self.failed_tb = error, error.__traceback__
        self.follows = False
        self.base = self.window = 0
        for other in (*self.pending, *self.in_flight):
            if not other.done() and other is not job and not (
                type(other) is QueuedFuture and other.task is job
            ):
                self.cancel(other)

    def on_job_done(self, job: asyncio.Future[Any]) -> None:
        """Done callback of a map job that is not settled in-line: job_failed() if it
        failed."""
        if not job.cancelled() and (error := job.exception()) is not None:
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


async def read_inputs(jobs: MapJobs) -> Any:
    """The map's reader task: reads the zipped inputs, some of them async, into
    ``jobs.items``, never more than ``jobs.limit`` items; returns EXHAUSTED at the end of
    the shortest input, raises an input's error. The whole iteration runs in this one
    task, so an async generator input enters and exits its context managers in the same
    task. Cancelled (the map closed), it closes the async inputs that can be closed
    (``aclose()``), here, in the task where they ran."""
    loop = asyncio.get_running_loop()
    items = jobs.items
    sources = jobs.sources
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
                # The input closed the map itself while we read it (it called shutdown(),
                # say): _stop_reading could not cancel us, its caller.
                await _close_inputs(sources)
                return EXHAUSTED
            items.append(tuple(values))
            jobs.on_read()
    except (StopIteration, StopAsyncIteration):
        return EXHAUSTED
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
