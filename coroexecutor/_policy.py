"""The error policy: turning finished jobs into decisions, and the one canceller.

The middle layer of CoroutineExecutor (admission <- error policy <- public API).
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from . import _jobs
from ._admission import Admission, Queued, job_position
from ._errors import ExecutorTimeoutError
from ._jobs import prime_point as _prime
from ._state import State

if TYPE_CHECKING:
    from ._map import MapJobs

__all__ = ["Cause", "ErrorPolicy", "reraise_job_error"]

_SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_CancelledError = asyncio.CancelledError
_current_task = asyncio.current_task
_all_tasks = asyncio.all_tasks
_set_position = job_position.set


_COUNTS_CANCELS = hasattr(asyncio.Task, "cancelling")  # Python 3.11+


def _cancelling(task: asyncio.Future[Any]) -> bool:
    """Whether ``task`` has a cancellation pending (False for a future that is no Task)."""
    try:
        return task.cancelling() > 0  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        return False


def _error_of(task: asyncio.Future[Any]) -> BaseException | None:
    """The error a done job's task ended with (its CancelledError if cancelled)."""
    try:
        return task.exception()
    except _CancelledError as exc:
        return exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    # The executor owns a failed job's error (the policy or suppress_task_errors acts on
    # it), so asyncio must not log "Task exception was never retrieved" for it.
    if not task.cancelled():
        task.exception()


def reraise_job_error(error: BaseException, tb: TracebackType | None) -> NoReturn:
    """Raise a job's exception again, its chain as the job left it.

    A ``raise`` while another exception is being handled (the body's interrupting
    CancelledError in ``__aexit__``, the cancelled map job in the map) sets the raised
    object's ``__context__`` to that exception, and ``raise ... from None`` would set its
    ``__cause__``: both would change the job's own object, which the block, shutdown()
    and every map consumer share. So put ``__context__``, ``__cause__`` and
    ``__suppress_context__`` back as it leaves, and start from the traceback the job
    ended with (``tb``), as ``Future.result()`` does, so repeated raises do not pile up
    frames. (``asyncio.TaskGroup`` avoids the same clobbering by raising a new group.)
    """
    context, cause, suppress = error.__context__, error.__cause__, error.__suppress_context__
    try:
        raise error.with_traceback(tb)
    finally:
        error.__context__ = context
        error.__cause__ = cause
        error.__suppress_context__ = suppress
        del error, context, cause  # no cycle through this frame


class Cause(enum.Enum):
    """Why the executor started cancelling its jobs: decides what the block raises."""

    JOB_ERROR = "a job failed"
    DEADLINE = "the deadline passed"
    BODY = "the block raised or was cancelled"
    SHUTDOWN = "shutdown() cancelled the jobs"


