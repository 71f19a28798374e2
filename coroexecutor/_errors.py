"""Exception classes and error-message helpers shared by both halves."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import inspect
import sys
import weakref
from typing import Any, Callable, TypeVar

from ._notes import describe_call, describe_fn, safe_repr

__all__ = [
    "SHUTDOWN_MESSAGE",
    "BrokenCoroutineExecutor",
    "BrokenLoopExecutor",
    "ExecutorTimeoutError",
    "JobTimeoutError",
    "async_generator_error",
    "check_job_fn",
    "coroutine_hint",
    "describe_job",
    "job_wrapper",
    "not_a_task",
    "refused",
    "refused_by",
]

F = TypeVar("F", bound=Callable[..., Any])

# The stdlib's message (concurrent.futures.thread), verbatim.
SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_REFUSED_BY = "_coroexecutor_refused_by"  # on our refusals: which executor refused


def refused(exe: object, detail: str = "") -> RuntimeError:
    """The RuntimeError an executor turns a job away with once it is shut down (the
    stdlib's message), marked as that executor's own (see refused_by)."""
    error = RuntimeError(f"{SHUTDOWN_MESSAGE} ({detail})" if detail else SHUTDOWN_MESSAGE)
    setattr(error, _REFUSED_BY, weakref.ref(exe))
    return error


def refused_by(error: BaseException, exe: object) -> bool:
    """Whether ``error`` is ``exe``'s own refusal of a job (made by refused)."""
    ref = getattr(error, _REFUSED_BY, None)
    return ref is not None and ref() is exe


class BrokenCoroutineExecutor(concurrent.futures.BrokenExecutor):
    """Raised by a CoroutineExecutor whose initializer failed; chained from its error."""


class BrokenLoopExecutor(concurrent.futures.BrokenExecutor):
    """Raised by a ThreadedLoopExecutor whose initializer failed, or whose event loop could
    not start its first task; chained from that error."""


if sys.version_info >= (3, 11):

    class JobTimeoutError(builtins.TimeoutError):
        """A job ran longer than the executor's ``job_timeout``: a ``TimeoutError``."""

    class ExecutorTimeoutError(builtins.TimeoutError):
        """The executor's ``timeout`` passed before its jobs finished: a ``TimeoutError``."""

else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10
    # Before 3.11, asyncio.TimeoutError is not the builtin TimeoutError: these are both,
    # so ``except TimeoutError`` and ``except asyncio.TimeoutError`` each catch them.

    class JobTimeoutError(asyncio.TimeoutError, builtins.TimeoutError):
        """A job ran longer than the executor's ``job_timeout``: a ``TimeoutError``."""

    class ExecutorTimeoutError(asyncio.TimeoutError, builtins.TimeoutError):
        """The executor's ``timeout`` passed before its jobs finished: a ``TimeoutError``."""


_COROUTINE_HINT = """\
{where}() expects an async function and its arguments, not a coroutine object (got {got})
  wrong: {where}({wrong})
  right: {where}({right})"""

# The calls the hint shows: a map takes an iterable of arguments, not one argument.
_HINT_CALLS = {
    "map": ("fetch(url), urls", "fetch, urls"),
    "map_unordered": ("fetch(url), urls", "fetch, urls"),
}
_SUBMIT_CALLS = ("fetch(url)", "fetch, url")

_ASYNC_GENERATOR_MESSAGE = (
    "{where}() expects an async function, not an async generator function (got {fn})"
)


def coroutine_hint(where: str, got: object) -> str:
    """The two-call hint for a coroutine object (or other awaitable) passed as ``fn``."""
    wrong, right = _HINT_CALLS.get(where, _SUBMIT_CALLS)
    return _COROUTINE_HINT.format(where=where, got=safe_repr(got), wrong=wrong, right=right)


def not_a_task(made: object) -> TypeError:
    """What a loop's task factory made in place of a task (None, a plain Future): nothing
    would run the coroutine it was given, so whoever waits for that task would wait for
    ever. (Python 3.13's create_task itself fails on most of these, with an
    AttributeError for ``set_name``; 3.11 and 3.12 return them.)"""
    got = safe_repr(made)
    return TypeError(f"the event loop's task factory must return an asyncio.Task (got {got})")


def async_generator_error(where: str, fn: object) -> TypeError:
    """The error for an async generator function passed as a job's ``fn``: it would
    return a generator object, not a result."""
    return TypeError(_ASYNC_GENERATOR_MESSAGE.format(where=where, fn=describe_fn(fn)))


def check_job_fn(fn: Any, where: str) -> None:
    """Raise a clear TypeError for what can never be a job's ``fn``, known before calling
    it: a coroutine object, a non-callable, or an async generator function."""
    if callable(fn):
        if inspect.isasyncgenfunction(fn):
            raise async_generator_error(where, fn)
        return
    if inspect.iscoroutine(fn):
        fn.close()  # so no "coroutine ... was never awaited" warning follows the error
        raise TypeError(coroutine_hint(where, fn))
    if inspect.isawaitable(fn):
        raise TypeError(coroutine_hint(where, fn))
    raise TypeError(f"{where}() fn must be a callable (got {safe_repr(fn)})")


# Functions that run a job given as (x, fn, args, kwargs): the bridge's wrappers (x: the
# job's future) and the dask door's (x: how to run it).
_WRAPPERS: set[Callable[..., Any]] = set()


def job_wrapper(fn: F) -> F:
    """Mark ``fn(x, job_fn, args, kwargs)`` as running ``job_fn``: describe_job names
    the job it runs, not the wrapper."""
    _WRAPPERS.add(fn)
    return fn


def describe_job(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, arguments: bool = True
) -> str:
    """``fetch('https://…')``: a job as error messages name it, kept short by reprlib;
    ``fetch(...)`` without ``arguments``. For a job run by a wrapper (the bridge's, dask's),
    the wrapper's executor decides, not the core under it, which notes nothing itself: a
    bridge job's future (the wrapper's first argument) carries its annotate_errors."""
    if getattr(fn, "__func__", fn) in _WRAPPERS and len(args) == 4:
        owner, fn, args, kwargs = args
        arguments = getattr(owner, "_annotate", True) is not False
    return describe_call(fn, args, kwargs, arguments=arguments)
