"""How the outcome of a task the loop ran reaches its job's future, when the job could
not set it itself (the Scheduler's wrappers set it in the job's last step otherwise)."""

from __future__ import annotations

import asyncio
from typing import Any

from .._notes import add_note
from ._future import BridgeFuture

__all__ = ["CoroutineJobError", "resolve"]


class CoroutineJobError(Exception):
    """Carries a coroutine job's KeyboardInterrupt/SystemExit out of its task.

    An asyncio task re-raises those out of the event loop, which would kill the loop
    thread and strand every other future; the job's own future gets the original.
    """


def resolve(future: BridgeFuture[Any], task: asyncio.Future[Any]) -> None:
    """Copy a finished task's outcome into a future the job did not resolve itself."""
    if task.cancelled():
        future._set_cancelled()  # cancelled before it could start, or by the core
        return
    exc = task.exception()
    if exc is None:
        future._try_set_result(task.result())
    elif type(exc) is CoroutineJobError:
        future._try_set_exception(exc.__cause__ or exc)  # raised "from" the job's error
    else:  # job_timeout's JobTimeoutError: its note was kept as the attempt was cancelled
        note = future._timeout_note
        if note is not None:
            add_note(exc, note)
        future._try_set_exception(exc)