class ErrorPolicy(Admission):
    """Completion callbacks, _abort() (the only place that cancels jobs in bulk) and the
    waiting that makes sure no job outlives the executor."""

    __slots__ = (
        "_block", "_cause", "_deadline_handle", "_error_delivered", "_first_error",
        "_first_tb", "_grace_handle", "_hook", "_idle_handle", "_idle_waiters", "_in_body",
        "_maps", "_our_cancels", "_outer", "_parent", "_parent_cancel_requested", "_spared",
        "_succeeded", "_suppress", "_timeout", "_timeout_error", "_watchers",
    )

    _suppress: bool
    _hook: Callable[[asyncio.Future[Any]], object] | None
    _our_cancels: set[asyncio.Future[Any]]
    _idle_waiters: list[asyncio.Future[None]]  # shutdown() and __aexit__ may both wait
    # Where the executor was first used: the executor whose job bound it (job_position
    # then), or None outside any job. Decides who may wait for its jobs (_may_wait).
    _outer: ErrorPolicy | None
    # The task that ran _abort, which it did not cancel (a job in its last step, or a job
    # that called shutdown(wait=False)); _cancel_again cancels it if the wait for the jobs
    # is cancelled.
    _spared: asyncio.Future[Any] | None
    _grace_handle: asyncio.TimerHandle | None  # shutdown(timeout=): then cancel what still runs
    # Job task -> future to resolve when the job is settled: a map consumer waiting for the
    # job it must yield next. Resolved in the job's own last step, a turn before any done
    # callback of its task could run.
    _watchers: dict[asyncio.Future[Any], asyncio.Future[None]]
    # The jobs of every live map(), which _abort cancels with those in _running.
    _maps: set[MapJobs]
    _idle_handle: asyncio.Handle | None
    _deadline_handle: asyncio.TimerHandle | None
    _cause: Cause | None
    _first_error: BaseException | None
    _first_tb: TracebackType | None  # the traceback _first_error ended its job with
    _error_delivered: bool  # raised by the block, or by a shutdown() that returned
    _timeout_error: BaseException | None  # made once: every raiser shares it
    # Used as ``async with`` (only a fresh executor can be): the block owns the policy's
    # error and the closing, so shutdown() from any task, body or not, during the block or
    # after it, neither raises that error nor closes.
    _block: bool
    _parent: asyncio.Task[Any] | None  # the task running the async-with body
    _in_body: bool
    _parent_cancel_requested: bool
    _succeeded: int
    _timeout: float | None

    def _init_policy(
        self,
        suppress: bool,
        hook: Callable[[asyncio.Future[Any]], object] | None,
        timeout: float | None,
    ) -> None:
        self._suppress = suppress
        self._hook = hook
        self._timeout = timeout
        self._our_cancels = set()
        self._idle_waiters = []
        self._outer = None
        self._spared = None
        self._grace_handle = None
        self._watchers = {}
        self._maps = set()
        self._idle_handle = None
        self._deadline_handle = None
        self._cause = None
        self._first_error = None
        self._first_tb = None
        self._error_delivered = False
        self._timeout_error = None
        self._block = False
        self._parent = None
        self._in_body = False
        self._parent_cancel_requested = False
        self._succeeded = 0
        self._inline = hook is None and not self._wrap

    async def _run_job(
        self, coro: Coroutine[Any, Any, Any], value_job: bool, registered: bool
    ) -> Any:
        """The coroutine a job's task runs when jobs complete in-line: it settles the
        job's slot, counters and policy in the job's own last step, so no done callback
        (and no extra turn of the loop) is needed per job.

        ``registered``: the job's task is in _running under ``coro``. A map's own jobs are
        not (the map holds them, and _abort reaches them through the map)."""
        if _jobs.priming:  # only under _jobs.prime(): see JobTask
            try:
                await _prime()
            except _CancelledError as exc:
                coro.close()  # cancelled before its first step: the job never runs
                self._job_raised(coro, exc, value_job)
                raise
            except BaseException:
                coro.close()  # closed before it became a task (GeneratorExit): _start settles
                raise
        # The job's context (its task's own copy) and every task started inside the job
        # know they run in a job of ours: see _may_wait. Not before priming, which runs in
        # the submitter's context.
        _set_position(self)
        try:
            result = await coro
        except BaseException as exc:
            self._job_raised(coro, exc, value_job)
            raise
        if registered:
            try:
                del self._running[coro]
            except KeyError:
                pass  # an eager task factory ran the job to its end before _start registered it
        self._free += 1
        self._succeeded += 1
        if self._backlog:
            try:
                self._start_backlog_after_job()
            except BaseException as exc:
                self._backlog_failed(exc)
                raise
        if self._idle_waiters:
            self._check_idle()
        if self._watchers:
            self._wake_watcher(_current_task(self._loop))
        return result

    def _backlog_failed(self, exc: BaseException) -> None:
        """Starting the backlog raised in a job's last step, after the job succeeded and
        was counted. Its task ends with ``exc``, which a queued job's future takes over
        as retrieved: without this the error would reach nobody (a RecursionError once
        did so, leaving the block waiting for ever). Report it and treat it as a job
        error, so the policy decides and the block raises it."""
        self._loop.call_exception_handler(  # type: ignore[union-attr]
            {"message": "starting queued jobs raised in a job's last step", "exception": exc}
        )
        task = _current_task(self._loop)
        if task is not None:
            task.add_done_callback(_retrieve)  # reported once, here
        self._job_failed(exc)

    def _wake_watcher(self, task: asyncio.Future[Any] | None) -> None:
        wake = self._watchers.pop(task, None)  # type: ignore[arg-type]
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _job_raised(self, coro: object, exc: BaseException, value_job: bool) -> None:
        """A job run by _run_job ends with ``exc`` (its task is not done yet)."""
        task = _current_task(self._loop)
        if task is not None and not isinstance(exc, _CancelledError):
            task.add_done_callback(_retrieve)
        self._settle(coro, task, exc, value_job, in_line=True)

    def _on_job_done(self, task: asyncio.Future[Any]) -> None:
        """Done callback of a job that does not complete in-line (an on_job_done hook or
        a job_timeout)."""
        self._settle_done(task, False)

    def _on_value_job_done(self, task: asyncio.Future[Any]) -> None:
        """The same, for a map(return_exceptions=True) job."""
        self._settle_done(task, True)

    def _settle_done(self, task: asyncio.Future[Any], value_job: bool) -> None:
        # Reading the exception is also what stops asyncio logging
        # "Task exception was never retrieved" for jobs whose handle was dropped.
        self._settle(task, task, _error_of(task), value_job)
        if self._hook is not None:
            self._call_hook(task)

    def _settle(
        self,
        key: object,
        task: asyncio.Future[Any] | None,
        error: BaseException | None,
        value_job: bool,
        in_line: bool = False,
    ) -> None:
        """The one place that turns a finished job into counts and a policy decision.

        ``key`` is the job's entry in _running; ``error`` is None for success. A
        ``value_job`` (map with return_exceptions=True) keeps its error as a result.
        ``in_line``: called in the job's own last step (see _start_backlog_after_job). The
        in-line success path of _run_job does the success case of this, written out.
        """
        self._running.pop(key, None)
        self._free += 1
        ours = False
        if self._our_cancels and task in self._our_cancels:
            self._our_cancels.discard(task)
            ours = True
        if error is None:
            self._succeeded += 1
        elif isinstance(error, _CancelledError):
            self._cancelled += 1
            if not (value_job or ours or self._state is State.CANCELLING):
                self._job_failed(error)  # cancelled from outside: under fail-fast, an error
        else:
            self._failed += 1
            if not value_job:
                self._job_failed(error)
        if self._backlog:
            if in_line:
                self._start_backlog_after_job()
            else:
                self._start_backlog(task)
        if self._idle_waiters:
            self._check_idle()
        if self._watchers:
            self._wake_watcher(task)

    def _job_failed(self, exc: BaseException) -> None:
        if not self._suppress and self._state is not State.CANCELLING:
            self._abort(Cause.JOB_ERROR, exc)

    def _call_hook(self, task: asyncio.Future[Any]) -> None:
        try:
            self._hook(task)  # type: ignore[misc]
        except Exception as exc:
            self._loop.call_exception_handler(  # type: ignore[union-attr]
                {"message": "on_job_done hook raised", "exception": exc, "future": task}
            )

    def _cancel_job(self, task: asyncio.Future[Any]) -> None:
        """Cancel one job on the executor's own behalf (map left early): not an error."""
        if not task.done():
            self._our_cancels.add(task)
            task.cancel()

    def _abort(self, cause: Cause, error: BaseException | None = None) -> None:
        """Cancel every running and queued job. Idempotent; the first cause wins."""
        if self._cause is None:
            self._cause = cause
            self._first_error = error
            self._first_tb = None if error is None else error.__traceback__
        if self._state is State.CANCELLING or self._state is State.CLOSED:
            return
        self._state = State.CANCELLING
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        # A job of ours running this is either in its last step (it failed, or it
        # succeeded and a queued job it started failed: a cancel now would turn its
        # success into a cancellation) or the caller of shutdown(wait=False), which goes
        # on. Either way it is not cancelled now; _cancel_again cancels it if the wait
        # for the jobs is cancelled, so it cannot keep a cancelled block waiting.
        current = self._spared = _current_task(self._loop)
        for task in list(self._running.values()):
            if task is not current:
                task.cancel()
        for jobs in list(self._maps):
            for task in [*jobs.pending, *jobs.in_flight]:
                if not task.done() and task is not current:
                    task.cancel()
        backlog, self._backlog = self._backlog, collections.deque()
        for entry in backlog:
            if type(entry) is Queued:
                entry.future.cancel()  # _on_queued_done uncounts it
            elif not entry.done():  # type: ignore[union-attr]
                self._waiting -= 1
                entry.set_exception(  # type: ignore[union-attr]
                    RuntimeError(f"{_SHUTDOWN_MESSAGE} ({self!r} is cancelling its jobs)")
                )
        if cause in (Cause.JOB_ERROR, Cause.DEADLINE) and self._in_body:
            # Interrupt the body at its next await, as asyncio.TaskGroup does to its parent,
            # so a producer still submitting stops at once. __aexit__ undoes it.
            parent = self._parent
            if parent is not None and not parent.done() and not self._parent_cancel_requested:
                self._parent_cancel_requested = True
                parent.cancel()
        self._check_idle()

    def _check_idle(self) -> None:
        """Wake whoever waits for the executor to be idle, one turn of the loop later.

        A job that completes in-line settles its slot during its own last step, before its
        task is done and before the task's done callbacks (a queued job's future, the
        caller's own callbacks) have run. Waking the waiters from a callback scheduled now
        puts their wake-up behind those done callbacks, so nothing of a job is still
        pending once ``async with`` or ``shutdown()`` returns.
        """
        if self._idle_waiters and self._idle_handle is None and not self._busy():
            self._idle_handle = self._loop.call_soon(self._wake_idle)  # type: ignore[union-attr]

    def _wake_idle(self) -> None:
        self._idle_handle = None
        if not self._idle_waiters or self._busy():
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _busy(self) -> bool:
        """Whether a job runs or waits."""
        # A granted slot whose job has not started yet is busy too: free counts it.
        return self._max_workers != self._free or self._queued > 0 or self._waiting > 0

    def _may_wait(self) -> bool:
        """Whether the calling task may wait for our jobs: it runs in no job at all, or in
        a job of an executor we are nested in (we were first used inside a job of it).

        Anywhere else it runs inside one of our jobs (itself, a task it started, or a job
        of an executor nested in it), or in a job of an executor beside ours or above it,
        whose jobs ours may be waiting for. So a wait for jobs only ever goes down the
        nesting of executors, and no wait can be a circle that ends at the waiter.
        """
        position = job_position.get()
        if position is None:
            return True
        outer = self._outer
        while outer is not None:
            if outer is position:
                return True
            outer = outer._outer
        return False

    async def _wait_idle(self, keep_waiting: bool) -> asyncio.CancelledError | None:
        """Wait until no job runs or waits.

        Cancelled meanwhile, it cancels every job (again, if they were cancelled before:
        the task that called _abort and jobs that lost their cancel too). Then,
        with ``keep_waiting`` (the block's exit: no job may outlive the block, as in
        asyncio.TaskGroup), it waits on for the jobs to finish cancelling and returns the
        CancelledError to re-raise; without (shutdown()), it raises the CancelledError at
        once: a cancelled shutdown() never absorbs the cancel.
        """
        cancelled: asyncio.CancelledError | None = None
        self._watch_unprimed()
        while True:
            waiter: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
            self._idle_waiters.append(waiter)
            # Already idle: still wait one turn, so the done callbacks of a job that just
            # completed in-line (already scheduled) run before we return.
            self._check_idle()
            try:
                await waiter
            except asyncio.CancelledError as exc:
                if waiter in self._idle_waiters:
                    self._idle_waiters.remove(waiter)
                if self._state is State.CANCELLING:
                    # The jobs were cancelled before and some still run: a job that
                    # called shutdown(wait=False) (not cancelled then), or one whose cancel
                    # was lost (asyncio.wait_for on Python < 3.12 can swallow one). A new
                    # cancel from outside (a timeout, a second Ctrl-C) reaches them again.
                    self._cancel_again()
                else:
                    self._abort(Cause.BODY)
                if not keep_waiting:
                    raise
                cancelled = exc
                continue
            if not self._busy():
                return cancelled

    def _cancel_again(self) -> None:
        """Cancel every job still running, the one _abort spared included: a cancellation
        we cause, so not an error (the state is CANCELLING)."""
        self._spared = None
        for task in list(self._running.values()):
            if not task.done():
                task.cancel()
        for jobs in list(self._maps):
            for task in [*jobs.pending, *jobs.in_flight]:
                if not task.done():
                    task.cancel()

    def _tearing_down(self, freed_by: asyncio.Future[Any] | None) -> bool:
        """Whether the loop is going down, asked before queued jobs start: if so, cancel
        every job (not an error) and say so, so that no job starts as a new task.

        ``asyncio.run()`` ends by cancelling every task on the loop and waiting for those
        tasks only: a queued job started then (the slot of a job it cancelled, or of one
        that swallowed the cancel, coming free) is a task it never waits for, destroyed
        pending. So when the task freeing the slot has a cancellation pending, and so
        has every other unfinished task on the loop, nobody is left to want new jobs.
        Only that task (``freed_by``, else the current task) is looked at on the way to
        starting queued jobs; the scan of the loop's tasks happens only when it is being
        cancelled. (Python 3.11+: before, a
        task's pending cancellations cannot be counted.)
        """
        if not _COUNTS_CANCELS:
            return False
        loop = self._loop
        current = freed_by if freed_by is not None else _current_task(loop)
        if current is None or not _cancelling(current):
            return False
        for task in _all_tasks(loop):
            if not _cancelling(task):
                return False
        self._abort(Cause.SHUTDOWN)
        return True

    def _cancel_late(self, task: asyncio.Future[Any]) -> None:
        """A job registered after _abort ran (an eager task factory ran its first step
        inside create_task, and _abort could not see it yet): cancel it as _abort would
        have, unless it is the task _abort spared."""
        if task is not self._spared and not task.done():
            task.cancel()

    def _watch_unprimed(self) -> None:
        """Make sure every running in-line job gets settled, even one whose JobTask was
        cancelled before its first step past JobTask.cancel() (``asyncio.Task.cancel(t)``
        called on it directly): its runner never runs a line, so without this its slot
        would stay taken and the wait for idle would never end.

        Such a task ends in its first step, which is already in the loop's ready queue,
        so one callback scheduled now runs after it and settles what it finds. It is
        one handle and one pass over the jobs still running a turn later (jobs that end
        in their first step are gone by then): nothing on the hot path."""
        if self._running:
            self._loop.call_soon(self._settle_unprimed)  # type: ignore[union-attr]

    def _settle_unprimed(self) -> None:
        for coro, task in [(k, t) for k, t in self._running.items() if t.done()]:
            if coro is task:
                continue  # a job with a done callback: that callback settles it
            coro.close()  # type: ignore[attr-defined]  # it never ran: not "never awaited"
            self._settle(coro, task, _error_of(task), False)

    def _close(self) -> None:
        self._state = State.CLOSED
        self._backlog.clear()
        self._maps.clear()
        # A job that swallowed our cancel and returned normally left its task here.
        self._our_cancels.clear()
        self._spared = None
        for handle in (self._deadline_handle, self._wake_handle, self._grace_handle):
            if handle is not None:
                handle.cancel()
        # Another waiter (shutdown() and the block's exit may both wait) can have come in
        # after ours was woken: its wake-up is already scheduled and must still run.
        if self._idle_handle is not None and not self._idle_waiters:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _close_when_idle(self) -> None:
        """Close once no job runs or waits, with nobody waiting for that (shutdown() that
        did not wait, or whose wait was cancelled), unless the block will close."""
        if self._state is State.CLOSED:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
        waiter.add_done_callback(self._closed_idle)
        self._idle_waiters.append(waiter)
        self._check_idle()

    def _closed_idle(self, waiter: asyncio.Future[None]) -> None:
        if not self._in_body and self._state is not State.CLOSED and not self._busy():
            self._close()

    def _reraise(self, error: BaseException) -> NoReturn:
        """Raise what _policy_error() returned: the first job error as its job left it."""
        reraise_job_error(error, self._first_tb if error is self._first_error else None)

    def _policy_error(self, shared: bool = False) -> BaseException | None:
        """The exception the error policy says the block (or shutdown()) raises, if any.

        The block gets it once (``shared`` false). Every shutdown() call that was waiting
        when it became known gets it, the same object each time (``shared`` true: the
        caller checked ``_error_delivered`` as it began)."""
        if self._error_delivered and not shared:
            return None
        if self._cause is Cause.JOB_ERROR:
            self._error_delivered = True
            return self._first_error
        if self._cause is Cause.DEADLINE:
            self._error_delivered = True
            if self._timeout_error is None:
                self._timeout_error = ExecutorTimeoutError(
                    f"{self!r} timed out after {self._timeout} seconds"
                )
            return self._timeout_error
        return None
