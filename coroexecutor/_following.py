"""QueuedFuture: the future submit_nowait() returns for a job it had to queue."""

from __future__ import annotations

import asyncio
import enum
from typing import Any, Callable, Final, Literal, NoReturn, Union

__all__ = ["STARTING", "QueuedFuture"]

# The executor's own settling goes past the refusals below.
_set_result = asyncio.Future.set_result
_set_exception = asyncio.Future.set_exception


class _Phase(enum.Enum):
    STARTING = "the job is being started: its task is not known yet"


# ``on_drop`` of a job handed a slot, from then until its task is known (follow()). An
# identity test tells it from a drop callback, and from the cancels that came meanwhile.
STARTING: Final = _Phase.STARTING

# What ``on_drop`` holds: the drop callback while the job waits in its line; STARTING
# while it is being started; the messages of the cancel() calls that came then (a list,
# made by the first); None once it has left the line otherwise, or never was in one.
OnDrop = Union[Callable[["QueuedFuture"], object], Literal[_Phase.STARTING], list[Any], None]


class QueuedFuture(asyncio.Future[Any]):
    """What submit_nowait() returns for a job it queued (every slot was taken).

    Until the job starts, cancelling the future drops the job: it ends cancelled at once,
    and ``on_drop`` counts it out of its line then, before ``cancel()`` returns (from a
    done callback, a turn later, ``stats`` still showed the job queued, not cancelled,
    and its key's line as long as before: brk30).
    Once the job has started, the future follows the job's task: the task's outcome is
    copied in when it ends, and ``cancel()`` is the task's own ``cancel()`` (its answer
    too), as if the holder had the task. So a job whose first step has not run yet never
    runs, a job that has ended keeps its outcome (``cancel()`` copies it in and returns
    False), and a running job that catches the cancel and returns a value, or raises an
    error, ends its future with that value or error: the future is cancelled only if its
    job ends cancelled. (Cancelled at once, it hid what the job did: a value the job
    returned, an error nobody else held under suppress_task_errors, while stats counted
    the job succeeded or failed and on_job_done got a cancelled future: brk22.)

    Only the executor settles it: ``set_result()`` and ``set_exception()`` raise
    ``RuntimeError``, as an ``asyncio.Task``'s do. A value set by its holder would end
    the future with an outcome its job never produced (brk20: the queued job then never
    ran, was counted cancelled with its future not cancelled, and an error set so
    stopped nothing; set once the job ran, the future kept it against the job's own).

    While the job is being started (a slot was handed to it, its task is not made yet),
    ``cancel()`` is recorded and returns True, and the task gets it (``Task.cancel()``
    with the same message) as soon as start_queued has it: so the job ends as a task
    cancelled then does. A cancel comes then from the job's own function, or, under an
    eager task factory, from its first step, which runs inside create_task (cancelled
    at once, the future showed a cancelled job while the job ran on, counted succeeded,
    and on_job_done got the cancelled future: selfc). A first step that ran the job to
    its end keeps its outcome: its task had ended before it could be cancelled.
    """

    __slots__ = ("on_drop", "task")

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        on_drop: Callable[[QueuedFuture], object] | None = None,
    ) -> None:
        super().__init__(loop=loop)
        self.task: asyncio.Future[Any] | None = None  # the job's task, once it started
        # Called with the future when cancel() drops the job from its line; then STARTING
        # (see Queued.leave_to_start) or None (Queued.leave): see OnDrop.
        self.on_drop: OnDrop = on_drop

    def follow(self, task: asyncio.Future[Any]) -> None:
        """The job, handed a slot (on_drop is STARTING), has started as ``task``: follow
        it, and pass it the cancels that came while it was being started."""
        self.task = task
        task.add_done_callback(self.copy_from)
        asked = self.on_drop
        if asked is not STARTING:  # (the one test a start without a cancel pays)
            self._pass_on(asked, task)

    def cancel(self, msg: Any | None = None) -> bool:
        task = self.task
        if task is None or self.done():
            on_drop = self.on_drop
            if on_drop is STARTING or isinstance(on_drop, list):
                return not self.done() and self._ask(on_drop, msg)
            if not super().cancel(msg):
                return False
            self.on_drop = None
            if on_drop is not None:  # still queued: dropped from the line, counted now
                on_drop(self)
            return True
        if task.done():
            self.copy_from(task)  # the job has ended: its outcome stands
            return False
        # Now: a first step still to come then never runs the job. The future ends as the
        # task does (copy_from, its done callback), not here: a job may catch the cancel.
        return task.cancel(msg)

    def _ask(self, asked: Literal[_Phase.STARTING] | list[Any], msg: Any) -> bool:
        """cancel() while the job is being started: recorded for its task (follow()), as
        the task would have been asked. Each cancel counts, as each of a Task's does
        (``cancelling()``), and the task keeps the last message."""
        if asked is STARTING:
            self.on_drop = [msg]
        else:
            asked.append(msg)
        return True

    def _pass_on(self, asked: OnDrop, task: asyncio.Future[Any]) -> None:
        """Give ``task`` the cancels that came while its job was being started. Under an
        eager task factory its first step has run: a step that suspended meets the
        CancelledError where it resumes; a task that ended keeps its outcome (cancel()
        returns False), which the future then copies."""
        self.on_drop = None
        assert isinstance(asked, list), f"follow() of a job not handed a slot ({asked!r})"
        for msg in asked:
            task.cancel(msg)

    def set_result(self, result: Any, /) -> NoReturn:
        raise RuntimeError("QueuedFuture does not support set_result operation")

    def set_exception(self, exception: type | BaseException, /) -> NoReturn:
        raise RuntimeError("QueuedFuture does not support set_exception operation")

    def settle_result(self, result: Any) -> None:
        """The executor ends the future with its job's result."""
        _set_result(self, result)

    def settle_exception(self, exc: BaseException) -> None:
        """The executor ends the future with its job's error (or one that kept the job
        from starting), which it owns (policy or suppress): asyncio does not log it."""
        _set_exception(self, exc)
        self.exception()

    def copy_from(self, task: asyncio.Future[Any]) -> None:
        """Take the ended job's outcome (the first time only)."""
        if self.done():
            return
        if task.cancelled():
            super().cancel()
            return
        exc = task.exception()
        if exc is None:
            _set_result(self, task.result())
        else:
            self.settle_exception(exc)
