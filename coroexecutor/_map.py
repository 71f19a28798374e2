"""MapIterator: the lazy, bounded async iterator behind map() and map_unordered()."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from ._context import inside_a_job_of, job_position
from ._errors import check_job_fn
from ._map_close import abandon, cancel_again, retire, still_closing
from ._map_ends import raise_closed
from ._map_reader import close_unread, is_async_iterator
from ._map_run import results
from ._map_state import MapJobs
from ._notes import safe_repr
from ._policy import JobKind
from ._retry import INHERIT, Inherit, resolve_retry
from ._startup import check_loop
from ._typing import Self, final

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["MapIterator", "MapJobs", "close_maps"]

T = TypeVar("T")

_get_ident = threading.get_ident


@final
class MapIterator(Generic[T], AsyncIterator[T]):
    """Results of ``CoroutineExecutor.map()`` (input order) or ``map_unordered()``.

    Jobs start as results are consumed: at most ``buffersize`` are started ahead of the
    consumer (plus up to as many pausing between attempts), so the input is read lazily
    and memory stays bounded. Use it with ``async for``. A map is closed (its in-flight
    jobs cancelled, no more input read) when it is dropped, by ``aclose()`` (which
    ``async with`` and ``contextlib.aclosing`` call), when its consumer is cancelled
    while it waits in it, and at the latest when the executor's block exits,
    ``shutdown()`` begins, or the executor cancels its jobs on its own (fail-fast, the
    deadline), block or not.

    One consumer at a time: ``__anext__()`` while another call of it is still waiting
    raises ``RuntimeError``; so does every ``__anext__()`` or ``aclose()`` from another
    loop than the executor's, leaving the map as it was. ``aclose()`` from another task
    ends a waiting consumer's iteration (``StopAsyncIteration``); a map the executor
    closed raises ``RuntimeError`` from ``__anext__()`` instead (a waiting consumer's
    call included), since its inputs were not all processed, or, if a job's error
    stopped the executor (fail-fast: a ``submit()`` job, or a job of another map without
    ``return_exceptions``), that error, with ``return_exceptions`` too. A map closed as
    its consumer was cancelled waiting in it (an outer timeout around ``__anext__()``)
    was cut short too: that call raises its CancelledError (or the timeout's
    TimeoutError), every later one RuntimeError saying so (or that fail-fast error), not
    StopAsyncIteration, which only a map ``aclose()`` closed, or one run to its end,
    raises. A map that its own job's error ended is not cut short: it yields the results
    ready before that error, then raises it.
    """

    # One Python call per result: __anext__ checks the thread, then calls the generator's
    # own bound __anext__ (in ``_anext``), whose frame keeps the map's state in locals.
    __slots__ = ("__weakref__", "_anext", "_exe", "_jobs", "_results", "_thread")

    def __init__(
        self,
        executor: Core,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
        buffersize: int | None,
        *,
        ordered: bool,
        return_exceptions: bool,
        retry: object = INHERIT,
    ) -> None:
        where = "map" if ordered else "map_unordered"
        check_job_fn(fn, where)  # once per map: an async generator function is refused too
        if not iterables:
            raise TypeError(f"{where}() must have at least one iterable")
        follows = buffersize is None  # the window follows the executor's limit
        if buffersize is None:
            buffersize = executor._slots.limit
        elif isinstance(buffersize, bool) or not isinstance(buffersize, int):
            raise TypeError(f"buffersize must be an int or None (got {buffersize!r})")
        elif buffersize < 1:
            raise ValueError(f"buffersize must be greater than 0 (got {buffersize!r})")
        self._exe = executor
        # Inputs: one zip when all are sync, else each pulled in turn by the reader task.
        feed: Iterator[tuple[Any, ...]] | None = None
        sources: tuple[Iterator[Any] | AsyncIterator[Any], ...] = ()
        if all(not isinstance(it, AsyncIterable) for it in iterables):
            feed = zip(*iterables)
        else:
            sources = tuple(_source(it, where, i) for i, it in enumerate(iterables))
        # Job callbacks, the executor and the generator reach only this small object and
        # never the iterator itself, so a map left by `break` is collected at once (and
        # its generator, closed as it goes, cancels its jobs) while jobs still run.
        kind = JobKind.RESULT if return_exceptions else JobKind.POLICY
        policy = retry if isinstance(retry, Inherit) else resolve_retry(retry)
        # Its jobs run in copies of the caller's context as it is now, marked as a job's.
        context = contextvars.copy_context()
        context.run(job_position.set, executor)
        self._jobs = jobs = MapJobs(
            fn, buffersize, ordered=ordered, kind=kind, sources=sources, policy=policy,
            outcomes=executor._outcomes, context=context, follows=follows,
        )
        self._results = results(executor, jobs, feed)
        jobs.owner = weakref.ref(self)  # for close_maps()
        jobs.in_job = inside_a_job_of(executor)  # a job reads it: see close_maps
        self._anext: Callable[[], Awaitable[Any]] = self._results.__anext__
        self._thread = 0  # the thread its last __anext__() came from (0: none yet)
        executor._maps.add(jobs)
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
        jobs = self._jobs
        if jobs.closed:
            return f"<MapIterator {jobs.where} closed>"
        buffered = len(jobs.pending) + len(jobs.in_flight) + len(jobs.finished)
        return f"<MapIterator {jobs.where} {buffered}/{jobs.window} buffered>"

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[T]:
        # Every call is checked, as submit() is: a call from another thread's loop would
        # run the generator there (results lost under asyncio's debug mode, jobs started
        # on that loop without it). The thread ident is compared, not the running loop,
        # which on CPython 3.11 costs a getpid() system call a result: only a call from
        # a new thread looks the loop up (check_loop). The executor's loop running on
        # this thread is the only loop running on it, so the same thread means the same
        # loop, unless that loop has stopped (see _loop_finished).
        if _get_ident() != self._thread:
            check_loop(self._exe)  # before the generator runs: a refusal leaves it intact
            self._thread = _get_ident()
        return self._anext()

    if not TYPE_CHECKING:  # hidden from type checkers, which then still flag a plain `for`

        def __iter__(self) -> Iterator[T]:
            """A plain ``for`` (or ``list()``): refused with the way out, not only the
            stock "object is not iterable"."""
            raise TypeError(
                f"{type(self).__name__!r} object is not iterable: use 'async for'"
                f" (in async code), or LoopExecutor.map() from sync code"
            )

    async def aclose(self) -> None:
        """Stop: cancel the jobs in flight, stop reading the inputs (the reading task closes
        the async ones), and wait until all of that has finished. A later call, or one
        after the map was closed otherwise, waits for the same (not in a job of the
        map's own, or its input: it would wait for itself).

        Cancellation: cancelled while it waits (an outer timeout), it cancels the jobs and
        the reading task again, so an input's clean-up that waits is interrupted there,
        and raises CancelledError.

        Raises:
            RuntimeError: called from a loop other than the executor's (nothing is done).
        """
        check_loop(self._exe)  # before touching the map: from another loop, nothing happens
        self._abandon()
        jobs = self._jobs
        if jobs.refusal is not None:
            # No reader could be made to close the inputs (the loop's task factory
            # refused it): close them in this task instead, then raise that error.
            self._exe._unread.discard(jobs)
            refusal, jobs.refusal = jobs.refusal, None
            await close_unread(jobs, refusal)
        # Not only what this call cancelled: a map closed before (another task's aclose(),
        # its consumer cancelled, the executor) may still be cancelling its jobs and
        # closing its inputs.
        live = still_closing(jobs)
        if live:
            try:
                await asyncio.wait(live)
            except asyncio.CancelledError:
                cancel_again(self._exe, live)
                raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _abandon(self) -> None:
        """Abandon the map and, unless a consumer is inside it, close its generator now
        (it only waits at a yield then, so closing runs no await): no finaliser task is
        left."""
        abandon(self._exe, self._jobs)
        if not self._results.ag_running:  # type: ignore[attr-defined]  # missing from typeshed
            try:
                self._results.aclose().send(None)
            except StopIteration:
                pass  # closed


def close_maps(exe: Core, *, exiting: bool = False) -> None:
    """The block's exit, shutdown() and abort(): close every map still open. Its in-flight jobs
    are cancelled (the executor's own cancellations: not errors), it reads no more input,
    and its ``__anext__()`` raises RuntimeError from now on; a consumer waiting inside it
    gets that RuntimeError as it wakes. A map that its own job's error has ended keeps
    its ready results and that error for its consumer (see retire).

    ``exiting``: the block's exit, which leaves open the maps made inside the executor's
    jobs: the exit waits for those jobs, which read them (it closes only the maps whose
    results nobody would read); they close as their job drops them or ends."""
    for jobs in list(exe._maps):
        if exiting and jobs.in_job:
            continue
        if jobs.failed is not None:
            retire(exe, jobs)
            continue
        jobs.shut = True
        it = jobs.owner() if jobs.owner is not None else None
        if it is None:  # dropped while a consumer waits inside it: wake that consumer
            abandon(exe, jobs)
            continue
        it._anext = functools.partial(_refused, exe)
        it._abandon()


def _source(iterable: Iterable[Any] | AsyncIterable[Any], where: str, index: int) -> Any:
    """The iterator of one input of a map with async inputs: ``__aiter__()`` of an async
    one, which must have ``__anext__()``, as ``async for`` and aiter() require. Else it
    is a TypeError at the map's call, as aiter() raises: not an AttributeError at the
    first read, nor a sync iterator returned there and read as a sync input. A sync
    input gets iter(), which checks what ``__iter__()`` returns itself."""
    if not isinstance(iterable, AsyncIterable):
        return iter(iterable)
    source = iterable.__aiter__()
    if not is_async_iterator(source):
        if inspect.iscoroutine(source):
            source.close()  # an ``async def __aiter__``: no "never awaited" warning
        raise TypeError(
            f"__aiter__() of {where}() input {index} ({type(iterable).__name__}) must return"
            f" an async iterator (got {safe_repr(source)})"
        )
    return source


async def _refused(exe: Core) -> Any:
    check_loop(exe)
    raise_closed(exe)
