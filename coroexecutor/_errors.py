"""Exception classes and error-message helpers shared by both halves."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import inspect
import sys
from typing import Any

__all__ = [
    "BrokenLoopExecutor",
    "DeadlineExceeded",
    "async_generator_error",
    "check_job_fn",
    "coroutine_hint",
]


class BrokenLoopExecutor(concurrent.futures.BrokenExecutor):
    """Raised by a ThreadedLoopExecutor whose initializer failed; chained from its error."""


if sys.version_info >= (3, 11):
    DeadlineExceeded = builtins.TimeoutError
else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10

    class DeadlineExceeded(asyncio.TimeoutError, builtins.TimeoutError):
        """A deadline passed. Catchable as both ``TimeoutError`` and ``asyncio.TimeoutError``.

        On Python 3.11+ the two are the same class and this name is just ``TimeoutError``.
        """


_COROUTINE_HINT = """\
{where}() expects an async function and its arguments, not a coroutine object (got {got!r})
  wrong: {where}({wrong})
  right: {where}({right})"""

# The calls the hint shows: a map takes an iterable of arguments, not one argument.
_HINT_CALLS = {
    "map": ("fetch(url), urls", "fetch, urls"),
    "map_unordered": ("fetch(url), urls", "fetch, urls"),
}
_SUBMIT_CALLS = ("fetch(url)", "fetch, url")

_ASYNC_GENERATOR_MESSAGE = (
    "{where}() expects an async function, not an async generator function (got {fn!r})"
)


def coroutine_hint(where: str, got: object) -> str:
    """The two-call hint for a coroutine object (or other awaitable) passed as ``fn``."""
    wrong, right = _HINT_CALLS.get(where, _SUBMIT_CALLS)
    return _COROUTINE_HINT.format(where=where, got=got, wrong=wrong, right=right)


def async_generator_error(where: str, fn: object) -> TypeError:
    """The error for an async generator function passed as a job's ``fn``: it would
    return a generator object, not a result."""
    return TypeError(_ASYNC_GENERATOR_MESSAGE.format(where=where, fn=fn))


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
    raise TypeError(f"{where}() fn must be a callable (got {fn!r})")
