"""The reader task of a map's async inputs: it reads them in one task (so an input may
hold a task-bound context across its yields), passes on a cancel that an input's own
context sent, and closes them however the reading ends."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ._errors import not_a_task
from ._map_pass_on import GO_ON, hold_back, pass_on
from ._map_state import EXHAUSTED, MapJobs
from ._notes import safe_repr
from ._policy import loop_going_down
from ._typing import TypeGuard

if TYPE_CHECKING:
    from ._core import Core

__all__ = [
    "INTERRUPTS", "cancel_readers", "close_unread", "close_unread_maps", "drop_reader",
    "is_async_iterator", "open_reader", "read_inputs", "report_closing", "start_reader",
]


# Errors that always propagate, never reported in their place: a reader refused by one
# of them still has the inputs closed first (see close_unread), and neither a clean-up
# error nor a cancel takes its place.
INTERRUPTS = (KeyboardInterrupt, SystemExit)
_FINAL = (asyncio.CancelledError, *INTERRUPTS)  # what no other end of the reading replaces


def is_async_iterator(source: object) -> TypeGuard[AsyncIterator[Any]]:
    """Whether an input's iterator is read as async: it has ``__anext__()``, all that
    ``async for`` and aiter() ask of what ``__aiter__()`` returns (not ``__aiter__()``
    too, which isinstance() of AsyncIterator would)."""
    return hasattr(type(source), "__anext__")


def start_reader(exe: Core, jobs: MapJobs) -> asyncio.Task[Any]:
    """Start the map's reader task (read_inputs) on the executor's loop, handing it the
    inputs: the map lets go of them first, since under an eager task factory the reader
    runs before ``jobs.reader`` is set, and an input that closes the map there must not
    have abandon() start another reader to close it.

    If the task cannot be made (a closed loop, a task factory that raises) the error
    propagates; a task factory that makes no task (None, a plain Future: see not_a_task)
    gets the TypeError start_job gives a job, as nothing would run the reader and the
    map's consumer would wait for it for ever. Either way the coroutine is closed (no
    "never awaited" warning) and the inputs go to ``jobs.unread``, not back to
    ``jobs.sources``: abandon() would ask the same loop for a reader to close them,
    raising a second error in place of this one. A caller that can await closes them
    itself, in its own task: the map's first read (open_reader), its aclose() (see
    close_unread), else the block's exit or shutdown() (see close_unread_maps)."""
    sources, jobs.sources = jobs.sources, ()
    coro = read_inputs(jobs, sources)
    try:
        reader = exe._loop.create_task(coro)
    except BaseException:
        coro.close()
        jobs.unread, sources = sources, ()  # (the error's traceback keeps this frame)
        raise
    if type(reader) is not asyncio.Task and not isinstance(reader, asyncio.Task):
        coro.close()
        jobs.unread, sources = sources, ()
        raise not_a_task(reader)
    jobs.reader = reader
    return reader


async def open_reader(exe: Core, jobs: MapJobs) -> asyncio.Task[Any]:
    """start_reader() for the map's first read, in its consumer's task. If no reader can
    be made, the inputs are closed here before the error is raised (see close_unread):
    an input the caller began to read before the map got it has its ``finally`` run
    now, not in asyncio's finaliser after the map has ended. So too for a
    KeyboardInterrupt or SystemExit, which then propagates."""
    try:
        return start_reader(exe, jobs)
    except BaseException as exc:
        refusal = exc
    # Closed outside the except clause: see read_inputs.
    await close_unread(jobs, refusal)


async def close_unread(jobs: MapJobs, refusal: BaseException) -> NoReturn:
    """No reader task could be made for the map (start_reader raised ``refusal``): close
    its async inputs (``jobs.unread``) in the calling task, as the reader would have
    (see _close_inputs), then raise ``refusal``, as a map whose reading ends does.

    The map's first read (the map still open): a clean-up error is raised in its place,
    with it as its ``__context__``, as after an input's error. The map's aclose() (the
    map closed; the refusal met as abandon() asked for a reader to close them): a
    clean-up error goes to the loop's exception handler, and aclose() raises
    ``refusal``. A KeyboardInterrupt or SystemExit is raised either way, the clean-up
    errors reported. Cancelled meanwhile, the rest are closed all the same, and
    CancelledError is raised (an interrupt still is, in its place): ``refusal``, which
    nobody receives then, goes to the loop's exception handler."""
    sources, jobs.unread = jobs.unread, ()
    loop = asyncio.get_running_loop()
    # Who raises the refusal: _close_inputs, as the reading's end (which it reports if
    # a cancel takes its place), or this function after it.
    ending = refusal if not jobs.closed or isinstance(refusal, INTERRUPTS) else None
    try:
        try:
            await _close_inputs(jobs, loop, sources, ending)
        except asyncio.CancelledError:
            if ending is None:
                report_closing(loop, refusal)
            raise
        raise refusal
    finally:
        del refusal, sources, ending  # no cycle through this frame


