"""The error policy: the one decider that turns a finished job into counts and a verdict,
and the record of why the executor stopped (its first error)."""

from __future__ import annotations

import asyncio
import asyncio.runners
import enum
import functools
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from ._chains import Left, left_by, reraise_job_error
from ._following import QueuedFuture
from ._stats import ExecutorStats
from ._validate import is_async_callable, plain_answer

if TYPE_CHECKING:
    from ._slots import Slots

__all__ = [
    "Cause", "JobKind", "Outcomes", "cancelling", "error_of", "in_asyncio_teardown",
    "loop_going_down", "retrieve",
]

_CancelledError = asyncio.CancelledError
_all_tasks = asyncio.all_tasks
_COUNTS_CANCELS = hasattr(asyncio.Task, "cancelling")  # Python 3.11+


class Cause(enum.Enum):
    """Why the executor started cancelling its jobs: decides what the block raises."""

    JOB_ERROR = "a job failed"
    DEADLINE = "the deadline passed"
    BODY = "the block raised or was cancelled"
    SHUTDOWN = "shutdown() cancelled the jobs"
    LOOP_END = "the loop is going down: asyncio cancelled every task on it"
    INTERRUPT = "a job raised KeyboardInterrupt or SystemExit, which end the event loop"


class JobKind(enum.Enum):
    """What a job's error means."""

    POLICY = "policy"  # an error goes to the error policy (fail-fast or suppress)
    RESULT = "result"  # map(return_exceptions=True): an error is the job's result


def error_of(task: asyncio.Future[Any]) -> BaseException | None:
    """The error a done job's task ended with (its CancelledError if cancelled).

    A cancelled task gives out its own CancelledError once, and the message ``cancel()``
    carried lives only in that error: taken here (a done callback, before anyone awaits
    the task), it would leave whoever awaits the task a CancelledError with no message.
    So the message is left in the task, where asyncio makes the later ones from."""
    try:
        return task.exception()
    except _CancelledError as exc:
        if exc.args and getattr(task, "_cancel_message", False) is None:
            task._cancel_message = exc.args[0]  # type: ignore[attr-defined]  # asyncio's Future and Task have it (3.9+)
        return exc


def cancelling(task: asyncio.Future[Any]) -> bool:
    """Whether ``task`` has a cancellation pending (False for a future that is no Task)."""
    count = getattr(task, "cancelling", None)
    return count is not None and count() > 0


def loop_going_down(task: asyncio.Future[Any]) -> bool:
    """Whether ``task`` (a job's, done or in its last step) was cancelled by its loop going
    down: asyncio.run() and asyncio.Runner end by cancelling every task on the loop at
    once. So when ``task`` has a cancellation pending and so has every other unfinished
    task on the loop, the cancel is that teardown's, not a job's failure: nobody is left
    to be told of it, and cancelling the other jobs again would only interrupt their
    clean-up (a ``finally: await ...``), which the teardown waits for. The scan of the
    loop's tasks happens only for a job that ends cancelled. (Python 3.11+: before, a
    task's pending cancellations cannot be counted.)

    Only when asyncio's own end of the loop is running (in_asyncio_teardown): other code
    that cancels every task can show the same picture for a turn, and its program goes
    on. There a job's cancel is a job's error, as any cancel from outside is. Without
    that check (brk20, /tmp/brk20/le2.py) it depended on which task woke first: with
    the task that cancelled everything still to take its own cancel back, fail-fast
    took the job's cancel for the loop's end and started the queued jobs (seen on 3.11);
    the other way round it dropped them (3.13)."""
    if not _COUNTS_CANCELS or not cancelling(task):
        return False
    return all(cancelling(other) for other in _all_tasks(task.get_loop())) and (
        in_asyncio_teardown()
    )


# asyncio's end of a loop: asyncio.run() and Runner.close() cancel every task and wait for
# them in this function (3.9-3.13), whose frame is then below any code the loop runs.
_TEARDOWN_CODE = getattr(getattr(asyncio.runners, "_cancel_all_tasks", None), "__code__", None)


def in_asyncio_teardown() -> bool:
    """Whether the calling code runs inside asyncio's end of the loop (see _lifecycle.tearing_down).
    A walk down the stack, done only when every task on the loop is being cancelled."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _TEARDOWN_CODE:
            return True
        frame = frame.f_back
    return False


def retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a done task's error as seen: the executor owns a failed job's error (the
    policy or suppress_task_errors acts on it), so asyncio must not log "Task exception
    was never retrieved" for it."""
    if not task.cancelled():
        task.exception()


