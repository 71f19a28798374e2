"""LoopThread: the thread that runs a ThreadedLoopExecutor's event loop.

Threading model: ``start``, ``join``, ``stopped_future``, ``set_rate_threadsafe`` and
``stats_threadsafe`` may be called from any thread; ``_run`` (the thread body) and
everything of ``LoopRun`` run on the loop thread; ``after_fork_in_child`` runs in a
forked child's only thread. The lock, the slots and the hand-off it drains are the
HandOff's (``_handoff``), which this thread owns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Optional

from .._executor import CoroutineExecutor
from .._stats import ExecutorStats
from . import _closing, _process
from ._first_task import cannot_run, close_loop, first_task
from ._future_locks import SIGNAL_CHECK_SECONDS
from ._handoff import HandOff
from ._lifecycle import EXIT_MESSAGE
from ._loop_run import LoopRun
from ._options import CoreOptions, ExitReport, ShutdownRequest
from ._runner import LoopFactory, Runner

__all__ = ["KEEP", "LoopThread"]

KEEP: Any = object()  # set_rate_threadsafe: leave this one as it is


class LoopThread:
    """The event loop thread behind one ThreadedLoopExecutor. Holds no reference to it."""

    def __init__(
        self,
        name: str,
        *,
        core: CoreOptions,
        max_threads: int,
        loop_factory: Optional[LoopFactory],
        initializer: Optional[Callable[..., object]],
        initargs: tuple[Any, ...],
    ) -> None:
        self.name = name
        self._thread = threading.Thread(name=f"{name}_loop", target=self._run)
        self.handoff = HandOff(name, thread=self._thread, max_threads=max_threads, core=core)
        self.owner_repr = self.handoff.owner_repr
        self._loop_factory = loop_factory
        self._initializer = initializer
        self._initargs = initargs
        self._created = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._rate_lock = threading.Lock()  # the pair below and the core's copy change together
        # As the core validated them (its burst defaults to 1):
        self.max_per_second = self.handoff.scheduler.core.max_per_second  # guarded by _rate_lock
        self.burst = self.handoff.scheduler.core.burst  # guarded by _rate_lock
        # Resolved by the loop thread as its very last step, after final_stats is set.
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        # What join() waits for, set just after: no Condition (see _wait_ended).
        self._ended = False
        self._end = threading.Lock()  # held until then
        self._end.acquire()
        self.final_stats: Optional[ExecutorStats] = None

    def start(self) -> None:
        """Start the thread; return once its loop exists. Raises what loop_factory raised."""
        if not _process.register(self):
            raise RuntimeError(EXIT_MESSAGE)
        try:
            self._thread.start()
            self._created.wait()
        except BaseException:  # a KeyboardInterrupt: nobody will get this executor
            # If the thread began, its loop stops once open (a request made before is
            # kept); if not, this only records it.
            self.handoff.request_shutdown_threadsafe(ShutdownRequest())
            raise
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            self._thread.join()
            raise error

    def set_rate_threadsafe(self, rate: Any = KEEP, burst: Any = KEEP) -> None:
        """Set max_per_second and/or burst, each validated by the caller (KEEP: as is).

        Returns once the core has them, so every job submitted after this call starts
        under the new limit. The core is changed on the loop thread only.
        """
        core = self.handoff.scheduler.core
        applied: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._rate_lock:  # the pair is read and written as one step, whichever thread
            new_rate = self.max_per_second if rate is KEEP else rate
            if burst is KEEP:
                new_burst = self.burst
            elif burst is not None and new_rate is None:
                raise ValueError("burst requires max_per_second")
            else:
                new_burst = 1 if burst is None else burst
            self.max_per_second, self.burst = new_rate, new_burst
            self.handoff.set_rate(
                lambda: _apply_rate(core, new_rate, new_burst, applied),
                blocking_on_loop=new_rate is not None or core._job_timeout is not None,
            )
        self._wait_on_loop(applied)

    def stats_threadsafe(self) -> ExecutorStats:
        """Counts of every job: the core's (jobs on the loop) plus the direct ones."""
        if self.final_stats is not None:
            return self.final_stats
        handoff = self.handoff
        if handoff.is_loop_thread():
            return handoff.counts()
        result: concurrent.futures.Future[ExecutorStats] = concurrent.futures.Future()

        def count() -> None:
            handoff.scheduler.settle_released()  # slots (and keys' room) freed but batched
            result.set_result(handoff.counts())

        def count_soon() -> None:
            # Once more round the loop: a job whose future woke us may have ended in the
            # step just before this drain, and its done callbacks (which give its slot and
            # its key's room back, or batch that for a later _settle) are queued behind it.
            asyncio.get_running_loop().call_soon(count)

        if not handoff.post_if_draining(count_soon):
            return self.final_stats or handoff.counts()  # no loop jobs can move now
        self._wait_on_loop(result)
        if result.done():
            return result.result()
        return self.final_stats or handoff.counts()

    def _wait_on_loop(self, posted: concurrent.futures.Future[Any]) -> None:
        """Wait for a call posted to the loop, or for the loop's end if that comes first.

        The loop may stop before it runs the call (the batch it was in is then dropped):
        the thread's last step, after final_stats is set, ends the wait.
        """
        either: tuple[concurrent.futures.Future[Any], ...] = (posted, self.stopped)
        concurrent.futures.wait(either, return_when=concurrent.futures.FIRST_COMPLETED)

    def stop_for_exit(self) -> None:
        self.handoff.request_shutdown_threadsafe(ShutdownRequest())

    def interrupt_for_exit(self) -> Optional[str]:
        """Main thread, Ctrl-C at exit: cancel queued and running coroutine jobs.

        Returns a line saying what was cancelled (an async initializer still running
        included; None if nothing was), once the loop has applied the request. A
        blocking call already running cannot be cancelled.
        """
        report: concurrent.futures.Future[ExitReport] = concurrent.futures.Future()
        request = ShutdownRequest(cancel_queued=True, cancel_running=True, report=report)
        queued = self.handoff.request_shutdown_threadsafe(request)
        running, loop_queued, blocking, initializer = report.result()
        queued += loop_queued
        if not (running or queued or blocking or initializer):
            return None
        # The jobs a cancelled initializer held back are the queued ones: none ran.
        what = ["the initializer"] if initializer else []
        if running or not (queued or initializer):
            what.append(_count(running, "running coroutine job"))
        if queued:
            what.append(_count(queued, "queued job"))
        line = f"cancelled {' and '.join(what)} of {self.owner_repr}"
        if blocking:
            line += f"; waiting for {_count(blocking, 'running blocking call')}"
        return line

    def join(self) -> None:
        """Wait for the thread to end; a KeyboardInterrupt (Ctrl-C) may end the wait."""
        if self._thread.ident is not None and not self.handoff.is_loop_thread():
            # Wait for the thread's last step first, on a future: a KeyboardInterrupt
            # raised inside Thread.join() makes Python 3.9 to 3.12 mark the thread as
            # stopped while it still runs (the bpo-45274 repair releases its lock), so
            # every later join(), the interpreter's own at exit included, returns at once.
            self._wait_ended()
            self._thread.join()  # the thread has run its last statement: returns at once

    def _ended_now(self) -> None:
        """The thread's last step (or none will run: a forked child)."""
        self._ended = True
        if self._end.locked():
            self._end.release()

    def _wait_ended(self) -> None:
        """Until the thread's last step, which a Ctrl-C always interrupts (see
        SIGNAL_CHECK_SECONDS) with a KeyboardInterrupt. Not on a Condition (a future's
        result(), an Event): a Ctrl-C inside Condition.wait(), Python code, can leave its
        lock released, and the ``with`` around the wait then raises "cannot release
        un-acquired lock" in place of the KeyboardInterrupt. A lock's acquire() is one C
        call; one that a Ctrl-C cuts short right after it succeeds leaves the lock held,
        so ``_ended`` decides, and other waiters then see it within the check period."""
        end = self._end
        while not self._ended:
            if end.acquire(timeout=SIGNAL_CHECK_SECONDS):
                end.release()

    def stopped_future(self) -> concurrent.futures.Future[None]:
        """Resolved by the loop thread as its very last step."""
        return self.stopped

    def after_fork_in_child(self) -> None:
        _closing.after_fork_in_child(self.handoff)
        self._rate_lock = threading.Lock()  # a parent thread may have held it at the fork
        # The loop thread will never resolve this here; a new future, as a parent thread
        # may have held the old one's lock at the fork.
        self.stopped = concurrent.futures.Future()
        self.stopped.set_result(None)
        self._ended_now()

    #
    # Loop thread
    #

    def _run(self) -> None:
        """The thread body: create the loop, run it, close it, stop the workers."""
        handoff = self.handoff
        runner = None
        try:
            runner = Runner(loop_factory=self._loop_factory)
            loop = runner.get_loop()
            if not isinstance(loop, asyncio.AbstractEventLoop):
                runner = None  # nothing to close: Runner.close() needs a loop
                raise TypeError(f"loop_factory must return an event loop (got {loop!r})")
            if loop.is_closed() or loop.is_running():
                runner = None  # not ours to close: Runner.close() would cancel its tasks
                state = "closed" if loop.is_closed() else "running"
                raise ValueError(f"loop_factory must return a new event loop (got a {state} one)")
            run = LoopRun(handoff, loop)
        except BaseException as exc:
            if runner is not None:
                runner.close()
            self._start_error = exc
            _closing.close(handoff, None, None)
            self._created.set()
            self.stopped.set_result(None)
            self._ended_now()
            return
        if self._initializer is None:
            # Accept jobs before the constructor returns. Blocking jobs submitted now are
            # then dispatched by their submitters, who start the worker threads, and not
            # later by this thread; which matters at interpreter exit, when Python 3.12+
            # refuses to start threads ("can't create new thread at interpreter shutdown").
            handoff.open(loop, run.drain)
        self._created.set()
        crash: Optional[BaseException] = None
        main = run.main(self._initializer, self._initargs)
        try:
            # What runner.run(main) does off the main thread, with a check of what the
            # loop's task factory made in between (see first_task).
            loop.run_until_complete(first_task(loop, main))
        except BaseException as exc:
            if not run.started:  # (a task factory may close main before it raises)
                cannot_run(handoff, main, exc)
            else:  # a bug in this package: fail the futures, never strand
                crash = exc
        finally:
            try:
                close_loop(runner, loop)
            finally:
                try:
                    handoff.pool.stop()
                    _closing.close(handoff, crash, loop)
                    self.final_stats = handoff.counts()
                finally:
                    # Always, or join() would wait for ever.
                    if self.stopped.set_running_or_notify_cancel():
                        self.stopped.set_result(None)
                    self._ended_now()


def _apply_rate(
    core: CoroutineExecutor,
    rate: Optional[float],
    burst: int,
    applied: concurrent.futures.Future[None],
) -> None:
    """On the loop thread (or under the hand-off's lock): give the core its new rate limit."""
    try:
        core._set_rate(rate, burst)
    finally:
        applied.set_result(None)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
