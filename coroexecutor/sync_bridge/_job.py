"""Job: one ``submit()`` call on its way between threads, and which kind of job a callable is."""

from __future__ import annotations

import contextvars
import inspect
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE
from types import FunctionType
from typing import Any, Callable, NamedTuple

from .._errors import async_generator_error, check_job_fn
from ._future import BridgeFuture

__all__ = ["Job", "is_coroutine_job"]


class Job(NamedTuple):
    """One ``submit()`` call as it crosses threads, from the submitter to where it runs."""

    future: BridgeFuture[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    ctx: contextvars.Context  # a copy of the submitter's context: the job runs in it
    coroutine_fn: bool  # fn is a coroutine function: it runs as a task on the loop


def is_coroutine_job(fn: object, where: str = "submit") -> bool:
    """True when fn runs on the loop; False for a blocking callable (a worker thread).

    Raises TypeError for what is no job: a non-callable, a coroutine object (with the
    two-call hint) or an async generator function (a worker would return the generator
    object as the result)."""
    if type(fn) is FunctionType:  # the common case, kept cheap: the hand-off is benchmarked
        flags = fn.__code__.co_flags
        if flags & CO_COROUTINE:
            return True
        if flags & CO_ASYNC_GENERATOR:
            raise async_generator_error(where, fn)
        return inspect.iscoroutinefunction(fn)  # inspect.markcoroutinefunction (3.12+)
    if not callable(fn):
        check_job_fn(fn, where)  # raises: a coroutine object gets the two-call hint
    if inspect.iscoroutinefunction(fn):  # also bound methods and functools.partial
        return True
    call = type(fn).__call__
    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call):
        raise async_generator_error(where, fn)
    # An instance whose class has ``async def __call__``:
    return inspect.iscoroutinefunction(call)
