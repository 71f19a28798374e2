"""MapJobs: the state of one map() that the executor and the jobs' callbacks reach, the
reader task of its async inputs."""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._errors import SHUTDOWN_MESSAGE
from ._policy import JobKind

__all__ = ["EXHAUSTED", "MapJobs", "read_inputs"]

EXHAUSTED: Any = object()  # the end of the inputs (and the generator's priming stop)


class MapJobs:
    """One map's jobs, and what its job callbacks touch: the buffers and the wake-up.

    ``pending`` (ordered map): every started job not yet yielded, in input order.
    ``in_flight`` and ``finished`` (unordered): jobs running, and finished jobs not yet
    yielded, in completion order. ``wake``: the future the consumer waits on, if it
    waits. ``closed``: the map has ended or was abandoned; ``shut``: closed by the
    executor (close_maps). ``owner``: the MapIterator, weakly (it must stay collectable).

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
        "closed", "finished", "fn", "go", "in_flight", "items", "kind", "limit", "ordered",
        "owner", "pending", "reader", "shut", "sources", "taken", "wake", "wants", "where",
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
    ) -> None:
        self.fn = fn
        self.window = window
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

    def ended(self) -> None:
        """A consumer in the map finds it closed: the end of the iteration, or, if the
        executor closed it with inputs left, RuntimeError."""
        if self.shut:
            raise RuntimeError(SHUTDOWN_MESSAGE)

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
