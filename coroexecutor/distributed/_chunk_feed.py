"""ChunkFeed: the chunks a ProcessLoop runs on its loop thread, and the base of
ProcessLoop (``_process_loop``, which owns the thread, the loop and the executor).

The chunks' jobs are fed to the process's CoroutineExecutor as slots free up, chunk by
chunk in the order the chunks came (``_run_chunk``, ``_feed``), each in a wrapper that
carries what asyncio would not keep (``_guarded``) and, under a retry policy, the job
known to the policy (``_retrying``, ``_ask_policy``); their ends are recorded by position
(``_job_done``). A fail-fast chunk's first error cancels the map's later jobs here
(``_fail_fast``); the cancels of each map are remembered for its chunks still to come
(``_cancel``, ``_cancel_all``), and end at once those waiting in line (``_skip_cancelled``).
Loop thread only. The class holds nothing: it reads the ProcessLoop's fields, declared
below, and calls nothing of the ProcessLoop's.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import sys
from typing import Any, Callable, Optional

from .. import CoroutineExecutor
from .._errors import job_wrapper
from .._policy import error_of
from .._retry import Inherit, next_delay
from ._blocking import BlockingCalls
from ._chunk_run import RETRYING, ChunkRun, JobExit, RetryingJob, name_inputs
from ._chunk_run import is_async as _is_async
from ._stream import stream_of
from ._wire import EVERY_INDEX, ChunkSpec, Indexes, WorkerOptions

__all__ = ["ChunkFeed"]

_CANCEL_RECORDS = 1024  # maps whose cancellations a process remembers for late chunks


class ChunkFeed:
    """The chunks of ProcessLoop, its base (see the module)."""

    # Set by ProcessLoop (see there): its options, its loop, the error every job of the
    # process fails with (None: none), its events, its executor (None: no job may
    # start), the running chunks and the cancels of each map, the blocking calls' pool,
    # the chunks with jobs still to feed and the count of jobs fed (see _feed).
    _options: WorkerOptions
    _loop: asyncio.AbstractEventLoop
    _broken: Optional[BaseException]
    _ready: asyncio.Event
    _stop: asyncio.Event
    _exe: Optional[CoroutineExecutor]
    _runs: dict[str, set[ChunkRun]]
    _cancelled: collections.OrderedDict[str, list[Indexes]]
    _calls: BlockingCalls
    _line: collections.deque[ChunkRun]
    _holding: int

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
        self._line.append(run)
        try:
            self._feed()
            await run.finished
        finally:
            runs.discard(run)
            if not runs:
                del self._runs[spec.map_id]
            if run in self._line:  # skipped whole behind others (or its task cancelled)
                self._line.remove(run)
        name_inputs(run, self._broken)
        return run

    def _feed(self) -> None:
        """Feed the jobs of the chunks in line, in the order the chunks came, while fewer
        than per_worker of the process's jobs hold or wait for a slot of its executor.

        The executor starts what it is given in FIFO order, but each chunk fed its own
        jobs on its own: the jobs of the chunks behind waited in the executor's backlog
        ahead of the first chunk's later ones, and started first (brk31 F5). Fed in
        line, all of a chunk's jobs start before the next chunk's (retried ones aside:
        back from a pause, a job goes ahead of every job never started)."""
        line = self._line
        while line and self._feed_chunk(line[0]):
            line.popleft()

    def _feed_chunk(self, run: ChunkRun) -> bool:
        """Start jobs of the chunk while the process holds fewer than per_worker; whether
        every job of the chunk is fed (or reported without a start)."""
        spec, running = run.spec, run.running
        n = len(spec.calls)
        limit = self._options.per_worker
        records = self._cancelled
        fn = spec.fn
        map_is_async = fn is not None and _is_async(fn)
        failing_fast = run if spec.fail_fast else None  # (see _fail_fast)
        # (By type: INHERIT has come through a pickle, as another object of its class.)
        policy = self._options.retry if isinstance(spec.retry, Inherit) else spec.retry
        # A job that pauses between attempts holds no slot: feed one more in its place
        # (_holding counts only the others, see _ask_policy).
        while run.next < n and self._holding < limit:
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
            self._holding += 1
            future.add_done_callback(functools.partial(self._job_done, run, i))
        return self._finish_if_done(run)

    @staticmethod
    def _finish_if_done(run: ChunkRun) -> bool:
        """Whether every job of the chunk is fed; if they have all ended too, the chunk
        is finished (its _run_chunk returns)."""
        if run.next < len(run.spec.calls):
            return False
        if not run.running and not run.finished.done():
            run.finished.set_result(None)
        return True

    def _job_done(self, run: ChunkRun, i: int, future: asyncio.Future[Any]) -> None:
        del run.running[i]
        if i in run.pausing:  # (uncounted as it paused: see _ask_policy)
            run.pausing.discard(i)
        else:
            self._holding -= 1
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
        self._feed()
        self._finish_if_done(run)  # (a chunk fed whole is in line no more)

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
            self._holding -= 1  # counted no more, even once back from its pause
            # After the executor takes the slot back; not in this job's context, which
            # the jobs _feed starts would copy (and RETRYING with it).
            self._loop.call_soon(self._feed, context=contextvars.Context())
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
        self._feed()  # (the chunks in line that have no job running: none, normally)

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
            self._skip_cancelled(run, indexes)

    @staticmethod
    def _skip_cancelled(run: ChunkRun, indexes: Indexes) -> None:
        """Report cancelled the chunk's next jobs to feed that ``indexes`` cover: a chunk
        waiting in line behind others is finished at once when its map is closed, not
        once those ahead of it have fed all their jobs. (Those behind a job it does
        not cover are skipped as _feed_chunk reaches them.)"""
        start, n = run.spec.start, len(run.spec.calls)
        while run.next < n and start + run.next in indexes:
            run.cancelled.append(run.next)
            run.next += 1
        ChunkFeed._finish_if_done(run)
