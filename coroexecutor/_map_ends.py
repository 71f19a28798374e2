"""What a map's consumer is raised when the map ended other than by running out of input:
closed by the executor (raise_closed, ended, check_map_accepting), or ended by a job's
error (reraise_first, reraise_failed), each error raised as its job left it."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from ._chains import reraise_job_error
from ._errors import refused
from ._map_state import MapJobs
from ._policy import Cause
from ._startup import check_accepting
from ._state import State

if TYPE_CHECKING:
    from ._core import Core
    from ._policy import Outcomes

__all__ = ["check_map_accepting", "ended", "raise_closed", "reraise_failed", "reraise_first"]


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


def reraise_first(outcomes: Outcomes) -> None:
    """Raise the executor's first error as its job left it, if there is one."""
    error, left = outcomes.first_error, outcomes.first_left
    if error is not None and left is not None:
        reraise_job_error(error, left)


def reraise_failed(jobs: MapJobs) -> None:
    """Raise the error that ended the map as its job left it, if there is one."""
    error, left = jobs.failed, jobs.failed_left
    if error is not None and left is not None:
        reraise_job_error(error, left)