async def close_unread_maps(exe: Core) -> None:
    """The block's exit and shutdown(): close, in the calling task, the inputs of the maps
    closed with no reader to close them (see _stop_reading: the loop's task factory
    refused it), as aclose() of the map would have. Nobody is left to receive the
    factory's error: it goes to the loop's exception handler, as a clean-up error of a
    closed map does (see _close_inputs). But a KeyboardInterrupt or SystemExit refusal
    propagates, once every map's inputs are closed, even if this is cancelled meanwhile.
    Cancelled meanwhile, it closes the rest of that map's inputs, then raises
    CancelledError."""
    loop = asyncio.get_running_loop()
    interrupt: BaseException | None = None
    try:
        try:
            while exe._unread:
                jobs = exe._unread.pop()
                sources, jobs.unread = jobs.unread, ()
                refusal, jobs.refusal = jobs.refusal, None
                if isinstance(refusal, INTERRUPTS):
                    if interrupt is None:
                        interrupt = refusal  # raised once all are closed
                elif refusal is not None:
                    report_closing(loop, refusal)
                refusal = None  # no cycle through this frame
                await _close_inputs(jobs, loop, sources, None)
        except asyncio.CancelledError:
            if interrupt is None:
                raise
        if interrupt is not None:
            raise interrupt
    finally:
        interrupt = None  # no cycle through this frame


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
    # (is it async, its next-item method), per input: no test per item.
    steps = [
        (True, it.__anext__) if is_async_iterator(it) else (False, cast(Iterator[Any], it).__next__)
        for it in sources
    ]
    reads = 0
    ending: BaseException | None = None  # an input's error, or the map closing us
    values: list[Any] = []  # the read under way (a cancel may cut it short)
    while True:
        cancel: asyncio.CancelledError | None = None
        try:
            while not jobs.closed:
                values = []
                while reads >= jobs.limit:
                    jobs.go = go = loop.create_future()  # resolved by the map as it frees room
                    try:
                        await go
                    finally:
                        jobs.go = None
                assert reads < jobs.limit  # never further ahead than the window
                ran_out = False
                for is_async, step in steps:
                    try:
                        values.append(await step() if is_async else step())
                    except (StopIteration, StopAsyncIteration) as stop:
                        if isinstance(stop, StopAsyncIteration) is not is_async:
                            # The other kind is the input's error, not its end:
                            # StopAsyncIteration from a sync __next__(), StopIteration
                            # from an __anext__() call. A quiet end would hide it.
                            raise
                        # The shortest input ran out: as zip(), the inputs after it were
                        # not advanced.
                        ran_out = True
                        break
                if ran_out:
                    break
                reads += 1  # (counted once made: one a cancel cut short is made again)
                if jobs.closed:
                    # The input closed the map itself while we read it (it called
                    # shutdown(), say): _stop_reading could not cancel us, its caller.
                    break
                items.append(tuple(values))
                jobs.on_read()
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
        # The inputs read before the cancel came (in a later input's read) are read
        # again as the read is made again: their items are held for it, not lost.
        hold_back(steps, values)
        try:
            outcome = await pass_on(sources, steps, cancel)
        finally:
            cancel = None  # no cycle through this frame
        if outcome is not GO_ON:
            ending = outcome
            break
    steps.clear()  # no cycle through this frame (an input's end held: see pass_on)
    # Closed outside the except clauses: a raise inside one sets the raised error's
    # __context__ to the error being handled, which would cut the chain _close_inputs
    # builds.
    try:
        await _close_inputs(jobs, loop, sources, ending)
    finally:
        ending = None  # no cycle through this frame
    return EXHAUSTED


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
    ``shutdown_asyncgens()`` reports an async generator whose ``aclose()`` failed; so
    does ``ending`` when a cancel takes its place (an input's error, a refused reader's
    error: see close_unread), and the clean-up errors after a KeyboardInterrupt or
    SystemExit ``ending``, which is raised. A KeyboardInterrupt, SystemExit or
    GeneratorExit that an input's ``aclose()`` raises propagates at once."""
    failed: list[tuple[Any, BaseException]] = []
    cut_off: BaseException | None = None  # the ending a cancel took the place of
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
            # close the rest all the same, then end cancelled (not in place of an
            # interrupt: see close_unread). The reading's own end (an input's error,
            # a refused reader's) then reaches nobody: it is reported below.
            if not isinstance(ending, _FINAL):
                cut_off, ending = ending, exc
        except BaseException as exc:  # not only Exception: a TaskGroup held across a
            failed.append((source, exc))  # yield raises BaseExceptionGroup([GeneratorExit()])
    error: BaseException | None = None
    try:
        if jobs.closed or isinstance(ending, _FINAL):
            if cut_off is not None:
                report_closing(loop, cut_off)
            if ending is not None and not isinstance(ending, _FINAL) and (
                not _asyncio_reports(loop)
            ):
                # Raised by the read the map's close cancelled (a `finally` of the
                # input's that raises), or as the input itself closed the map.
                report_closing(loop, ending)
            for source, error in failed:
                report_closing(loop, error, source)
        elif failed:
            for _, error in failed:
                if ending is not None:
                    error.__context__ = ending
                ending = error
            jobs.close_failed = True  # reported instead if the map is closed before taking it
        if ending is not None:
            raise ending
    finally:
        ending = error = cut_off = None  # no cycle through this frame
        failed.clear()


def _asyncio_reports(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether asyncio itself reports the error this reader task is about to end with:
    asyncio's end of the loop cancelled it, with every other task (see loop_going_down,
    in_asyncio_teardown), and reports each of those that ends with an error ("unhandled
    exception during asyncio.run() shutdown"), as it does a job's. Asked only for an
    error the reading ended with (not the clean-up errors of the inputs after it, which
    the task does not raise)."""
    task = asyncio.current_task(loop)
    return task is not None and loop_going_down(task)


def drop_reader(jobs: MapJobs, reader: asyncio.Task[Any]) -> None:
    """The map is closed after its reader ended, before it took the reader's outcome: an
    error the inputs' clean-up raised is reported (see _close_inputs), an input's own
    error is only marked as seen."""
    if reader.cancelled():
        return
    error = reader.exception()  # (which marks it as seen)
    if error is not None and jobs.close_failed:
        report_closing(reader.get_loop(), error)


def report_closing(
    loop: asyncio.AbstractEventLoop, error: BaseException, source: object = None
) -> None:
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
