"""pass_on: a cancel that a context an async input holds open across its ``yield`` sent
the map's reader task, thrown into that input (see _map_reader.read_inputs)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["GO_ON", "pass_on"]


GO_ON: Any = object()  # pass_on(): the input took the cancel and yielded: read on


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
    input took it (an outside cancel: asyncio.run() ending, say); or GO_ON if the input
    caught its error and yielded an item, which becomes its next read."""
    try:
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
            return GO_ON
        return cancel
    finally:
        # No cycle through this frame: an input that ends in athrow() keeps its frame,
        # whose f_back (Python 3.12 and later) is this one, in the traceback of ``cancel``.
        del cancel


def _push_back(steps: list[tuple[bool, Callable[[], Any]]], index: int, item: Any) -> None:
    """The next read of input ``index`` returns ``item`` (then reads it as before)."""
    step = steps[index]

    async def pushed_back() -> Any:
        steps[index] = step
        return item

    steps[index] = (True, pushed_back)
