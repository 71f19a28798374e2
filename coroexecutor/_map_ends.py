"""What a map's consumer is raised when the map ended other than by running out of input:
closed by the executor (raise_closed, ended, check_map_accepting), closed as its consumer
was cancelled (cut_short), or ended by a job's error (reraise_first, reraise_failed), each
job's error raised as its job left it (a StopAsyncIteration as a RuntimeError: see
_reraise)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from ._chains import Left, put_back, reraise_job_error, stop_as_error
from ._errors import refused
from ._map_state import MapJobs
from ._policy import Cause
from ._startup import check_accepting, check_loop
from ._state import State

if TYPE_CHECKING:
    from ._core import Core
    from ._policy import Outcomes

__all__ = [
    "check_map_accepting", "cut_short", "ended", "raise_closed", "reraise_failed", "reraise_first",
]


def ended(exe: Core, jobs: MapJobs) -> None:
    """A consumer in the map finds it closed. Closed by its own consumer (``aclose()``,
    dropped): the end of the iteration. Closed by the executor: if it stopped because a
    job failed (fail-fast), that job's error, the object the block raises, as its job
    left it; else RuntimeError, since the inputs were not all processed."""
    if jobs.shut:
        raise_closed(exe)


def check_map_accepting(exe: Core) -> None:
    """check_accepting() for the map's next job; but once a job's error stopped the
    executor (fail-fast), the map raises that error, as a map it closed does."""
    if exe._state is State.CANCELLING and exe._outcomes.cause is Cause.JOB_ERROR:
        raise_closed(exe)
    check_accepting(exe)


def raise_closed(exe: Core) -> NoReturn:
    """The map was closed by the executor, so its inputs were not all processed: raise
    RuntimeError, or, if a job's error stopped the executor (fail-fast), that error, the
    object the block raises, as its job left it. For a ``return_exceptions`` map too:
    that job is not one of its own (whose errors are its results and stop nothing), and
    its error, not a RuntimeError, is why the map ended."""
    outcomes = exe._outcomes
    if outcomes.cause is Cause.JOB_ERROR:
        reraise_first(outcomes)
    raise refused(exe)


def cut_short(exe: Core, jobs: MapJobs, cancel: BaseException) -> None:
    """The map's generator ends with ``cancel``, a CancelledError, and that closed the map
    (see results): its consumer was cancelled while it waited in it (an outer timeout
    around ``__anext__()``, its task cancelled). The inputs were not all processed, so
    from now on ``__anext__()`` raises RuntimeError saying so (_raise_cut_short), as a
    map the executor closed raises its own (close_maps swaps ``_anext`` the same way):
    the finished generator's StopAsyncIteration would end a later ``async for`` as if
    every result had come. Not when ``cancel`` is the map's own error or the executor's
    first error (a map job cancelled by someone else, raised as such): the map ended with
    it, as with any error of its own."""
    if cancel is jobs.failed or cancel is exe._outcomes.first_error:
        return
    it = jobs.owner() if jobs.owner is not None else None
    if it is not None:  # (dropped: no later call can come)
        it._anext = partial(_raise_cut_short, exe, jobs)


async def _raise_cut_short(exe: Core, jobs: MapJobs) -> Any:
    """``__anext__()`` of a map cut short as its consumer was cancelled: RuntimeError, or,
    if a job's error has stopped the executor since (fail-fast), that error, as for a map
    the executor closed (raise_closed). A map that its own job's error had ended is named
    as the RuntimeError's cause: that error was not raised yet."""
    check_loop(exe)
    outcomes = exe._outcomes
    if outcomes.cause is Cause.JOB_ERROR:
        reraise_first(outcomes)
    error = RuntimeError(
        f"{jobs.where}() was closed when its consumer was cancelled:"
        " its inputs were not all processed"
    )
    if jobs.failed is not None:
        raise error from jobs.failed
    raise error


def reraise_first(outcomes: Outcomes) -> None:
    """Raise the executor's first error as its job left it, if there is one."""
    error, left = outcomes.first_error, outcomes.first_left
    if error is not None and left is not None:
        _reraise(error, left)


def reraise_failed(jobs: MapJobs) -> None:
    """Raise the error that ended the map as its job left it, if there is one."""
    error, left = jobs.failed, jobs.failed_left
    if error is not None and left is not None:
        _reraise(error, left)


def _reraise(error: BaseException, left: Left) -> NoReturn:
    """reraise_job_error() to a map's consumer, which a StopAsyncIteration cannot reach:
    out of ``__anext__()`` it would end the consumer's ``async for`` as if every result
    had come, and out of the map's generator PEP 479 makes it a RuntimeError without the
    note naming the job. So it is put back as its job left it (``job.result()`` raised
    it in the consumer's ``except`` clause, if it is in one), and a RuntimeError caused
    by it, with its note, is raised in its place (see stop_as_error)."""
    if isinstance(error, StopAsyncIteration):
        put_back(error, left)
        raise stop_as_error(error)
    reraise_job_error(error, left)
