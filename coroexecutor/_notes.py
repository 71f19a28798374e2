"""Notes that name the job an error came from (PEP 678), and the short job description.

The executors call these only once a job has failed: nothing here runs on the success
path. Everything is best effort and never raises for the user's objects: a ``__repr__``
or a ``__qualname__`` that raises, or an exception whose ``__notes__`` is not a list,
gives a plainer description or no note, never a different error.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import reprlib
import sys
import types
from typing import Any

__all__ = [
    "CALL_KEEPERS",
    "add_note",
    "annotate_coroutine_error",
    "annotate_job_error",
    "describe_call",
    "describe_coroutine",
    "job_note",
    "safe_repr",
]

NOTE_PREFIX = "coroexecutor: job "

class _OneLineRepr(reprlib.Repr):
    """reprlib's Repr, whose repr of an object it does not know (a numpy array, a
    DataFrame: their reprs span lines) is made one line before it is cut."""

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return super().repr_instance(x, level)  # its "<... instance at 0x...>"
        if "\n" in text or "\r" in text:
            text = " ".join(text.split())
        if len(text) > self.maxother:  # cut in the middle, as reprlib does
            head = max(0, (self.maxother - 3) // 2)
            tail = max(0, self.maxother - 3 - head)
            text = text[:head] + "..." + text[len(text) - tail :]
        return text


# One line per job: long strings and big containers are cut, as reprlib does by default
# for the debugger, with room for a URL or a path.
_short = _OneLineRepr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlevel = 3
_MAX_ARGS = 6  # positional and keyword arguments shown each; the rest is "..."


def _name(fn: object) -> str:
    """``fetch`` or ``Client.fetch`` for a function or method, the class's name for a
    callable object: the last part of ``__qualname__``, after any ``<locals>.``."""
    try:
        name = getattr(fn, "__qualname__", None)
    except Exception:  # a __qualname__ property or __getattr__ of the user's that raises
        name = None
    if not isinstance(name, str):  # an instance: its class names it
        name = type(fn).__qualname__
    return name.rpartition("<locals>.")[2]


def _repr(value: object) -> str:
    try:
        return _short.repr(value)
    except BaseException:
        # reprlib already catches an Exception from a plain object's __repr__; this is for
        # one inside a container, a __class__ that raises, or a __repr__ that raises
        # SystemExit or the like (which would end a worker thread instead of its job).
        return "<unrepresentable>"


def safe_repr(value: object) -> str:
    """A short repr of a user's object that never raises, as the notes show it."""
    return _repr(value)


def describe_fn(fn: object) -> str:
    """``fetch``: a job's function as messages name it, by its name alone: no
    ``__repr__`` runs, and a ``functools.partial`` shows none of the arguments it binds
    (``functools.partial(fetch, ...)``)."""
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = _name(inner)
    return name if inner is fn else f"functools.partial({name}, ...)"


def describe_call(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, arguments: bool = True
) -> str:
    """``fetch('https://…', timeout=5)``: a job as messages name it, kept short by reprlib.

    A ``functools.partial`` is shown as the call it makes, its own arguments first.
    Without ``arguments`` (annotate_errors=False), ``fetch(...)``: no ``__repr__`` runs.
    """
    while isinstance(fn, functools.partial):
        args = (*fn.args, *args)
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    if not arguments:
        return f"{_name(fn)}(...)"
    parts = [_repr(arg) for arg in args[:_MAX_ARGS]]
    items = list(kwargs.items())
    parts += [f"{key}={_repr(value)}" for key, value in items[:_MAX_ARGS]]
    if len(args) > _MAX_ARGS or len(items) > _MAX_ARGS:
        parts.append("...")
    return f"{_name(fn)}({', '.join(parts)})"


# The code of the executor's own coroutines that run a job's call for it (a function that
# returned an awaitable that is no coroutine): once it failed, their frames hold the
# call's description as ``job_call``, and the note names that call, not the wrapper.
CALL_KEEPERS: set[types.CodeType] = set()

_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS


