"""Exception classes and error-message helpers shared by both halves."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import inspect
import sys
from typing import Any

__all__ = ["BrokenLoopExecutor", "DeadlineExceeded", "check_job_fn"]


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
  wrong: {where}(fetch(url))
  right: {where}(fetch, url)"""


def check_job_fn(fn: Any, where: str) -> None:
    """Raise a clear TypeError for a coroutine object or a non-callable passed as ``fn``."""
    if callable(fn):
        return
    if inspect.iscoroutine(fn):
        fn.close()  # so no "coroutine ... was never awaited" warning follows the error
        raise TypeError(_COROUTINE_HINT.format(where=where, got=fn))
    if inspect.isawaitable(fn):
        raise TypeError(_COROUTINE_HINT.format(where=where, got=fn))
    raise TypeError(f"{where}() fn must be a callable (got {fn!r})")
