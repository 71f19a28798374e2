"""``map``: inputs read lazily in chunks, a bounded window of chunks in flight, in order.

Each chunk is one dask task with a key unique to this map (a reused key could return a
stale result). At most ``window`` chunks are in flight; the next is sent as soon as the
oldest has come back, before its results are yielded, so the workers stay busy while the
consumer reads. Outcomes of chunks that finish out of order wait in their slot.

Fail-fast: the worker whose job fails cancels the map's later jobs in every process at
once (_worker.py). Here, the first error (in input order, among the chunks back so far)
cancels every later chunk, through dask's cancel for those not yet started and through
``cancel_jobs`` on every worker for the jobs already running; the results before it are
still yielded, then the error is raised where its result would have been.

Threading model: the thread iterating the map runs everything here, except
``cancel_threadsafe``, ``detach_threadsafe`` and ``settle_threadsafe``
(DaskExecutor.shutdown, any thread); ``_lock`` guards the slots against those.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import distributed

from .._chains import stop_as_error
from .._retry import INHERIT
from ..sync_bridge._future_locks import SIGNAL_CHECK_SECONDS
from ._future import wait_dask
from ._wire import EVERY_INDEX, ON_CALLER, Chunk, ChunkSpec, Indexes, check_count, name_chunk

__all__ = ["MapResults", "MapRun", "window_of"]

Outcome = tuple[list[Any], dict[int, BaseException], list[int]]
Send = Callable[[Chunk, str], Any]  # returns the chunk's dask future
CancelRemote = Callable[[str, Indexes], None]
_CHUNKS_AHEAD = 2  # chunks in flight per worker process: one running, one queued behind it


@dataclass
class _Slot:
    start: int
    count: int
    task: Any  # the dask future; None once its outcome is here
    outcome: Optional[Outcome] = None
    taking: bool = False  # its outcome, back, is being taken in: cancel leaves it to be read
    # A chunk that could not be sent (an input that cannot be pickled): raised where its
    # results would be, once those of the chunks sent before it are out (see fill).
    error: Optional[BaseException] = None


class MapRun:
    """The client side of one ``DaskExecutor.map`` call."""

    def __init__(
        self,
        exe_id: str,
        send: Send,
        client: Any,
        cancel_remote: CancelRemote,
        fn: Callable[..., Any],
        inputs: Iterator[tuple[Any, ...]],
        chunksize: int,
        window: int,
        return_exceptions: bool,
        fail_fast: bool,
        retry: Any = INHERIT,  # the map's own retry policy, or INHERIT (the executor's)
    ) -> None:
        self.map_id = uuid.uuid4().hex
        self._retry = retry
        self._exe_id = exe_id
        self._send = send
        self._client = client
        self._cancel_remote = cancel_remote
        self._fn = fn
        self._inputs: Optional[Iterator[tuple[Any, ...]]] = inputs
        # islice() takes at most sys.maxsize, and no list holds more: a larger chunksize
        # (10**400 is a valid one) means the same.
        self._chunksize = min(chunksize, sys.maxsize)
        self._window = window
        self._return_exceptions = return_exceptions
        self._fail_fast = fail_fast
        self._lock = threading.Lock()
        self._slots: collections.deque[_Slot] = collections.deque()  # guarded by _lock
        self._next = 0  # the index of the next input to read
        self._chunks = itertools.count()
        self._closed = False  # guarded by _lock: cancelled or finished; no more chunks
        self._detached = False  # guarded by _lock: the executor shut down; no more chunks
        # guarded by _lock: jobs were cancelled from outside (shutdown); next() raises
        # CancelledError where their results would be, as the stdlib pools' maps do
        self._cancelled = False

    def start(self, end_time: Optional[float]) -> MapResults:
        """Send the first window and return the map's iterator; if sending fails, cancel
        the chunks already sent."""
        try:
            self.fill(in_place=False)
        except BaseException:
            self.cancel_threadsafe()
            raise
        return MapResults(self, end_time)

    def fill(self, *, in_place: bool = True) -> None:
        """Send chunks until the window is full or the inputs run out. A chunk that cannot
        be sent raises its TypeError from map() itself (``in_place`` false: nothing was
        read yet), else where its results would be, after those sent before it."""
        while True:
            with self._lock:
                if self._closed or self._inputs is None or len(self._slots) >= self._window:
                    return
                if self._detached:  # results() raises once the chunks in flight are read
                    return
            calls = list(itertools.islice(self._inputs, self._chunksize))
            if not calls:
                self._inputs = None
                return
            start, self._next = self._next, self._next + len(calls)
            spec = ChunkSpec(self._exe_id, self.map_id, start, self._fn, calls,
                             self._return_exceptions, self._fail_fast, self._retry)
            try:
                chunk = Chunk.of(spec, passing=ON_CALLER)  # (pickled in map() or next())
                task = self._send(chunk, f"{self.map_id}-{next(self._chunks)}")
            except Exception as error:
                if not in_place:
                    raise
                with self._lock:
                    self._inputs = None  # no input after it is read
                    self._slots.append(_Slot(start, 0, None, ([], {}, []), error=error))
                return
            with self._lock:
                self._slots.append(_Slot(start, len(calls), task))

    def results(self, end_time: Optional[float]) -> Generator[Any, None, None]:
        """The generator ``DaskExecutor.map`` returns."""
        try:
            while True:
                self.fill()
                with self._lock:
                    if not self._slots:
                        if self._cancelled:
                            raise concurrent.futures.CancelledError()
                        if self._detached and self._inputs is not None:
                            self._refuse_more()
                        return
                    head = self._slots[0]
                while head.outcome is None:
                    self._wait(end_time)
                with self._lock:
                    self._slots.popleft()
                unsent: Optional[BaseException] = head.error
                if unsent is not None:  # a chunk that could not be sent (see fill)
                    head.error = None
                    try:
                        raise unsent
                    finally:
                        unsent = None  # break the frame <-> traceback cycle
                self.fill()  # keep the workers busy while the consumer reads this chunk
                values, errors, cancelled = head.outcome
                gone = set(cancelled)
                for i in range(head.count):
                    error = errors.get(i)
                    if error is not None:
                        if not self._return_exceptions:
                            if isinstance(error, StopIteration):
                                # A blocking job's: raised here, PEP 479 would make it a
                                # RuntimeError naming no job (see stop_as_error).
                                error = stop_as_error(error)
                            try:
                                raise error
                            finally:
                                error = None  # break the frame <-> traceback cycle
                        yield error
                    elif i in gone:
                        raise concurrent.futures.CancelledError()
                    else:
                        yield values[i]
                values = errors = None  # type: ignore[assignment]  # drop what was yielded
        finally:
            self.cancel_threadsafe()

    def _refuse_more(self) -> None:
        """Shut down with inputs left: the lazy Executor.map's RuntimeError (LoopExecutor's
        and 3.14's with buffersize), unless the inputs had just run out."""
        assert self._inputs is not None
        if next(self._inputs, None) is None:
            self._inputs = None
            return
        self._inputs = None
        raise RuntimeError("cannot schedule new futures after shutdown")

    def _wait(self, end_time: Optional[float]) -> None:
        """Wait until some chunk in flight is done; take in the outcomes of all done ones.

        Chunks already done are taken in without a wait, so the deadline is checked only
        when there is something to wait for: as the stdlib's map, whose ``result(timeout)``
        returns a done future's result whatever the timeout (``inf``, ``nan``, 0 or less)."""
        with self._lock:
            if self._cancelled:  # by shutdown, from another thread
                raise concurrent.futures.CancelledError()
            waiting = [slot.task for slot in self._slots if slot.outcome is None]
        if any(task.done() for task in waiting):
            self._take_done()
            return  # results() waits again if its head is still not back
        timeout = None if end_time is None else end_time - time.monotonic()
        if timeout is not None and not timeout > 0:  # nan too, as the stdlib's map
            raise concurrent.futures.TimeoutError()
        if timeout is not None and timeout > threading.TIMEOUT_MAX:  # inf: as a lock's wait
            raise OverflowError(f"timeout too large for a wait (got {timeout!r} s left)")
        # The main thread waits in slices, so that a Ctrl-C reaches it (_closing.py).
        sliced = threading.current_thread() is threading.main_thread()
        if sliced:
            timeout = SIGNAL_CHECK_SECONDS if timeout is None else min(timeout,
                                                                        SIGNAL_CHECK_SECONDS)
        try:
            distributed.wait(waiting, timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError) as error:
            # (three classes before Python 3.11: dask raises asyncio's on 3.10)
            if sliced:
                return  # results() waits again, and raises once the deadline has passed
            raise concurrent.futures.TimeoutError() from error
        except concurrent.futures.CancelledError:
            # dask's FuturesCancelledError: shutdown(cancel_futures=True) from another
            # thread cancelled a chunk (the next round raises the stdlib's CancelledError),
            # or dask did (taken in below, as a chunk cancelled as a whole).
            pass
        self._take_done()

    def _take_done(self) -> None:
        """Take in the outcomes of the chunks done, those still in flight when they are
        stored: a slot whose ``task`` is no longer the one read here was taken out
        meanwhile (``cancel_threadsafe`` from another thread, before this one marked it
        ``taking``) or taken in by the other caller of this method (``settle_threadsafe``,
        in the closing thread). A finished chunk marked ``taking`` stays in the map: its
        results have come back, and a shutdown(cancel_futures=True) does not cancel them."""
        with self._lock:
            done = [(s, s.task) for s in self._slots if s.outcome is None and s.task.done()]
            finished = [(s, task) for s, task in done if task.status == "finished"]
            for slot, _ in finished:
                slot.taking = True
        loaded = self._gather(finished)
        if loaded is None:
            return
        first_error = sys.maxsize
        with self._lock:
            outcomes = {id(slot): outcome for (slot, _), outcome in zip(finished, loaded)}
            for slot, task in done:
                slot.taking = False
                if slot.task is not task:
                    # Taken in by the other caller, or taken out before it was marked
                    # by shutdown(cancel_futures=True) from another thread, while next()
                    # waited for this chunk: had its outcome been stored, results() would
                    # have read it as its head's, a head no longer in _slots (IndexError
                    # from popleft(), or another chunk's slot dropped). Its jobs count as
                    # cancelled, as its task was.
                    continue
                loaded_outcome = outcomes.get(id(slot))
                # (the task itself failed, or was cancelled, when nothing was loaded)
                slot.outcome = (_whole_chunk(slot, task) if loaded_outcome is None
                                else loaded_outcome.load(passing=ON_CALLER))
                slot.task = None  # releases the key: the outcome is held here now
                errors = slot.outcome[1]
                if errors and self._fail_fast:
                    first_error = min(first_error, slot.start + min(errors))
        if first_error != sys.maxsize:
            self._cut_after(first_error)

    def _gather(self, finished: list[tuple[_Slot, Any]]) -> Optional[list[Any]]:
        """The outcomes of these finished chunks, marked ``taking`` meanwhile; None if
        dask cancelled a task after its status was read (dask's FutureCancelledError:
        the next round takes it in as a chunk cancelled as a whole)."""
        try:
            return self._client.gather([task for _, task in finished]) if finished else []
        except BaseException as error:
            with self._lock:
                for slot, _ in finished:
                    slot.taking = False  # not taken in: a cancel may take it out again
            if isinstance(error, concurrent.futures.CancelledError):
                return None
            raise

    def _cut_after(self, index: int) -> None:
        """Fail-fast: cancel every job after ``index``, here and on the workers."""
        with self._lock:
            self._inputs = None
            cut = [s for s in self._slots if s.start > index]
            tasks = [s.task for s in cut if s.task is not None]
            for slot in cut:
                self._slots.remove(slot)
                slot.task = None  # out of flight: _take_done() stores no outcome for it
        if tasks:
            self._client.cancel(tasks)
        self._cancel_remote(self.map_id, range(index + 1, sys.maxsize))

    def cancel_threadsafe(self) -> None:
        """Cancel every chunk still in flight (leaving map early, shutdown, Ctrl-C).

        The outcomes already back can still be read, those being taken in too (``taking``);
        then ``next()`` raises CancelledError if any job was cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            flying = [
                s for s in self._slots
                if (s.outcome is None and not s.taking) or s.error is not None
            ]
            tasks = [s.task for s in flying if s.task is not None]
            for slot in flying:
                self._slots.remove(slot)
                slot.task = None  # out of flight: _take_done() stores no outcome for it
            self._cancelled = bool(flying) or self._inputs is not None
        self._inputs = None
        if tasks:
            self._client.cancel(tasks)
            self._cancel_remote(self.map_id, EVERY_INDEX)

    def detach_threadsafe(self) -> None:
        """shutdown(): send no more chunks, from now on (not once the submitted jobs the
        shutdown waits for first are done)."""
        with self._lock:
            self._detached = True

    def settle_threadsafe(self) -> None:
        """shutdown(wait=True): wait for the chunks in flight and keep their outcomes, so
        the map can still be read to its end once the client is gone; send no more."""
        with self._lock:
            self._detached = True
            waiting = [slot.task for slot in self._slots if slot.task is not None]
        if waiting:
            wait_dask(waiting)  # (a chunk that shutdown cancels meanwhile is left out)
            self._take_done()


def window_of(client: Any, per_worker: int, size: int, buffersize: Optional[int]) -> int:
    """How many chunks of ``size`` jobs a map keeps in flight: ``buffersize`` jobs rounded
    up to whole chunks; by default two chunks per worker process, or more when
    ``per_worker`` exceeds the chunk size."""
    # Rounded up in whole numbers: a float division raises OverflowError for a count too
    # large for a float, and 10**400 is a valid buffersize or per_worker.
    if buffersize is not None:
        return -(-check_count("buffersize", buffersize) // size)
    workers = max(1, len(client.scheduler_info().get("workers", ())))
    return workers * max(_CHUNKS_AHEAD, -(-2 * per_worker // size))


def _whole_chunk(slot: _Slot, task: Any) -> Outcome:
    """The outcome of a chunk whose task failed as a whole: that error for every job."""
    if task.status == "cancelled":
        return [], {}, list(range(slot.count))
    try:
        error = task.exception()
    except BaseException as failure:  # could not even fetch the error
        error = failure
    last = slot.start + slot.count - 1
    name_chunk(error, f"inputs {slot.start} to {last} of a DaskExecutor map"
               if slot.count > 1 else f"input {last} of a DaskExecutor map")
    return [], dict.fromkeys(range(slot.count), error), []


class MapResults(Iterator[Any]):
    """The iterator ``DaskExecutor.map`` returns: the generator, plus a close that also
    works before the first ``next()`` (a generator not yet started runs no ``finally``),
    and from garbage collection, so a dropped map does not leave its jobs running."""

    def __init__(self, run: MapRun, end_time: Optional[float]) -> None:
        self._run = run
        self._results = run.results(end_time)

    def __next__(self) -> Any:
        return next(self._results)

    def close(self) -> None:
        """Cancel what is still in flight, on the workers too."""
        self._results.close()
        self._run.cancel_threadsafe()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # the client is closed already: its tasks went with it
            pass
