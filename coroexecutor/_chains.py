"""A job's error as its job left it (its traceback and chain), and raising it again so:
the error object is shared by the block, shutdown() and every map consumer, and each raise
of it while another exception is handled would change its chain for all of them. And the
error a map's iterator raises in place of a job's StopIteration or StopAsyncIteration,
which it cannot raise as is."""

from __future__ import annotations

from types import TracebackType
from typing import NoReturn, Optional, Tuple

from ._notes import add_note

__all__ = ["Left", "left_by", "put_back", "reraise_job_error", "stop_as_error"]

_set_attribute = object.__setattr__

# What a job left its error with: its traceback, __context__, __cause__ and
# __suppress_context__ (see left_by).
Left = Tuple[Optional[TracebackType], Optional[BaseException], Optional[BaseException], bool]


def left_by(error: BaseException) -> Left:
    """A job's error as it ends (its traceback and chain), for reraise_job_error to put
    back. Taken as the job ends, where the policy records its error or its map does (so
    per failed job, never per success): any later raise of the shared object while
    another exception is handled sets its ``__context__`` for everyone after, and
    nothing can stop some of those raises (``Future.result()`` in a task that awaits the
    job's task inside an ``except`` clause, or in the map, inside its consumer's)."""
    return error.__traceback__, error.__context__, error.__cause__, error.__suppress_context__


def reraise_job_error(error: BaseException, left: Left) -> NoReturn:
    """Raise a job's exception again, as its job left it (``left``, see left_by).

    A ``raise`` while another exception is being handled (the body's interrupting
    CancelledError in ``__aexit__``, the cancelled map job in the map, a consumer's own
    ``except`` clause) sets the raised object's ``__context__`` to that exception, and
    ``raise ... from None`` would set its ``__cause__``: both would change the job's own
    object, which the block, shutdown() and every map consumer share. So put
    ``__context__``, ``__cause__`` and ``__suppress_context__`` back as it leaves: as the
    job left them, not as found now, which an earlier raise may have changed. And start
    from the traceback the job ended with, as ``Future.result()`` does, so repeated
    raises do not pile up frames. (``asyncio.TaskGroup`` avoids the same clobbering by
    raising a new group.)
    """
    tb = left[0]
    try:
        raise error.with_traceback(tb)
    finally:
        put_back(error, left, traceback=False)
        del error, left, tb  # no cycle through this frame


def put_back(error: BaseException, left: Left, *, traceback: bool = True) -> None:
    """Give ``error`` its chain (and ``traceback``: its traceback) as ``left`` says, see
    left_by. Through BaseException's own descriptors: the error's class may refuse
    assignments (a frozen dataclass), which ``raise`` itself never asks it about."""
    tb, context, cause, suppress = left
    if traceback:
        _set_attribute(error, "__traceback__", tb)
    _set_attribute(error, "__context__", context)
    _set_attribute(error, "__cause__", cause)
    _set_attribute(error, "__suppress_context__", suppress)


def stop_as_error(stop: BaseException) -> RuntimeError:
    """What a map's iterator raises for a job whose error is ``stop``, a StopIteration (a
    sync iterator's ``__next__()``) or StopAsyncIteration (an async one's
    ``__anext__()``), where it would raise the job's error: raised as is, it would end
    its consumer's ``for`` as if every result had come, and the error would be lost; in
    a generator, PEP 479 turns it into a RuntimeError of its own that names no job. So
    a RuntimeError caused by it, with its notes (the one naming its job). ``stop`` itself
    is left as its job left it: the block, the job's task or future, and ``shutdown()``
    raise it as is. Made only on a job's error's way out: nothing on the success path."""
    error = RuntimeError(
        f"job raised {type(stop).__name__}, which an iterator of results cannot raise"
        " without ending its consumer's loop"
    )
    error.__cause__ = stop
    try:
        notes = getattr(stop, "__notes__", ())
    except BaseException:
        # A __notes__ property of the user's that raises (even KeyboardInterrupt, as
        # add_note bears): the RuntimeError goes on without notes.
        notes = ()
    if not isinstance(notes, (list, tuple)):
        notes = ()  # not notes (a str would give its characters), as PEP 678 leaves them
    for note in notes:
        if isinstance(note, str):
            add_note(error, note)
    return error
