"""``submit``: single jobs gathered into chunks after a short delay.

Each submitted job gets a ``concurrent.futures.Future`` at once. A flusher thread (one per
DaskExecutor, started at the first submit) sends what has gathered as one dask task once
``delay`` seconds have passed since the first of them, or at once when ``size`` have
gathered; the task's outcomes resolve the futures from dask's callback thread, or from
``settle`` (the closing thread), whichever takes the chunk first. The closing does not
rely on dask's callback thread: at interpreter exit, Python 3.12 would not start it.

While a chunk runs on, the outcomes of its jobs that have ended also come back early, as
dask events (_stream.py): each is claimed (under ``_changed``, so that one thread only
resolves a future) and resolved on the flusher thread, never on dask's event loop, which a
done-callback waiting for another future would stop. The chunk's return resolves the rest.

Every future is resolved inside ``resolving()`` (_future.py), so that a done-callback run
there which waits for another future gets a RuntimeError, not a hang: the thread it
blocks is the one that would resolve that future, or send its chunk.

Threading model: ``add_threadsafe`` and ``close_threadsafe`` from any thread; ``_flusher``
on the flusher thread; ``_on_chunk_done`` on dask's callback thread; ``settle`` on the
closing thread; ``_on_cancel`` on the thread that cancels a future; ``streamed_threadsafe``
on dask's event loop thread.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
import uuid
from typing import Any, Callable, Optional

from .._notes import add_note
from ._future import resolving, resolving_here, wait_dask
from ._outcomes import Outcomes
from ._stream import handler_of, streamed, topic_of
from ._wire import (
    EVERY_INDEX,
    ON_OWN_THREAD,
    Chunk,
    ChunkSpec,
    Indexes,
    name_chunk,
    sendable_chunk,
)

__all__ = ["Batcher", "Pending"]

_LOGGER = logging.getLogger("coroexecutor.distributed")

# One submitted job: its future, and what to call.
Pending = tuple[
    "concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]
]
# Sends one chunk; returns the dask future of its task.
Send = Callable[[Chunk, str], Any]
# Asks every worker to cancel some jobs of a chunk: (map id, positions).
CancelRemote = Callable[[str, Indexes], None]
# Cancels dask tasks: those not started yet never run.
CancelTasks = Callable[[list[Any]], None]
# Subscribes a handler to a dask event topic (Client.subscribe_topic).
Subscribe = Callable[[str, Callable[[Any], None]], None]


class _Sent:
    """A chunk sent and not resolved yet: its dask task, its jobs' futures, and the
    positions whose outcomes came back early (each resolved by whoever claimed it)."""

    __slots__ = ("claimed", "futures", "task")

    def __init__(self, task: Any, futures: list[concurrent.futures.Future[Any]]) -> None:
        self.task = task
        self.futures = futures
        self.claimed: set[int] = set()

    def unclaimed(self) -> list[concurrent.futures.Future[Any]]:
        return [f for i, f in enumerate(self.futures) if i not in self.claimed]


class Batcher:
    """Gathers submitted jobs into chunks and resolves their futures."""

    def __init__(
        self, exe_id: str, send: Send, cancel_remote: CancelRemote, cancel_tasks: CancelTasks,
        delay: float, size: int, subscribe: Subscribe,
    ) -> None:
        self._exe_id = exe_id
        self._send = send
        self._cancel_remote = cancel_remote
        self._cancel_tasks = cancel_tasks
        self._delay = delay
        self._size = size
        self._changed = threading.Condition()
        self._pending: list[Pending] = []  # guarded by _changed
        self._first_at = 0.0  # guarded by _changed: when the oldest pending job came
        self._closed = False  # guarded by _changed
        self._thread: Optional[threading.Thread] = None  # guarded by _changed
        self._in_flight: dict[str, _Sent] = {}  # guarded by _changed; by map id
        self._resolving = 0  # guarded by _changed: chunks _on_chunk_done is resolving
        # guarded by _changed: outcomes that came back early, claimed, for the flusher
        self._streamed: list[tuple[_Sent, list[tuple[int, int]], Outcomes]] = []
        subscribe(topic_of(exe_id), handler_of(self.streamed_threadsafe))  # (see _finish)

    def add_threadsafe(self, job: Pending) -> None:
        """Queue one job; raises RuntimeError once closed."""
        with self._changed:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._flusher, name=f"coroexecutor-{self._exe_id[:8]}-submit",
                    daemon=True,
                )
                self._thread.start()
            if len(self._pending) == 1 or len(self._pending) >= self._size:
                self._changed.notify()

    def close_threadsafe(self, cancel_futures: bool) -> None:
        """Stop accepting jobs; send (or with ``cancel_futures``, cancel) what has gathered,
        and end the flusher thread."""
        with self._changed:
            self._closed = True
            dropped = self._pending if cancel_futures else []
            if cancel_futures:
                self._pending = []
            thread = self._thread
            self._changed.notify()
        for future, *_ in dropped:
            _cancel_and_notify(future)
        if thread is not None and thread is not threading.current_thread():
            # (On it: a done-callback of a job whose chunk could not be sent, which shuts
            # the executor down. The flusher ends by itself once the callback returns.)
            thread.join()

    def on_flusher_thread(self) -> bool:
        """Whether this is the flusher thread, which the closing waits for (see above)."""
        with self._changed:
            return self._thread is threading.current_thread()

    def cancel_threadsafe(self) -> None:
        """Close, dropping what has gathered, and cancel every chunk in flight: the dask
        tasks not started yet, and on the workers, once a chunk, the jobs running in them.

        A chunk is taken out of ``_in_flight`` before its futures are cancelled, so their
        cancel sends nothing more (one message a job was the cost of a big batch: with
        10,000 jobs the shutdown took seconds, and the chunks finished meanwhile resolved
        the futures it had not reached yet with their results). A chunk that is back is out
        of ``_in_flight`` already, its outcomes here: they are delivered, not cancelled
        (a done-callback of its first future that shuts down cancelled the others)."""
        self.close_threadsafe(cancel_futures=True)  # (the flusher has ended: nothing more)
        with self._changed:
            sent, self._in_flight = self._in_flight, {}
        try:
            if sent:
                self._cancel_tasks([chunk.task for chunk in sent.values()])
                for map_id in sent:
                    self._cancel_remote(map_id, EVERY_INDEX)
        finally:
            # A Ctrl-C in the cancels above (dask's client.cancel waits for the scheduler):
            # out of _in_flight, nothing else would cancel these futures, pending for ever.
            for chunk in sent.values():
                for future in chunk.unclaimed():  # (those claimed came back: delivered)
                    _cancel_and_notify(future)

    def settle(self) -> None:
        """After ``close_threadsafe``: wait for the chunks sent whose futures are not all
        done (cancelled ones wait for nothing), and resolve them."""
        with self._changed:
            waiting = {map_id: chunk for map_id, chunk in self._in_flight.items()
                       if not all(future.done() for future in chunk.futures)}
        wait_dask([chunk.task for chunk in waiting.values()])  # (cancel_threadsafe: its own)
        for map_id in waiting:
            self._on_chunk_done(map_id)
        # A chunk that dask's callback thread took first may be resolving there still:
        # its futures are done before their done-callbacks have run, and shutdown(wait=
        # True) returns once those have, as a ThreadPoolExecutor's does. (Not when this is
        # such a callback, which then is not waited for: see shutdown.)
        concurrent.futures.wait([f for chunk in waiting.values() for f in chunk.futures])
        with self._changed:
            while self._resolving > resolving_here():
                self._changed.wait()

    def streamed_threadsafe(self, event: tuple[float, Any]) -> None:
        """dask's event loop thread (the handler of the executor's topic): outcomes that
        came back before their chunk, claimed here for the flusher to resolve. Ignored
        once the chunk is back or cancelled, or the batcher closed: the chunk's return
        (or its cancel) resolves them."""
        try:
            map_id, positions, outcomes = streamed(event)
        except Exception:  # not one of ours: never let dask's event handling fail
            _LOGGER.debug("could not read an event of submitted jobs", exc_info=True)
            return
        with self._changed:
            chunk = self._in_flight.get(map_id)
            if chunk is None or self._closed:
                return
            fresh = [(k, i) for k, i in enumerate(positions) if i not in chunk.claimed]
            chunk.claimed.update(i for _, i in fresh)
            self._streamed.append((chunk, fresh, outcomes))
            self._changed.notify()

    def _on_chunk_done(self, map_id: str, task: Any = None) -> None:
        """dask's callback thread, or ``settle``: the first to take the chunk resolves it
        (its futures that no early outcome claimed)."""
        with self._changed:
            chunk = self._in_flight.pop(map_id, None)
            if chunk is None:
                return
            self._resolving += 1
        try:
            _resolve(chunk)  # (its futures' done-callbacks run here)
        finally:
            with self._changed:
                self._resolving -= 1
                self._changed.notify_all()

    def _flusher(self) -> None:
        """Send each batch once it is due (``delay`` after its first job, or ``size`` jobs),
        and resolve the outcomes that came back early; once closed, send what is left and
        end, with every claimed outcome resolved (none is claimed once closed)."""
        while True:
            with self._changed:
                while not (self._closed or self._streamed or self._due()):
                    self._changed.wait(self._until_due())
                early, self._streamed = self._streamed, []
                batch: list[Pending] = []
                if self._closed or self._due():
                    batch = self._pending[: self._size]
                    self._pending = self._pending[self._size :]
                    self._first_at = time.monotonic()
                closing = self._closed and not self._pending
            for chunk, positions, outcomes in early:
                _resolve_early(chunk, positions, outcomes)
            if batch:
                self._flush(batch)
            if closing:
                return

    def _due(self) -> bool:
        """Under ``_changed``: whether the gathered jobs are to be sent now."""
        pending = self._pending
        return bool(pending) and (
            len(pending) >= self._size or time.monotonic() >= self._first_at + self._delay
        )

    def _until_due(self) -> Optional[float]:
        """Under ``_changed``: how long the flusher may wait (None: until woken)."""
        if not self._pending:
            return None
        return max(0.0, self._first_at + self._delay - time.monotonic())

    def _flush(self, batch: list[Pending]) -> None:
        """Flusher thread: send one chunk; a job cancelled meanwhile is left out, and one
        whose call cannot be pickled fails alone."""
        kept = []
        for job in batch:
            if job[0].cancelled():
                _cancel_and_notify(job[0])  # left out: no one else will notify it
            else:
                kept.append(job)
        batch = kept
        if not batch:
            return
        map_id = uuid.uuid4().hex
        spec = ChunkSpec(
            self._exe_id, map_id, 0, None, [(fn, args, kwargs) for _, fn, args, kwargs in batch],
            return_exceptions=True, fail_fast=False,  # each submitted job stands alone
        )
        futures = [job[0] for job in batch]
        try:
            chunk, unsent = sendable_chunk(spec)
        except BaseException as error:  # (the others would not pickle together either)
            _fail(futures, [error] * len(futures))
            return
        if chunk is not None:
            sent = [f for i, f in enumerate(futures) if i not in unsent] if unsent else futures
            self._send_chunk(chunk, map_id, sent)
        # A job that cannot be pickled fails alone, once the others of its chunk are in
        # flight (where a done-callback that shuts the executor down finds them).
        _fail([futures[i] for i in unsent], list(unsent.values()))

    def _send_chunk(
        self, chunk: Chunk, map_id: str, futures: list[concurrent.futures.Future[Any]]
    ) -> None:
        """Flusher thread: send a chunk and track its futures; if it cannot be sent, they
        fail with that error."""
        try:
            task = self._send(chunk, map_id)
        except BaseException as error:  # a lost client
            _fail(futures, [error] * len(futures))
            return
        with self._changed:
            self._in_flight[map_id] = _Sent(task, futures)
        for position, future in enumerate(futures):
            future.add_done_callback(functools.partial(self._on_cancel, map_id, position))
        task.add_done_callback(functools.partial(self._on_chunk_done, map_id))

    def _on_cancel(
        self, map_id: str, position: int, future: concurrent.futures.Future[Any]
    ) -> None:
        """A future cancelled by its owner while its chunk runs: reach the worker (not when
        the chunk is back, or was cancelled as a whole)."""
        if not future.cancelled():
            return
        with self._changed:
            running = map_id in self._in_flight
        if running:
            try:
                self._cancel_remote(map_id, frozenset((position,)))
            except Exception:  # the client is closing: the job ends with its worker loop
                _LOGGER.debug("could not send the cancellation of a submitted job", exc_info=True)


def _resolve(chunk: _Sent) -> None:
    """Copy the outcomes of a chunk that is done into its jobs' futures (once a chunk),
    but those claimed by an outcome that came back early (``streamed_threadsafe``)."""
    futures, task = chunk.futures, chunk.task
    try:
        status = task.status
        if status == "finished":
            values, errors, cancelled = task.result().load(passing=ON_OWN_THREAD)
        elif status == "cancelled":
            values, errors, cancelled = [], {}, list(range(len(futures)))
        else:
            error = task.exception()
            name_chunk(error, _submitted(len(futures)))
            values, errors, cancelled = [], dict.fromkeys(range(len(futures)), error), []
    except BaseException as error:  # fetching the result failed: every job gets that
        name_chunk(error, _submitted(len(futures)))
        values, errors, cancelled = [], dict.fromkeys(range(len(futures)), error), []
    jobs = [(future, i) for i, future in enumerate(futures) if i not in chunk.claimed]
    _settle(jobs, values, errors, set(cancelled))


def _resolve_early(chunk: _Sent, positions: list[tuple[int, int]], outcomes: Outcomes) -> None:
    """Flusher thread: copy outcomes that came back early (at ``k`` in ``outcomes``, of the
    job at ``i`` in the chunk, for each ``(k, i)``) into the futures claimed for them."""
    jobs = [(chunk.futures[i], k) for k, i in positions]
    try:
        values, errors, cancelled = outcomes.load(passing=ON_OWN_THREAD)
    except BaseException as error:  # (an error's class missing here): those jobs get that
        add_note(error, f"raised for {_submitted(len(jobs))}: their outcomes could not be"
                        " loaded on the client")
        values, errors, cancelled = [], {k: error for _, k in jobs}, []
    _settle(jobs, values, errors, set(cancelled))


def _settle(
    jobs: list[tuple[concurrent.futures.Future[Any], int]], values: list[Any],
    errors: dict[int, BaseException], gone: set[int],
) -> None:
    """Resolve each future with the outcome at its index."""
    with resolving():
        for future, k in jobs:
            if k in gone:
                _cancel_and_notify(future)
            elif future.set_running_or_notify_cancel():
                if k in errors:
                    future.set_exception(errors[k])
                else:
                    future.set_result(values[k])


def _fail(futures: list[concurrent.futures.Future[Any]], errors: list[BaseException]) -> None:
    """Fail the futures of jobs not sent, each with its error (not those cancelled)."""
    with resolving():
        for future, error in zip(futures, errors):
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


def _submitted(count: int) -> str:
    what = "the job submitted" if count == 1 else f"{count} jobs submitted together"
    return what + " to a DaskExecutor"


def _cancel_and_notify(future: concurrent.futures.Future[Any]) -> None:
    """Cancel a future this batcher holds and wake ``concurrent.futures.wait`` on it.

    ``Future.cancel()`` alone wakes no ``wait()``: as in the stdlib's pools, the executor
    owning the future calls ``set_running_or_notify_cancel`` (once) when it drops it.
    Its done-callbacks run here, in ``resolving()``: this thread goes on to cancel the
    others, so a callback waiting for one of them would wait for itself.
    """
    with resolving():
        future.cancel()
        future.set_running_or_notify_cancel()
