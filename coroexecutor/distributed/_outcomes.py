"""What comes back from the workers: the outcomes of one chunk, each item loaded alone.

The outcomes are pickled one after the other into one blob (about 1 µs an item), results
and exceptions alike, each in its item's place, so each loads on its own: one that
cannot be pickled on the worker, or loaded on the client, comes back as an
:class:`UnsentOutcomeError` for that item, and the rest of the chunk is delivered.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any, Callable

import cloudpickle

from ._wire import Passing

__all__ = ["Outcomes", "UnsentOutcomeError"]

if sys.version_info >= (3, 11):

    def _members(error: BaseException) -> tuple[BaseException, ...]:
        """The errors an exception group carries (none for another exception)."""
        group = BaseExceptionGroup  # noqa: F821  (a builtin from 3.11, where this runs)
        return error.exceptions if isinstance(error, group) else ()

else:  # (no exception groups before Python 3.11)

    def _members(error: BaseException) -> tuple[BaseException, ...]:
        return ()


class UnsentOutcomeError(RuntimeError):
    """A job's result or exception could not be sent back from its worker (not picklable).

    Raised (or, with ``return_exceptions=True``, yielded) in place of that one item; the
    message names the type that failed and why. The other items of its chunk are not
    affected.
    """


class Outcomes:
    """The per-item outcomes of one chunk: values, errors by position, cancelled positions.

    Each outcome, value or error, is a pickle of its own (one pickler, its memo cleared
    between items), so one that pickles on the worker but cannot be loaded on the client
    (its class missing there, a ``__reduce__`` that raises) fails its own item only.
    """

    __slots__ = ("header", "values")

    def __init__(self, header: bytes, values: bytes) -> None:
        # (the positions of the errors, cancelled ones, where each outcome's pickle ends)
        self.header = header
        self.values = values

    @classmethod
    def of(
        cls, values: list[Any], errors: dict[int, BaseException], cancelled: list[int],
        name: Callable[[int, BaseException], None],
    ) -> Outcomes:
        """Worker side. An item that cannot be pickled becomes an UnsentOutcomeError, on
        which ``name(position, error)`` notes the input, as on every other error."""
        for i, error in list(errors.items()):
            sendable = errors[i] = _sendable_error(error)
            if sendable is not error:
                name(i, sendable)
        items = values
        if errors:  # each error in its item's place (a copy: the success path pays nothing)
            items = list(values)
            for i, error in errors.items():
                items[i] = error
        buffer = io.BytesIO()
        pickler = cloudpickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        ends: list[int] = []
        for i, item in enumerate(items):
            try:
                pickler.dump(item)
            except BaseException as failure:  # that one cannot go: the rest still can
                # (Any exception: a __reduce__ may raise SystemExit or KeyboardInterrupt,
                # which no signal delivers on this thread, the worker loop's.)
                buffer.truncate(ends[-1] if ends else 0)
                buffer.seek(0, io.SEEK_END)
                errors[i] = _unsent("exception" if i in errors else "result", item, failure)
                name(i, errors[i])
                pickler = cloudpickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
                pickler.dump(errors[i])
            pickler.clear_memo()  # each item loads on its own
            ends.append(buffer.tell())
        header = pickle.dumps((sorted(errors), cancelled, ends), pickle.HIGHEST_PROTOCOL)
        return cls(header, buffer.getvalue())

    def load(
        self, *, passing: Passing
    ) -> tuple[list[Any], dict[int, BaseException], list[int]]:
        """Client side. An outcome that cannot be loaded becomes an UnsentOutcomeError (but
        for what ``passing`` lets through, by the thread: see _wire.Passing); an error
        comes without the traceback rebuilt from the worker's (``_detached``)."""
        raised: list[int]
        raised, cancelled, ends = pickle.loads(self.header)
        view = memoryview(self.values)
        values: list[Any] = []
        errors: dict[int, BaseException] = {}
        start = 0
        for i, end in enumerate(ends):
            try:
                values.append(pickle.loads(view[start:end]))
            except passing:
                raise  # a Ctrl-C may land here: not the item's
            except BaseException as failure:  # a __reduce__'s SystemExit too: the item's
                values.append(None)
                errors[i] = UnsentOutcomeError(
                    f"the job's {'exception' if i in raised else 'result'} could not be"
                    " loaded on the client; unpickling it failed with"
                    f" {type(failure).__name__}: {failure}"
                )
            start = end
        for i in raised:
            if i not in errors:
                errors[i] = _detached(values[i])
                values[i] = None
        return values, errors, cancelled

    def __reduce__(self) -> tuple[Any, ...]:
        return (Outcomes, (self.header, self.values))


def _detached(error: BaseException) -> BaseException:
    """A loaded error without the tracebacks tblib rebuilt from the worker's (its own, its
    causes', contexts' and group members'), which would keep the client's memory.

    tblib (installed by ``import distributed``) makes those frames by running code inside
    the ``pickle.loads`` call, so their ``f_back`` chain goes on through every frame of the
    client's stack that loaded them (``load``, the map's ``next()``, the caller's own), and
    a finished frame keeps its locals: a kept error kept the rest of its chunk's results,
    and a submitted job's error its chunk's dask task. ``f_back`` cannot be set, and no
    way of calling tblib on the client makes frames that lead nowhere on every Python
    version (loading inside a generator does on 3.10 and 3.11, not on 3.12: tried), so
    the traceback is dropped, as the docs say.
    """
    seen: set[int] = set()
    todo = [error]
    while todo:
        link = todo.pop()
        if id(link) in seen:  # (a __context__ cycle)
            continue
        seen.add(id(link))
        BaseException.with_traceback(link, None)  # (not an override of with_traceback)
        todo.extend(e for e in (link.__cause__, link.__context__) if e is not None)
        todo.extend(_members(link))
    return error


def _sendable_error(error: BaseException) -> BaseException:
    """The error itself if it survives a pickle round trip, else an UnsentOutcomeError.

    A round trip, not only a dump: an exception whose ``__init__`` takes other arguments
    than it passes to ``BaseException.__init__`` pickles fine and fails to load.
    """
    try:
        pickle.loads(cloudpickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as failure:  # (worker side: see Outcomes.of)
        return _unsent("exception", error, failure)
    return error


def _unsent(what: str, obj: object, failure: BaseException) -> UnsentOutcomeError:
    shown = f"{type(obj).__qualname__}: {obj}" if what == "exception" else type(obj).__qualname__
    return UnsentOutcomeError(
        f"the job's {what} could not be sent back from the worker ({shown});"
        f" pickling it failed with {type(failure).__name__}: {failure}"
    )