def describe_coroutine(coro: Any, exc: BaseException) -> str:
    """``fetch('https://…', timeout=5)``: the job whose coroutine ``coro`` raised ``exc``.

    For a job whose call was not kept (keeping every job's arguments until it ends costs
    the success path): the arguments are read from the coroutine's own frame, which the
    traceback of an exception that left the coroutine always holds. Parameters that may
    be passed by position are shown by position, keyword-only ones by name, ``self`` of a
    method not at all; the values are those the frame held when the job failed. Without
    that frame (a coroutine of another kind), the name and ``(...)``.

    An error raised around the job from the one it ended with, as the JobTimeoutError of
    a job_timeout is from the CancelledError that stopped the job, did not leave the
    coroutine: its frame is then read from that cause's traceback."""
    code = getattr(coro, "cr_code", None)
    name = _name(coro)
    frame = _frame_of(code, exc.__traceback__)
    if frame is None and exc.__cause__ is not None:
        frame = _frame_of(code, exc.__cause__.__traceback__)
    if frame is None or code is None:
        return f"{name}(...)"
    if code in CALL_KEEPERS:
        job_call = frame.f_locals.get("job_call")
        return job_call if isinstance(job_call, str) else f"{name}(...)"
    try:
        values = frame.f_locals
        names = code.co_varnames
        count = code.co_argcount
        kwonly = code.co_kwonlyargcount
        first = 1 if count and names[0] in ("self", "cls") and "." in name else 0
        parts = [_repr(values.get(arg)) for arg in names[first:count]]
        extra = count + kwonly
        if code.co_flags & _CO_VARARGS:
            parts += [_repr(value) for value in values.get(names[extra], ())]
            extra += 1
        keywords = [(arg, values.get(arg)) for arg in names[count : count + kwonly]]
        if code.co_flags & _CO_VARKEYWORDS:
            keywords += list(values.get(names[extra], {}).items())
    except Exception:  # a frame or a **kwargs of an unexpected shape: name the job only
        return f"{name}(...)"
    shown = parts[:_MAX_ARGS] + [f"{key}={_repr(value)}" for key, value in keywords[:_MAX_ARGS]]
    if len(parts) > _MAX_ARGS or len(keywords) > _MAX_ARGS:
        shown.append("...")
    return f"{name}({', '.join(shown)})"


def _frame_of(code: object, tb: types.TracebackType | None) -> types.FrameType | None:
    """The outermost frame running ``code`` in the traceback ``tb``, if any."""
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return tb.tb_frame
        tb = tb.tb_next
    return None


def job_note(
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    attempts: int = 1,
    map_index: int | None = None,
) -> str:
    """The note for a failed job: ``coroexecutor: job fetch('…') failed after 3 attempts
    (map input #17)``. ``map_index`` counts the map's inputs from 0, as ``enumerate``
    does; ``attempts`` counts every run of the job, so 1 is a job that was not retried."""
    return _note_text(describe_call(fn, args, kwargs), attempts, map_index)


def _note_text(job: str, attempts: int, map_index: int | None) -> str:
    text = f"{NOTE_PREFIX}{job} failed"
    if attempts > 1:
        text += f" after {attempts} attempts"
    if map_index is not None:
        text += f" (map input #{map_index})"
    return text


_MISSING: Any = object()


def add_note(exc: BaseException, note: str) -> None:
    """Add ``note`` to ``exc`` once, as PEP 678's ``add_note`` does (on 3.9 and 3.10 too,
    where the notes are the same list in ``__notes__``, but the default traceback does
    not print them). A note already there is not repeated, so an error re-raised by
    several calls gets one note per job."""
    try:
        notes = getattr(exc, "__notes__", _MISSING)
        if isinstance(notes, list) and note in notes:
            return
        if sys.version_info >= (3, 11):
            exc.add_note(note)
        elif notes is _MISSING:  # (a __notes__ of None is not a list: add_note refuses it)
            setattr(exc, "__notes__", [note])  # noqa: B010 - mypy's 3.10 view has no __notes__
        elif isinstance(notes, list):
            notes.append(note)
    except BaseException:
        # A __notes__ that is not a list (add_note's TypeError), or a __notes__ property
        # or __setattr__ of the user's that refuses: the error goes on without a note.
        # Even with a KeyboardInterrupt or SystemExit: raised here, it would skip the
        # job's settling (its slot, its counts), and the block's exit would wait for ever.
        pass


def annotate_job_error(
    exc: BaseException,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    attempts: int = 1,
    map_index: int | None = None,
) -> None:
    """Note on ``exc`` which job raised it, once. A cancellation is not a failure of the
    job and gets no note."""
    if isinstance(exc, asyncio.CancelledError):
        return
    add_note(exc, job_note(fn, args, kwargs, attempts=attempts, map_index=map_index))


def annotate_coroutine_error(
    exc: BaseException, coro: Any, *, map_index: int | None = None
) -> None:
    """Note on ``exc`` which job raised it, named from its coroutine (see
    describe_coroutine), once. A cancellation gets no note."""
    if isinstance(exc, asyncio.CancelledError):
        return
    add_note(exc, _note_text(describe_coroutine(coro, exc), 1, map_index))
