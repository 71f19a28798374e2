"""Outcomes of submitted jobs sent back as their jobs end, not only with their chunk.

Submitted jobs travel in chunks, one dask task each, and a dask task returns once: the
future of a fast job waited for the slowest job of its chunk (brk15 F3). So, while a
chunk of submitted jobs runs on, its worker also sends the outcomes of the jobs that have
ended, gathered for ``STREAM_DELAY`` seconds, as one dask event (``Worker.log_event``) on
the executor's topic; the client resolves those futures as the event comes
(``Batcher.streamed_threadsafe``). The chunk's return still carries every outcome, and
the client takes each job's from whichever comes first: an event that is late or lost
(the subscription not active yet, the executor shut down) leaves that future to its
chunk, as before. A chunk whose jobs all end within ``STREAM_DELAY`` sends no event.

Threading model: ``OutcomeStream`` on the worker's loop thread (``publish``, dask's
``log_event``, hands the message to the worker's event loop); ``streamed`` on the client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import Any, Callable, Optional

from ._chunk_run import ChunkRun, name_input_at, name_inputs
from ._outcomes import Outcomes

__all__ = ["STREAM_DELAY", "OutcomeStream", "handler_of", "stream_of", "streamed", "topic_of"]

_LOGGER = logging.getLogger("coroexecutor.distributed")

# Seconds an ended job's outcome waits for others of its chunk: its future is done this
# long after its job, plus the trip through the scheduler. submit's gathering delay.
STREAM_DELAY = 0.005

# What one event carries: the chunk's map id, the positions of the jobs, their Outcomes.
Streamed = tuple[str, list[int], Outcomes]


def topic_of(exe_id: str) -> str:
    """The dask event topic of one DaskExecutor's streamed outcomes."""
    return f"coroexecutor-{exe_id}"


class OutcomeStream:
    """Sends the outcomes of one chunk of submitted jobs as its jobs end (loop thread)."""

    def __init__(
        self, run: ChunkRun, publish: Callable[[Any], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._run = run
        self._publish = publish  # the worker's log_event, for the executor's topic
        self._loop = loop
        self._ended: list[int] = []
        self._timer: Optional[asyncio.TimerHandle] = None

    def ended(self, i: int) -> None:
        """Job ``i`` has its outcome: send it within STREAM_DELAY, with those that end
        meanwhile."""
        self._ended.append(i)
        if self._timer is None:
            self._timer = self._loop.call_later(STREAM_DELAY, self._send)

    def _send(self) -> None:
        self._timer = None
        ended, self._ended = self._ended, []
        run = self._run
        if run.finished.done():  # its return, on its way, brings them all
            return
        name_inputs(run, None, ended)  # (noted now, not again at the chunk's end)
        gone = set(run.cancelled)
        errors = {k: run.errors[i] for k, i in enumerate(ended) if i in run.errors}
        cancelled = [k for k, i in enumerate(ended) if i in gone]
        outcomes = Outcomes.of(
            [run.values[i] for i in ended], errors, cancelled,
            lambda k, error: name_input_at(run, ended[k], error),  # (k: its place in ended)
        )
        try:  # (msgpack carries the event: plain strings, lists and bytes only)
            self._publish([run.spec.map_id, ended, outcomes.header, outcomes.values])
        except Exception:  # the worker is closing: the chunk's return brings them, if any
            _LOGGER.debug("could not send outcomes of submitted jobs early", exc_info=True)


def stream_of(
    run: ChunkRun, publish: Callable[[Any], None], loop: asyncio.AbstractEventLoop
) -> Optional[Callable[[int], None]]:
    """What a chunk tells as each job ends (``ChunkRun.ended``): for submitted jobs, their
    OutcomeStream; for a map's, nothing (a map's chunks come back whole, as documented)."""
    return OutcomeStream(run, publish, loop).ended if run.spec.fn is None else None


def handler_of(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """Client side: the topic's handler, calling ``method`` while its object lives. dask's
    client keeps a handler after ``unsubscribe_topic`` (a late event then finds it): a
    shared client would keep each closed executor's batcher alive."""
    return functools.partial(_call_if_alive, weakref.WeakMethod(method))


def _call_if_alive(method: weakref.WeakMethod[Callable[[Any], None]], event: Any) -> None:
    bound = method()
    if bound is not None:
        bound(event)


def streamed(event: tuple[float, Any]) -> Streamed:
    """Client side: what an event of ``OutcomeStream`` carries (``(timestamp, msg)``)."""
    map_id, positions, header, values = event[1]
    return map_id, list(positions), Outcomes(header, values)
