"""MapJobs: the state of one map() that the executor and the jobs' callbacks reach (its
reader task is in _map_reader)."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from ._chains import Left, left_by
from ._following import QueuedFuture
from ._policy import JobKind, Outcomes, error_of, loop_going_down
from ._retry import Inherit, RetryPolicy

__all__ = ["EXHAUSTED", "MapJobs", "follow_limit"]

EXHAUSTED: Any = object()  # the end of the inputs (and the generator's priming stop)


class MapJobs:
    """One map's jobs, and what its job callbacks touch: the buffers and the wake-up.

    ``pending`` (ordered map): every started job not yet yielded, in input order.
    ``in_flight`` and ``finished`` (unordered): jobs running, and finished jobs not yet
    yielded, in completion order. ``wake``: the future the consumer waits on, if it
    waits for a result or an item; ``taking``: its place in the executor's line, if it
    waits for a slot (closing the map turns it away). ``closed``: the map has ended or
    was abandoned; ``shut``: closed by the executor (close_maps). ``owner``: the
    MapIterator, weakly (it must stay collectable).
    ``in_job``: made inside one of the executor's jobs (the block's exit leaves it open).
    ``closing``: what closing the map cancelled (its jobs, its reader) and has not ended
    yet, which every ``aclose()`` waits for (see _map_close.still_closing).

    The window: the map starts a job only while fewer than ``window`` of its jobs are
    started and not yet yielded. ``window`` is ``base`` (the buffersize; ``follows``: the
    default, the executor's current limit, see follow_limit) plus one for each of its
    ``pausing`` jobs (between two attempts, holding no slot), up to ``base`` of them: so
    pausing jobs do not keep the map from running others, and a map holds at most
    ``2 * base`` jobs.

    ``failed``: the error of the map's first job to fail (kind POLICY; its final error, or
    the CancelledError of a job cancelled by someone else than the executor),
    ``failed_left`` that error as the job left it (see left_by: a raise of it inside an
    ``except`` clause changes its ``__context__``). From then on the map starts nothing
    (its window is 0) and its other unfinished jobs are cancelled (through ``outcomes``,
    the executor's own cancellation): its consumer yields the results ready before the
    failed job, then raises its error (see job_failed).

    Async inputs (``sources``) are read by ONE ``reader`` task per map (read_inputs), so an
    async generator input always runs in the same task (it may hold ``asyncio.timeout()``
    or a TaskGroup open across its yields). It appends each item to ``items``; ``limit``:
    the reads it may begin (results yielded + the window, set by the map; ``taken`` counts
    the items the map took), ``go``: the future it waits on for more; ``wants``: the map
    waits for an item (only then does the reader wake it: ``wake`` may be a wait for a
    result, which must not wake early). Invariant: reads begun <= ``limit``, so the input
    is never read further ahead than the window, and never two ``__anext__()`` calls on
    an input at once. The reader closes the async inputs as it ends; ``close_failed``: it
    raises the error their clean-up raised (see _close_inputs). ``unread``: the inputs
    when no reader could be made (the loop's task factory refused it, with
    ``refusal``), for a caller that can await to close in its own task (see
    close_unread), or, with no block, for a closing task asked for again a turn later
    (see _map_close._close_unread_soon).
    """

    __slots__ = (
        "base", "close_failed", "closed", "closing", "context", "failed", "failed_left",
        "finished", "fn", "follows", "go", "in_flight", "in_job", "items", "kind", "limit",
        "ordered", "outcomes", "owner", "pausing", "pending", "policy", "reader", "refusal",
        "runs_no_code", "shut", "sources", "taken", "taking", "unread", "wake", "wants",
        "where", "window",
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
        context: contextvars.Context,
        follows: bool = False,
    ) -> None:
        self.fn = fn
        # The context every job of the map starts in a copy of: the map() caller's, marked
        # as inside a job of the executor (the mark run_job would otherwise set in each
        # job's own context: see internals.rst). Each job gets a fresh copy, entered (with
        # Context.run) for fn's call and its task's creation: the context itself may be
        # entered already when a job starts, by an eager first step or a finaliser that
        # ends a job whose slot starts the next.
        self.context = context
        # fn is an async def function, whose call runs none of its code (see start_job).
        self.runs_no_code = type(fn) is types.FunctionType and bool(
            fn.__code__.co_flags & inspect.CO_COROUTINE
        )
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
        self.unread: tuple[Iterator[Any] | AsyncIterator[Any], ...] = ()
        self.refusal: BaseException | None = None
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.in_flight: set[asyncio.Future[Any]] = set()
        self.finished: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.wake: asyncio.Future[None] | None = None
        self.taking: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()
        self.limit = 0
        self.taken = 0
        self.go: asyncio.Future[None] | None = None
        self.wants = False
        self.closed = False
        self.closing: set[asyncio.Future[Any]] = set()
        self.shut = False
        self.in_job = False
        self.close_failed = False
        self.owner: weakref.ref[Any] | None = None
        self.failed: BaseException | None = None
        self.failed_left: Left | None = None

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
        cancels), or the executor is stopping (abort, which closes the map); nor when
        the loop is going down (see loop_going_down): nothing is cancelled again."""
        if self.kind is not JobKind.POLICY or self.closed or self.failed is not None:
            return
        if isinstance(error, asyncio.CancelledError) and (
            self.outcomes.cause is not None or loop_going_down(job)
        ):
            return
        self.failed, self.failed_left = error, left_by(error)
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
