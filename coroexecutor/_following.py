"""QueuedFuture: the future submit_nowait() returns for a job it had to queue."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["QueuedFuture"]


class QueuedFuture(asyncio.Future[Any]):
    """What submit_nowait() returns for a job it queued (every slot was taken).

    Until the job starts, cancelling the future drops the job. Once the job has started,
    the future follows the job's task: the task's outcome is copied in when it ends, and
    ``cancel()`` reaches the task at once, as the task's own would. So a job whose first
    step has not run yet never runs, and a job that has ended keeps its outcome
    (``cancel()`` copies it in and returns False). A cancel passed on by a done callback
    came one step late: True for a job that then ran, or hiding a finished job's error.
    """

    __slots__ = ("task",)

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.task: asyncio.Future[Any] | None = None  # the job's task, once it started

    def follow(self, task: asyncio.Future[Any]) -> None:
        """The job has started as ``task``: follow it."""
        self.task = task
        task.add_done_callback(self.copy_from)

    def cancel(self, msg: Any | None = None) -> bool:
        task = self.task
        if task is not None and not self.done():
            if task.done():
                self.copy_from(task)  # the job has ended: its outcome stands
                return self.cancelled()
            task.cancel(msg)  # now: a first step still to come then never runs the job
        return super().cancel(msg)

    def copy_from(self, task: asyncio.Future[Any]) -> None:
        """Take the ended job's outcome (the first time only)."""
        if self.done():
            return
        if task.cancelled():
            super().cancel()
            return
        exc = task.exception()
        if exc is None:
            self.set_result(task.result())
        else:
            self.set_exception(exc)
            self.exception()  # the executor owns the error (policy or suppress): no log
