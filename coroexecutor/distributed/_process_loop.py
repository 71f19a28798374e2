"""One DaskExecutor's loop thread in one worker process, and its one long-lived
CoroutineExecutor: the chunks run here (see _worker.py for how dask reaches it).

Threading model: the methods named ``..._threadsafe`` (and ``stop_and_join``) from dask's
threads; ``_counted`` (a blocking call) on the pool's threads; everything else on the loop
thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import logging
import sys
import threading
from typing import Any, Callable, Optional

from .. import CoroutineExecutor
from .._errors import job_wrapper
from .._pauses import cancelled_job
from .._policy import error_of
from .._retry import Inherit, next_delay
from . import _chunk_run
from ._blocking import BlockingCalls
from ._chunk_run import (
    RETRYING,
    ChunkRun,
    JobExit,
    RetryingJob,
    key_of_job,
    make_loop,
    name_inputs,
)
from ._chunk_run import is_async as _is_async
from ._stream import stream_of
from ._wire import EVERY_INDEX, ChunkSpec, Indexes, Outcomes, WorkerOptions

__all__ = ["ProcessLoop"]

_LOGGER = logging.getLogger("coroexecutor.distributed")
_CANCEL_RECORDS = 1024  # maps whose cancellations a process remembers for late chunks
_STOP_JOIN_SECONDS = 30.0


class ProcessLoop:
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

    async def _run_chunk(
        self, spec: ChunkSpec, first_error: concurrent.futures.Future[int],
        publish: Callable[[Any], None],
    ) -> ChunkRun:
        await self._ready.wait()
        n = len(spec.calls)
        run = ChunkRun(spec, [None] * n, {}, [], {}, self._loop.create_future(), first_error)
        if self._exe is not None:  # (None: the initializer failed, and no job runs)
            run.cancel_job = self._exe._outcomes.cancel  # (see ChunkRun.cancel)
        run.ended = stream_of(run, publish, self._loop)  # (submitted jobs only)
        runs = self._runs.setdefault(spec.map_id, set())
        runs.add(run)
        try:
            self._feed(run)
            await run.finished
        finally:
            runs.discard(run)
            if not runs:
                del self._runs[spec.map_id]
        name_inputs(run, self._broken)
        return run

    def _feed(self, run: ChunkRun) -> None:
        """Start jobs of the chunk while it has fewer than per_worker running."""
        spec, running = run.spec, run.running
        n = len(spec.calls)
        limit = self._options.per_worker
        records = self._cancelled
        fn = spec.fn
        map_is_async = fn is not None and _is_async(fn)
        failing_fast = run if spec.fail_fast else None  # (see _fail_fast)
        # (By type: INHERIT has come through a pickle, as another object of its class.)
        policy = self._options.retry if isinstance(spec.retry, Inherit) else spec.retry
        # A job that pauses between attempts holds no slot: feed one more in its place.
        while run.next < n and len(running) - len(run.pausing) < limit:
            i = run.next
            run.next += 1
            exe = self._exe
            if exe is None:  # stopping, or the initializer failed
                if self._broken is not None:
                    run.errors[i] = self._broken
                else:
                    run.cancelled.append(i)
                continue
            skipped = records.get(spec.map_id) if records else None  # may grow as we feed
            if skipped and any(spec.start + i in indexes for indexes in skipped):
                run.cancelled.append(i)
                continue
            if fn is None:
                job_fn, args, kwargs = spec.calls[i]
                is_async = _is_async(job_fn)
            else:
                job_fn, args, kwargs, is_async = fn, spec.calls[i], {}, map_is_async
            try:
                if policy is None:
                    future = exe.submit_nowait(
                        self._guarded, (is_async, failing_fast, i), job_fn, args, kwargs
                    )
                else:
                    future = exe.submit_nowait(
                        self._retrying, ((policy, run, i), is_async), job_fn, args, kwargs
                    )
            except Exception as error:  # TypeError for what is no job
                self._job_failed(run, i, error)
                continue
            running[i] = future
            future.add_done_callback(functools.partial(self._job_done, run, i))
        if not running and run.next >= n and not run.finished.done():
            run.finished.set_result(None)

    def _job_done(self, run: ChunkRun, i: int, future: asyncio.Future[Any]) -> None:
        del run.running[i]
        run.pausing.discard(i)
        run.cancelling.discard(i)
        if future.cancelled() and self._raised_cancel(run, i):
            # It raised CancelledError itself: yielded in its place, as by asyncio.gather.
            run.errors[i] = error_of(future) or asyncio.CancelledError()  # (its message)
        elif future.cancelled():
            run.cancelled.append(i)
        else:
            error = future.exception()
            if isinstance(error, JobExit):
                error = error.__cause__
            if error is None:
                run.values[i] = future.result()
            else:
                self._job_failed(run, i, error)
        if run.ended is not None:
            run.ended(i)
        self._feed(run)

    def _raised_cancel(self, run: ChunkRun, i: int) -> bool:
        """A cancelled job of a return_exceptions map that nothing here cancelled."""
        spec = run.spec
        if spec.fn is None or not spec.return_exceptions or self._stop.is_set():
            return False
        records = self._cancelled.get(spec.map_id, ())
        return not any(spec.start + i in indexes for indexes in records)

    def _job_failed(self, run: ChunkRun, i: int, error: BaseException) -> None:
        run.errors[i] = error
        if run.spec.fail_fast:  # (done already for an error that left the job's own code)
            self._fail_fast(run, i)

    def _fail_fast(self, run: ChunkRun, i: int) -> None:
        """Job ``i`` of a fail-fast chunk failed: cancel the map's later jobs here, and in the
        other processes through the chunk's task thread. Called in the job's own last step
        (_guarded, _ask_policy): the core hands its slot on there, before done callbacks."""
        if i >= run.cut_after:  # an earlier job of the chunk has cut the map already
            return
        run.cut_after = i
        spec = run.spec
        self._cancel(spec.map_id, range(spec.start + i + 1, sys.maxsize))
        if not run.first_error.done():  # the chunk's task thread tells the others
            run.first_error.set_result(spec.start + i)

    def _ask_policy(self, attempt: int, exc: BaseException) -> Optional[float]:
        """The executor's policy: the failed job's own (None: its chunk has none)."""
        job = RETRYING.get()
        if job is None:
            return None
        policy, run, i = job
        if isinstance(exc, JobExit):  # the policy is asked about what the job raised
            exc = exc.__cause__ or exc
        delay = next_delay(policy, attempt, exc)  # a bad delay's error names the policy
        if delay is None and run.spec.fail_fast:  # the job ends with exc (see _fail_fast)
            self._fail_fast(run, i)
        run.attempts[i] = attempt if delay is None else attempt + 1
        if delay is not None and i not in run.pausing:
            run.pausing.add(i)
            # After the executor takes the slot back; not in this job's context, which
            # the jobs _feed starts would copy (and RETRYING with it).
            self._loop.call_soon(self._feed, run, context=contextvars.Context())
        return delay

    # Both wrappers take (how, fn, args, kwargs): a job_timeout error names fn(*args,
    # **kwargs), not the wrapper (describe_job), and key_of_job finds the arguments.
    @job_wrapper
    async def _retrying(
        self, how: tuple[RetryingJob, bool], fn: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """An attempt of a job under a retry policy: _guarded, with the job known to
        _ask_policy (every attempt runs in the job's one task, so in its context)."""
        job, is_async = how
        RETRYING.set(job)
        return await self._guarded((is_async, None, 0), fn, args, kwargs)  # (_ask_policy cuts)

    @job_wrapper
    async def _guarded(
        self, how: tuple[bool, Optional[ChunkRun], int], fn: Callable[..., Any],
        args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> Any:
        """Run one job. asyncio lets KeyboardInterrupt and SystemExit out of a task and
        the loop: carried as a JobExit they fail their own item only, as on the bridge.
        ``how``: (fn is a coroutine function, the fail-fast chunk or None, position)."""
        is_async, failing_fast, i = how
        try:
            if is_async:
                return await fn(*args, **kwargs)
            return await self._calls.call(self._loop, fn, args, kwargs)
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            if failing_fast is not None:
                self._fail_fast(failing_fast, i)
            if isinstance(exc, Exception):
                raise
            raise JobExit(repr(exc)) from exc

    def _cancel_all(self) -> None:
        self._exe = None  # _feed starts no more jobs: it reports each one left cancelled
        for map_id in list(self._runs):
            self._cancel(map_id, EVERY_INDEX)

    def _cancel(self, map_id: str, indexes: Indexes) -> None:
        records = self._cancelled
        records.setdefault(map_id, []).append(indexes)
        records.move_to_end(map_id)
        while len(records) > _CANCEL_RECORDS:
            records.popitem(last=False)
        for run in self._runs.get(map_id, ()):
            start = run.spec.start
            for i in list(run.running):
                if start + i in indexes:
                    run.cancel(i)
