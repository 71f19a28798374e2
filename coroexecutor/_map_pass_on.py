"""pass_on: a cancel that a context an async input holds open across its ``yield`` sent
the map's reader task, thrown into that input (see _map_reader.read_inputs); and the
items that input yields back then, held in input order for the reads to come (_Held)."""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

__all__ = ["GO_ON", "hold_back", "pass_on"]


GO_ON: Any = object()  # pass_on(): the input took the cancel and yielded: read on

Steps = list[tuple[bool, Callable[[], Any]]]  # read_inputs: (is it async, its next-item method)


async def pass_on(
    sources: tuple[Iterator[Any] | AsyncIterator[Any], ...],
    steps: Steps,
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
    input took it (an outside cancel: asyncio.run() ending, say); or GO_ON if the input
    caught its error and yielded an item, which it holds for the input's next read.

    An input that yielded items this way before, not read yet (the window still full
    as its context expired again), is read on too, whatever it does now: the item it
    yields now is held behind them, and its end (its return, or an error) is held
    behind them as well, not taken at once (it would lose them)."""
    try:
        for index, source in enumerate(sources):
            if not inspect.isasyncgen(source) or source.ag_running or source.ag_frame is None:
                continue  # not an async generator suspended at a yield: it holds no context
            try:
                item = await source.athrow(cancel)
            except asyncio.CancelledError:
                # Not its context's cancel, and the input has ended with it: its next
                # read raises that, not a quiet end that would drop the items to come.
                _hold_loss(steps, index)
                continue
            except (KeyboardInterrupt, SystemExit) as exc:
                return exc  # they end the reading at once, items held or not
            except BaseException as exc:  # its end (StopAsyncIteration included) or its error
                if _hold_end(steps, index, exc):
                    return GO_ON
                return None if isinstance(exc, StopAsyncIteration) else exc
            _held(steps, index).items.append(item)
            return GO_ON
        return cancel
    finally:
        # No cycle through this frame: an input that ends in athrow() keeps its frame,
        # whose f_back (Python 3.12 and later) is this one, in the traceback of ``cancel``.
        del cancel


def hold_back(steps: Steps, values: Sequence[Any]) -> None:
    """A cancel cut a read of the inputs short: ``values`` were read from the first inputs
    before it (a zip of inputs, the cancel in a later one's read). Each becomes the next
    read of its input again, ahead of anything pass_on holds for it after, so none is lost
    as the reads are made again."""
    for index, value in enumerate(values):
        _held(steps, index).items.appendleft(value)


def _hold_end(steps: Steps, index: int, end: BaseException) -> bool:
    """Whether input ``index`` holds items: then ``end`` is held behind them. (Not done
    in pass_on: a local of its frame, in ``end``'s traceback, would keep the _Held once
    read_inputs lets go of it: a cycle.)"""
    held = steps[index][1]
    if not isinstance(held, _Held):
        return False
    held.end = end
    return True


def _hold_loss(steps: Steps, index: int) -> None:
    """Input ``index`` ended with a cancel thrown in for another input's context (which
    input holds the expiring context cannot be told beforehand: they are tried in
    order). Its next read, after any items held for it, raises a RuntimeError saying
    so. (If no input takes the cancel, the reading ends with it and nothing is read.)"""
    _held(steps, index).end = RuntimeError(
        f"map input {index} was closed by the cancel of a context that a later input holds"
        " open across its yield (the cancel is thrown into the inputs in order, and only"
        " the one whose context sent it can take it): hold such a context in the first"
        " async input"
    )


def _held(steps: Steps, index: int) -> _Held:
    """The items held for input ``index``: its _Held, put in place of its step if none is."""
    held = steps[index][1]
    if not isinstance(held, _Held):
        held = _Held(steps, index)
        steps[index] = (True, held)
    return held


class _Held:
    """Input ``index``'s next reads, in place of its step until they are read (so the
    reader's loop reads on as before, with no test per item): the items it holds,
    oldest first, then its end if pass_on met it (raised), else the input's own step
    again, put back as the last item is read."""

    __slots__ = ("end", "index", "items", "step", "steps")

    def __init__(self, steps: Steps, index: int) -> None:
        self.steps, self.index, self.step = steps, index, steps[index]
        self.items: collections.deque[Any] = collections.deque()
        self.end: BaseException | None = None

    async def __call__(self) -> Any:
        if self.items:
            item = self.items.popleft()
            if not self.items and self.end is None:
                self.steps[self.index] = self.step  # read the input itself again
            return item
        end, self.end = self.end, None
        assert end is not None  # (put back with the last item otherwise)
        try:
            raise end
        finally:
            end = None  # no cycle through this frame
