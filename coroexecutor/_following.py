"""QueuedFuture: the future submit_nowait() returns for a job it had to queue."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, NoReturn

__all__ = ["QueuedFuture"]

# The executor's own settling goes past the refusals below.
_set_result = asyncio.Future.set_result
_set_exception = asyncio.Future.set_exception


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
        # Called with the future when cancel() drops the job from its line; None once the
        # job has left the line otherwise (see Queued.leave), or never was in one.
        self.on_drop = on_drop

    def follow(self, task: asyncio.Future[Any]) -> None:
        """The job has started as ``task``: follow it."""
        self.task = task
        task.add_done_callback(self.copy_from)

    def cancel(self, msg: Any | None = None) -> bool:
        task = self.task
        if task is None or self.done():
            if not super().cancel(msg):
                return False
            on_drop, self.on_drop = self.on_drop, None
            if on_drop is not None:  # still queued: dropped from the line, counted now
                on_drop(self)
            return True
        if task.done():
            self.copy_from(task)  # the job has ended: its outcome stands
            return False
        # Now: a first step still to come then never runs the job. The future ends as the
        # task does (copy_from, its done callback), not here: a job may catch the cancel.
        return task.cancel(msg)

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
