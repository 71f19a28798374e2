"""One DaskExecutor's loop thread in one worker process, and its one long-lived
CoroutineExecutor: the chunks run here (see _worker.py for how dask reaches it), fed to
the executor by ProcessLoop's base, ChunkFeed (_chunk_feed.py).

Threading model: the methods named ``..._threadsafe`` (and ``stop_and_join``) from dask's
threads; ``_counted`` (a blocking call) on the pool's threads; everything else on the loop
thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
from typing import Any, Callable, Optional

from .. import CoroutineExecutor
from .._pauses import cancelled_job
from . import _chunk_run
from ._blocking import BlockingCalls
from ._chunk_feed import ChunkFeed
from ._chunk_run import ChunkRun, key_of_job, make_loop
from ._outcomes import Outcomes
from ._wire import ChunkSpec, Indexes, WorkerOptions

__all__ = ["ProcessLoop"]

_LOGGER = logging.getLogger("coroexecutor.distributed")
_STOP_JOIN_SECONDS = 30.0


class ProcessLoop(ChunkFeed):
    """The loop thread of one DaskExecutor in one worker process."""

    def __init__(self, exe_id: str, options: WorkerOptions) -> None:
        self._options = options
        # _broken: every job of this process fails with it
        self._loop, self._broken = make_loop(options.loop_factory)
        self._ready = asyncio.Event()  # loop thread; set once the executor is entered
        self._stop = asyncio.Event()  # loop thread; set by stop_and_join
        self._closed = False  # guarded by _lock: no chunk may be scheduled any more
        self._waiting: set[concurrent.futures.Future[Any]] = set()  # guarded by _lock
        self._lock = threading.Lock()
        self._exe: Optional[CoroutineExecutor] = None  # loop thread; None: no job may start
        self._runs: dict[str, set[ChunkRun]] = {}  # loop thread; map id -> its running chunks
        self._cancelled: collections.OrderedDict[str, list[Indexes]] = (
            collections.OrderedDict()  # loop thread; map id -> indexes cancelled so far
        )
        # loop thread: the chunks with jobs still to feed, in the order they came, and how
        # many jobs fed hold or wait for a slot of the executor (see ChunkFeed._feed)
        self._line: collections.deque[ChunkRun] = collections.deque()
        self._holding = 0
        name = f"coroexecutor-{exe_id[:8]}"
        self._calls = BlockingCalls(options.per_worker, name)  # the blocking callables
        self._thread = threading.Thread(target=self._main, name=f"{name}-loop", daemon=True)
        self._thread.start()

    #
    # Any thread
    #

    def run_threadsafe(
        self, spec: ChunkSpec, on_first_error: Callable[[ChunkSpec, int], None],
        publish: Callable[[Any], None],
    ) -> Outcomes:
        """A dask task thread: run the chunk on the loop, wait, encode the outcomes. A fail-fast
        chunk's first error calls ``on_first_error(spec, map index)`` at once; ``publish``
        sends the outcomes of submitted jobs back as they end (see _stream.py)."""
        first_error: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._lock:  # guards _closed: a chunk scheduled here is run by _main's drain
            if self._closed:
                raise RuntimeError("the DaskExecutor's loop in this worker process has stopped")
            future = asyncio.run_coroutine_threadsafe(
                self._run_chunk(spec, first_error, publish), self._loop)
            self._waiting.add(future)
        try:
            either: list[concurrent.futures.Future[Any]] = [future, first_error]
            concurrent.futures.wait(either, return_when="FIRST_COMPLETED")
            if first_error.done() and not future.done():
                on_first_error(spec, first_error.result())
            run: ChunkRun = future.result()
        finally:
            with self._lock:
                self._waiting.discard(future)
        # Pickled here, off the loop; an outcome that cannot go is noted as its error is.
        return Outcomes.of(run.values, run.errors, run.cancelled,
                           functools.partial(_chunk_run.name_input_at, run))

    def cancel_threadsafe(self, map_id: str, indexes: Indexes) -> None:
        with self._lock:
            if not self._closed:
                self._loop.call_soon_threadsafe(self._cancel, map_id, indexes)

    def cancel_all_threadsafe(self) -> None:
        """shutdown(cancel_futures=True): in one step, no job starts here any more and those
        running are cancelled (chunk by chunk, a freed slot started the next chunk's job)."""
        with self._lock:
            if not self._closed:
                self._loop.call_soon_threadsafe(self._cancel_all)

    def stop_and_join(self) -> None:
        """Cancel every job, wait for the chunks to report, stop the thread; then wait for
        the blocking calls that have started, as the bridge does.

        A cancelled blocking job's task ends at once, but its call runs on in the pool's
        thread: nothing can stop a thread from outside. Returning before it ends let the
        DaskExecutor close the LocalCluster it started, and the nanny killed the worker
        process under the call after 4 s (its future cancelled, the call cut part-way).
        A job whose job_timeout passed as its call ran waits for the call (see
        BlockingCalls.call), and the thread with it: said before the join, not after.
        """
        with self._lock:
            if not self._closed:
                self._loop.call_soon_threadsafe(self._stop.set)
        running = self._calls.running
        if running:
            _LOGGER.debug("waiting for %d blocking call(s) that have started", running)
        self._thread.join(_STOP_JOIN_SECONDS)
        self._calls.shutdown(wait=True)
        self._thread.join(_STOP_JOIN_SECONDS)  # (a job that waited for its call ends now)

    #
    # The loop thread
    #

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
            with self._lock:
                self._closed = True
            # Chunks scheduled before _closed was set: they see the executor gone and
            # report their jobs as cancelled, so no dask thread waits for ever.
            loop.run_until_complete(self._drain())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            # Normally nothing waits any more. If the loop died (a job raised SystemExit
            # or KeyboardInterrupt, which asyncio lets through), fail the chunks still
            # waiting rather than leave their dask threads waiting for ever.
            with self._lock:
                self._closed = True
                stranded = [f for f in self._waiting if not f.done()]
            for future in stranded:
                future.set_exception(RuntimeError(
                    "the DaskExecutor's loop in this worker process stopped before the chunk"
                    " finished (a job raised SystemExit or KeyboardInterrupt?)"
                ))
            self._calls.shutdown(wait=False)
            asyncio.set_event_loop(None)
            loop.close()

    async def _serve(self) -> None:
        if self._broken is not None:  # no loop from loop_factory: no executor either
            self._ready.set()
            await self._stop.wait()
            return
        options = self._options
        exe = CoroutineExecutor(
            options.per_worker,
            suppress_task_errors=True,  # each map decides its own fail-fast (_job_done)
            initializer=options.initializer,
            initargs=options.initargs,
            job_timeout=options.job_timeout,
            max_per_second=options.max_per_second,
            burst=options.burst,
            annotate_errors=False,  # the DaskExecutor notes a failed input itself
            retry=self._ask_policy,  # each chunk's own: see RETRYING
            key=None if options.key is None else functools.partial(key_of_job, options.key),
            max_per_key=options.max_per_key,
        )
        try:
            await exe.__aenter__()  # runs the initializer, once per process
        except Exception as error:  # the initializer failed: every job gets this error
            self._broken = error
            self._ready.set()
            await self._stop.wait()
            return
        self._exe = exe
        self._calls.cancelled = functools.partial(cancelled_job, exe)  # (see call)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            # Cancel every job, each once (ChunkRun.cancel): exe.shutdown(wait=False)
            # would cancel again those the client has cancelled already. No job starts
            # any more: _feed reports the rest of each chunk as cancelled.
            self._exe = None
            running = _chunk_run.cancel_every_job(self._runs.values())
            self._feed()  # (the chunks in line that have no job running: none, normally)
            if running:
                _LOGGER.debug("waiting for %d job(s) to end after their cancel", running)
            await exe.__aexit__(None, None, None)  # waits for them: no cleanup cut short
        await self._drain()

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let callbacks scheduled from other threads create their tasks
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
