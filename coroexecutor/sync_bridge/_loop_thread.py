"""LoopThread: the thread that runs a ThreadedLoopExecutor's event loop.

Threading model: ``start``, ``join`` and ``stopped_future`` may be called from any
thread; ``_run`` (the thread body), ``_open``, ``_main``, ``_finish``, ``_drain``,
``_break`` and ``_close`` run on the loop thread; ``after_fork_in_child`` runs in a forked
child's only thread. The lock-guarded slots and hand-off it drains are in ``_handoff``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import threading
from collections.abc import Sequence
from concurrent.futures._base import RUNNING
from typing import Any, Callable, Optional

from .._executor import CoroutineExecutor
from .._stats import ExecutorStats
from . import _process
from ._future import BridgeFuture
from ._handoff import EXIT_MESSAGE, FORK_MESSAGE, SHUTDOWN_MESSAGE, HandOff, State
from ._runner import LoopFactory, Runner
from ._scheduler import Scheduler, ShutdownRequest
from ._workers import WorkerPool, WorkItem

__all__ = ["SHUTDOWN_MESSAGE", "LoopThread"]

_STARTING, _RUNNING = State.STARTING, State.RUNNING


class LoopThread(HandOff):
    """The event loop thread behind one ThreadedLoopExecutor. Holds no reference to it."""

    def __init__(
        self,
        name: str,
        *,
        max_workers: int,
        max_threads: int,
        loop_factory: Optional[LoopFactory],
        initializer: Optional[Callable[..., object]],
        initargs: tuple[Any, ...],
        max_per_second: Optional[float],
        burst: Optional[int],
        job_timeout: Optional[float],
    ) -> None:
        self.name = name
        self.owner_repr = f"<ThreadedLoopExecutor {name}>"
        self._pool = WorkerPool(name, max_threads, self._release_from_worker, self._post_done)
        self._pool.slots = max_workers
        scheduler = Scheduler(self._pool, self._release_on_loop)
        # Constructed here, in the caller's thread, so bad options raise from our
        # constructor. The core only ever gets jobs that hold a slot, so it starts each
        # at once (its own max_workers is kept equal, and is never the limit).
        scheduler.core = CoroutineExecutor(
            max_workers,
            suppress_task_errors=True,  # one job's error fails only its own future (stdlib)
            max_per_second=max_per_second,
            burst=burst,
            job_timeout=job_timeout,
            on_job_done=scheduler.on_core_job_done,
        )
        self._scheduler = scheduler
        self._loop_factory = loop_factory
        self._initializer = initializer
        self._initargs = initargs

        super().__init__(max_workers, max_per_second is not None or job_timeout is not None)
        self.max_per_second, self.burst = scheduler.core.max_per_second, scheduler.core.burst
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # set once, before _created
        self.loop_ident: Optional[int] = None
        self._created = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._final_stats: Optional[ExecutorStats] = None
        self._stop: Optional[asyncio.Future[ShutdownRequest]] = None  # loop thread only
        self._idle: Optional[asyncio.Future[None]] = None  # loop thread only
        self._thread = threading.Thread(name=f"{name}_loop", target=self._run)

    def start(self) -> None:
        """Start the thread; return once its loop exists. Raises what loop_factory raised."""
        if not _process.register(self):
            raise RuntimeError(EXIT_MESSAGE)
        self._thread.start()
        self._created.wait()
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            self._thread.join()
            raise error

    @property
    def state(self) -> str:
        return self._state.value

    def is_loop_thread(self) -> bool:
        # The ident is the cheap test; the Thread object decides. Once the loop thread has
        # ended, a new thread may be given its ident (a later shutdown(wait=True) from it
        # would be refused), but never its Thread object.
        return (
            threading.get_ident() == self.loop_ident and threading.current_thread() is self._thread
        )

    def is_worker_thread(self) -> bool:
        return self._pool.runs_current_thread()

    def stop_for_exit(self) -> None:
        self.request_shutdown_threadsafe(ShutdownRequest(False, False, None))

    def interrupt_for_exit(self) -> Optional[str]:
        """Main thread, Ctrl-C at exit: cancel queued and running coroutine jobs.

        Returns a line saying what was cancelled (None if nothing was), once the loop
        has applied the request. A blocking call already running cannot be cancelled.
        """
        report: concurrent.futures.Future[tuple[int, int, int]] = concurrent.futures.Future()
        queued = self.request_shutdown_threadsafe(ShutdownRequest(True, True, None, report))
        running, loop_queued, blocking = report.result()
        queued += loop_queued
        if not (running or queued or blocking):
            return None
        what = [_count(running, "running coroutine job")] if running or not queued else []
        if queued:
            what.append(_count(queued, "queued job"))
        line = f"cancelled {' and '.join(what)} of {self.owner_repr}"
        if blocking:
            line += f"; waiting for {_count(blocking, 'running blocking call')}"
        return line

    def join(self) -> None:
        """Wait for the thread to end; a KeyboardInterrupt (Ctrl-C) may end the wait."""
        if self._thread.ident is not None and not self.is_loop_thread():
            # Wait for the thread's last step first, on a future: a KeyboardInterrupt
            # raised inside Thread.join() makes Python 3.9 to 3.12 mark the thread as
            # stopped while it still runs (the bpo-45274 repair releases its lock), so
            # every later join(), the interpreter's own at exit included, returns at once.
            try:
                self._stopped.result()
            except concurrent.futures.CancelledError:
                pass  # __aexit__'s asyncio wrapper was cancelled: Thread.join() waits
            self._thread.join()  # the thread has run its last statement: returns at once

    def stopped_future(self) -> concurrent.futures.Future[None]:
        """Resolved by the loop thread as its very last step."""
        return self._stopped

    #
    # Loop thread
    #

    def _run(self) -> None:
        """The thread body: create the loop, run _main, close the loop, stop the workers."""
        runner = None
        try:
            runner = Runner(loop_factory=self._loop_factory)
            loop = runner.get_loop()
            if not isinstance(loop, asyncio.AbstractEventLoop):
                runner = None  # nothing to close: Runner.close() needs a loop
                raise TypeError(f"loop_factory must return an event loop (got {loop!r})")
            self._loop = loop
            self._stop = loop.create_future()
            self._idle = loop.create_future()
        except BaseException as exc:
            if runner is not None:
                runner.close()
            self._start_error = exc
            with self._lock:
                self._state = State.CLOSED
            self._created.set()
            self._stopped.set_result(None)
            return
        self.loop_ident = threading.get_ident()
        if self._initializer is None:
            # Accept jobs before the constructor returns. Blocking jobs submitted now are
            # then dispatched by their submitters, who start the worker threads, and not
            # later by this thread; which matters at interpreter exit, when Python 3.12+
            # refuses to start threads ("can't create new thread at interpreter shutdown").
            self._open()
        self._created.set()
        crash: Optional[BaseException] = None
        try:
            runner.run(self._main())
        except BaseException as exc:  # a bug in this package: fail the futures, never strand
            crash = exc
        finally:
            try:
                runner.close()
            finally:
                try:
                    self._pool.stop()
                    self._close(crash)
                finally:
                    # Always, or join() would wait for ever.
                    if self._stopped.set_running_or_notify_cancel():
                        self._stopped.set_result(None)

    def _open(self) -> None:
        """Start accepting: the jobs held back while STARTING get their slots now."""
        with self._lock:
            if self._state is _STARTING:
                self._state = _RUNNING
            self._ready = True
            self._wake_pending = True
            self._loop.call_soon(self._drain)  # type: ignore[union-attr]
            items = self._fill_locked()
        for item in items:
            self._pool.submit(item)

    async def _main(self) -> None:
        if self._initializer is not None:
            try:
                ready = self._initializer(*self._initargs)
                if inspect.isawaitable(ready):
                    await ready
            except BaseException as exc:
                self._break(exc)
                return
            self._open()
        assert self._stop is not None
        try:
            await self._finish(await self._stop)
        finally:
            # No wake-up may target the loop once it starts closing. Otherwise:
            #   worker thread                         loop thread
            #   skips a cancelled item, posts it
            #                                         closes the loop
            #   call_soon_threadsafe -> RuntimeError("Event loop is closed")
            # What is handed off from now on is dropped by _close(): every job is done.
            with self._lock:
                self._ready = False

    async def _finish(self, request: ShutdownRequest) -> None:
        """Wait for every job (cancelling some, as requested); then stop the core."""
        idle = self._idle
        assert idle is not None
        if request.grace is not None:
            try:
                await asyncio.wait_for(asyncio.shield(idle), request.grace)
            except asyncio.TimeoutError:
                # The grace period is over: cancel whatever can be cancelled.
                self.request_shutdown_threadsafe(ShutdownRequest(True, True, None))
        await idle
        await self._scheduler.core.shutdown(wait=True)

    def _drain(self) -> None:
        """Take the whole batch from the hand-off and act on it."""
        # Usually there are only jobs to start: the other lists are swapped only if needed.
        calls: Sequence[Callable[[], object]] = ()
        done_items: Sequence[WorkItem] = ()
        tails: Sequence[WorkItem] = ()
        with self._lock:
            self._wake_pending = False
            to_loop, self._to_loop = self._to_loop, []
            if self._calls or self._done_items or self._tails:
                calls, self._calls = self._calls, []
                done_items, self._done_items = self._done_items, []
                tails, self._tails = self._tails, []
            request = self._shutdown if self._shutdown_changed else None
            self._shutdown_changed = False
        scheduler = self._scheduler
        for job in to_loop:
            scheduler.start(job)
        if request is not None:
            # Before the finished jobs below free their slots: a job that was waiting
            # when shutdown(cancel_futures=True) was called must not start after all.
            running, queued = scheduler.cancel_started(request)
            if request.report is not None:
                _report(request.report, (running, queued, self._blocking_calls()))
            stop = self._stop
            assert stop is not None
            if not stop.done():
                stop.set_result(request)
        for item in done_items:
            scheduler.on_work_done(item)
        for item in tails:
            scheduler.await_outcome(item)
        for call in calls:
            call()
        if self._stop is not None and self._stop.done() and not self._idle.done():  # type: ignore[union-attr]
            with self._lock:
                idle = self._held == 0
            if idle:
                self._idle.set_result(None)  # type: ignore[union-attr]

    def _break(self, error: BaseException) -> None:
        """The initializer raised: fail every job accepted so far, and every later one."""
        with self._lock:
            self._state = State.BROKEN
            self._broken = error
            backlog, self._backlog = self._backlog, collections.deque()
        for job in backlog:
            job[0]._try_set_exception(self._refusal(State.BROKEN, error))

    def _close(self, crash: Optional[BaseException]) -> None:
        """The loop has stopped. Nothing may be handed off any more."""
        with self._lock:
            if self._state is not State.BROKEN:
                self._state = State.CLOSED
            self._ready = False
            orphans = self._orphans_locked()
            request = self._shutdown
        if request is not None and request.report is not None:
            _report(request.report, (0, 0, 0))  # asked for after the loop's last _drain
        self._final_stats = self._stats()
        for future in orphans:  # only after a crash of this package: never strand a future
            if future.done():
                continue
            error = RuntimeError(f"{self.owner_repr} stopped unexpectedly: {crash!r}")
            error.__cause__ = crash
            future._try_set_exception(error)

    def _blocking_calls(self) -> int:
        """How many blocking calls worker threads are running now."""
        with self._lock:
            direct = sum(future._state == RUNNING for future in self._direct)
        return direct + sum(future._state == RUNNING for future in self._scheduler.jobs())

    def _orphans_locked(self) -> list[BridgeFuture[Any]]:
        futures = [job[0] for job in self._backlog] + [job[0] for job in self._to_loop]
        futures += list(self._direct) + self._scheduler.orphans()
        self._backlog.clear()
        self._to_loop.clear()
        self._direct.clear()
        self._calls.clear()
        self._done_items.clear()
        self._tails.clear()
        return futures

    #
    # Forked child
    #

    def after_fork_in_child(self) -> None:
        # Only the forking thread exists here, so a lock held by a parent thread at the
        # fork would never be released: replace the locks instead of taking them.
        self._lock = threading.Lock()
        self._state = State.FORKED
        self._ready = False
        self._pool.forget_threads()
        # The loop thread will never resolve this here; a new future, as a parent thread
        # may have held the old one's lock at the fork.
        self._stopped = concurrent.futures.Future()
        self._stopped.set_result(None)
        for future in self._orphans_locked():
            future._condition = threading.Condition()
            future._try_set_exception(RuntimeError(FORK_MESSAGE.format(name=self.owner_repr)))


def _report(
    report: concurrent.futures.Future[tuple[int, int, int]], counts: tuple[int, int, int]
) -> None:
    if not report.done():  # only the loop thread resolves it: no race with this check
        report.set_result(counts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