class Outcomes:
    """Counts finished jobs and decides what each outcome means for the executor.

    :meth:`decide` is the only place a finished job becomes a verdict; the executor's
    canceller (``_abort``) acts on it and records its cause here with :meth:`stop`. The
    first cause wins, and with it the first error, which the block (or ``shutdown()``)
    raises: :meth:`policy_error`.
    """

    __slots__ = (
        "cancelled", "cause", "delivered", "failed", "first_error", "first_left", "followed",
        "hook", "loop_reports", "our_cancels", "retried", "succeeded", "suppress",
        "timeout_error", "timing_out",
    )

    def __init__(self, suppress: bool, hook: Callable[[asyncio.Future[Any]], object] | None):
        if hook is not None and is_async_callable(hook):
            raise TypeError(
                "on_job_done must be a plain callable, not an async function: it is called,"
                f" never awaited (got {hook!r}); start a task from it if it must await"
            )
        self.suppress = suppress
        self.hook = hook
        self.succeeded = 0
        self.failed = 0
        self.cancelled = 0
        self.retried = 0  # attempts that failed and were given another try (retry=)
        # The running jobs the executor has cancelled (see cancel): their cancellation is
        # not an error, and they are not cancelled again.
        self.our_cancels: set[asyncio.Future[Any]] = set()
        # Jobs whose job_timeout has cancelled them, until that attempt ends (see _jobs):
        # the executor's one cancel of each, as far as cancel() is concerned.
        self.timing_out: set[asyncio.Future[Any]] = set()
        # With a hook, the started queued jobs' tasks and their queued futures: at the
        # task's end, the hook is called with the future (see hook_when_done).
        self.followed: dict[asyncio.Future[Any], QueuedFuture] = {}
        self.cause: Cause | None = None
        self.first_error: BaseException | None = None
        self.first_left: Left | None = None  # first_error as its job left it (left_by)
        self.delivered = False  # raised by the block, or by a shutdown() that returned
        # The first error came from a job answering asyncio.run()'s final cancel, which
        # asyncio reports itself as it ends (see settle): not reported again at collection.
        self.loop_reports = False
        self.timeout_error: BaseException | None = None  # made once: every raiser shares it

    def decide(
        self,
        task: asyncio.Future[Any] | None,
        error: BaseException | None,
        kind: JobKind,
        cancelling: bool,
    ) -> bool:
        """Count a finished job; True if its error must stop the executor (fail-fast).

        ``error`` is None for success. A CancelledError from outside counts as an error
        under fail-fast, unless the executor caused it (it is ``cancelling``, or it
        cancelled this very job: :meth:`cancel`). A job of kind RESULT keeps its error as
        a result. While ``cancelling``, any other error (a job that answers our cancel
        with an error of its own) is a job error too: see :meth:`names`."""
        ours = False
        if self.our_cancels and task in self.our_cancels:
            self.our_cancels.discard(task)
            ours = True
        if error is None:
            self.succeeded += 1
            return False
        if isinstance(error, _CancelledError):
            self.cancelled += 1
        else:
            self.failed += 1
        return self.stops(error, kind, cancelling, ours=ours)

    def stops(
        self, error: BaseException, kind: JobKind, cancelling: bool, *, ours: bool
    ) -> bool:
        """The verdict of :meth:`decide` on a job's ``error``, without counting the job:
        True if it must stop the executor (fail-fast). ``ours``: the executor cancelled
        that very job itself.

        Also asked on its own, as a job's start returns, for a job that settles from a
        done callback and that an eager task factory ran to its end inside that start
        (see _settle.failed_at_start): fail-fast stops the executor then, as for an
        in-line job, and decide() counts the job from its callback a turn later, finding
        the executor cancelling (no second stop)."""
        if isinstance(error, _CancelledError) and (ours or cancelling):
            return False
        return kind is JobKind.POLICY and not self.suppress and self.names(cancelling)

    def names(self, cancelling: bool) -> bool:
        """Whether a job error (not a cancellation we caused) that comes now would be the
        first error the block or shutdown() raises, under fail-fast.

        While the executor is not cancelling its jobs, always. While it is, only when
        nothing it will raise caused that: after shutdown(wait=False), the end of a
        grace period, a cancelled shutdown() (or the loop going down), a job that
        answers our cancel with an error of its own (``except CancelledError: raise
        FlushError``) failed, and nobody would hear of it otherwise; asyncio.TaskGroup
        raises such an error too. After a job error, the deadline or the block's own
        error or cancellation, that first cause wins and a later error stays in its
        task, counted."""
        return not cancelling or self.cause is Cause.SHUTDOWN

    def cancel(self, task: asyncio.Future[Any]) -> None:
        """Cancel one job on the executor's own behalf: not an error, and once.

        Every cancel the executor sends a job comes here: a map's (its job's error, its
        close) and abort()'s. A job cancelled already is left alone, as asyncio.TaskGroup
        cancels each task once: its clean-up (a ``finally`` that awaits) runs to its end.
        Only a cancelled wait for the jobs cancels again: :meth:`cancel_again`."""
        if task.done():
            return
        job = task if type(task) is not QueuedFuture else task.task
        if job is not None:  # (None: still queued, and its cancel drops it: no error)
            if job in self.our_cancels:
                return
            self.our_cancels.add(job)  # a QueuedFuture's cancel() cancels its task at once
            if job in self.timing_out:
                # Its job_timeout's cancel is the one it gets: nothing is sent, but it is
                # ours now, and the job ends cancelled, not timed out (see _jobs).
                return
        task.cancel()

    def cancel_again(self, task: asyncio.Future[Any]) -> None:
        """Cancel a job, again if it was before: a wait for the jobs was cancelled itself
        (an outer timeout), and a clean-up that never ends must not hold it."""
        if not task.done():
            job = task if type(task) is not QueuedFuture else task.task
            if job is not None:
                self.our_cancels.add(job)
            task.cancel()

    def stop(self, cause: Cause, error: BaseException | None) -> bool:
        """Record why the executor stops; True if ``cause`` is now the cause.

        Only the first cause counts, but SHUTDOWN (shutdown() cancelled the jobs) has
        nothing to raise: the first cause after it that has one (a job's error, the
        block's own error or cancellation) takes its place, so a job error that comes
        while shutdown() cancels the jobs is raised (see :meth:`names`)."""
        if self.cause is None or (self.cause is Cause.SHUTDOWN and cause is not Cause.SHUTDOWN):
            self.cause = cause
            self.first_error = error
            self.first_left = None if error is None else left_by(error)
            return True
        return False

    def call_hook(self, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        """Run the on_job_done hook with a finished job's future (not for the task of a
        queued job: see hook_when_done); an error it raises goes to the loop's handler,
        as does the TypeError for an awaitable answer (a plain wrapper of an async
        function: a coroutine never awaited). So does any BaseException but the two that
        end the loop (a GeneratorExit, one of the user's own): caught as Exception only,
        it left as asyncio's "Exception in callback" report, without the job's future
        (brk20). KeyboardInterrupt and SystemExit come out of the loop, as from any
        callback."""
        if self.hook is None:
            return
        if self.followed:
            queued = self.followed.pop(future, None)
            if queued is not None:  # a started queued job's task: its future, done first
                queued.copy_from(future)
                future = queued
        try:
            answer = self.hook(future)
            if answer is not None:  # (most hooks return None: no call more for them)
                plain_answer(answer, "on_job_done")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            loop.call_exception_handler(
                {"message": "on_job_done hook raised", "exception": exc, "future": future}
            )

    def hook_when_done(self, future: QueuedFuture, loop: asyncio.AbstractEventLoop) -> None:
        """A queued job: the hook is called once, with the future its submitter holds. If
        the job started (see ``started``), at the end of its task, once it is counted,
        the task's outcome copied into the future first (see call_hook); else as the
        future is done (the job failed to start, or was cancelled or dropped in the
        queue)."""
        if self.hook is not None:
            future.add_done_callback(functools.partial(self._hook_unstarted, loop=loop))

    def _hook_unstarted(self, future: QueuedFuture, loop: asyncio.AbstractEventLoop) -> None:
        if future.task is None:
            self.call_hook(future, loop)

    def started(self, task: asyncio.Future[Any], future: QueuedFuture) -> None:
        """A queued job started as ``task`` (see hook_when_done)."""
        if self.hook is not None:
            self.followed[task] = future

    @property
    def unretrieved(self) -> BaseException | None:
        """A job error the policy named but no block or shutdown() has raised. Not a
        KeyboardInterrupt or SystemExit: asyncio raised it out of the loop (the job's
        task re-raises it from its step), so it reached the caller of asyncio.run()."""
        error = self.first_error
        if self.delivered or self.loop_reports or self.cause is not Cause.JOB_ERROR:
            return None
        if error is None or isinstance(error, (_CancelledError, KeyboardInterrupt, SystemExit)):
            return None
        return error

    def policy_error(
        self, make_timeout_error: Callable[[], BaseException], *, shared: bool = False
    ) -> BaseException | None:
        """The exception the error policy says the block (or shutdown()) raises, if any.

        The block gets it once (``shared`` false). Every shutdown() call that was waiting
        when it became known gets it, the same object each time (``shared`` true: the
        caller checked ``delivered`` as it began)."""
        if self.delivered and not shared:
            return None
        if self.cause is Cause.JOB_ERROR:
            self.delivered = True
            return self.first_error
        if self.cause is Cause.DEADLINE:
            self.delivered = True
            if self.timeout_error is None:
                self.timeout_error = make_timeout_error()
            return self.timeout_error
        return None

    def reraise(self, error: BaseException) -> NoReturn:
        """Raise what policy_error() returned: the first job error as its job left it (the
        deadline's TimeoutError, ours, with its chain as it is and no traceback)."""
        left = self.first_left
        if error is not self.first_error or left is None:
            left = None, error.__context__, error.__cause__, error.__suppress_context__
        reraise_job_error(error, left)

    def snapshot(self, slots: Slots) -> ExecutorStats:
        """The stats: every accepted job is queued, running or done, so ``submitted``
        needs no counter on the hot path."""
        running = slots.running
        queued = slots.queued + slots.pausing  # a job between attempts waits to run again
        done = self.succeeded + self.failed + self.cancelled
        active_keys, busiest_key = slots.key_stats()
        return ExecutorStats(
            submitted=done + running + queued,
            queued=queued,
            running=running,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            retried=self.retried,
            max_workers=slots.limit,
            active_keys=active_keys,
            busiest_key=busiest_key,
        )

    def clear(self) -> None:
        """The executor closed: a job that swallowed our cancel left its task here."""
        self.our_cancels.clear()
        self.timing_out.clear()
        self.followed.clear()
